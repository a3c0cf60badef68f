"""The browser benchmark's targets, summaries, verdicts, table and report check (harness/bench_browser.py)."""
from __future__ import annotations

import math
import statistics

from drnet_app.navigation import VIEWS

# The default view is served at the root whatever its url_path says.
PAGES = tuple(("/" if index == 0 else f"/{view.url_path}", view.title) for index, view in enumerate(VIEWS))

# Which measures each target covers, and the limit for their "numbers updated" medians (warm visits:
# their finish time, the page's numbers being up once its script has finished).
TARGETS = (
    {"name": "slider step on /tradeoff, numbers updated", "limit_s": 1.0, "strict": False,
     "measures": ("tradeoff_b_threshold", "tradeoff_b_tau", "tradeoff_a_threshold", "tradeoff_a_tau")},
    {"name": "slider step on Inspect, numbers updated", "limit_s": 0.5, "strict": False,
     "measures": ("inspect_threshold", "inspect_tau")},
    {"name": "tau step on /tradeoff, page finished with every chart", "limit_s": 3.0, "strict": False,
     "measures": ("tradeoff_a_tau",), "figure": "finished_s"},
    {"name": "warm page visit", "limit_s": 2.0, "strict": True,
     "measures": tuple(f"warm_visit {path}" for path, _ in PAGES)},
)


def spread(samples: list[float]) -> dict | None:
    if not samples:
        return None
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def summarise_steps(record: dict) -> dict:
    samples = record["samples"]
    # "Numbers updated" of an unchanged step is its finish time: nothing newer ever showed.
    effective = [s["finished_s"] if s["unchanged"] else s["numbers_s"] for s in samples]
    return {**record, "numbers_updated_s": spread(effective), "finished_s": spread([s["finished_s"] for s in samples]),
            "unchanged": sum(s["unchanged"] for s in samples),
            "no_chart_disappeared": all(s["fewest_charts"] >= s["charts_before"] for s in samples),
            "every_chart_at_finish": all(s["charts_after"] >= s["charts_before"] for s in samples)}


def verdicts(measures: dict) -> list[dict]:
    results = []
    for target in TARGETS:
        figures = {}
        for name in target["measures"]:
            record = measures.get(name)
            summary = record and (record.get(target["figure"]) if "figure" in target else
                                  record.get("numbers_updated_s") or record.get("finished_s"))
            if summary:
                figures[name] = summary["median"]
        if not figures:
            continue
        worst = max(figures.values())
        met = worst < target["limit_s"] if target["strict"] else worst <= target["limit_s"]
        results.append({"target": target["name"], "limit_s": target["limit_s"],
                        "comparison": "<" if target["strict"] else "<=", "medians_s": figures,
                        "worst_median_s": worst, "verdict": "met" if met else "missed"})
    return results


def seconds(summary: dict | None) -> str:
    if not summary:
        return "      -"
    return f"{summary['median']:7.3f} ({summary['min']:.3f}-{summary['max']:.3f})"


def print_table(report: dict) -> None:
    machine, app = report["machine"], report["app"]
    print(f"{machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads, Streamlit "
          f"{machine['streamlit_version']}; evaluating on {app.get('evaluating_on')}; {report['repeats']} repeats")
    print("\ncold first load (once)")
    for path, value in report.get("cold_first_load_s", {}).items():
        print(f"  {path:<28} {value:7.3f} s")
    print("\nmedian seconds (min-max)        numbers updated            finished")
    for name, record in report["measures"].items():
        if name == "held_key":
            continue
        numbers = record.get("numbers_updated_s") or record.get("title_s")
        extra = f"  [{record['unchanged']} unchanged]" if record.get("unchanged") else ""
        extra += f"  [{len(record['failures'])} timed out]" if record["failures"] else ""
        if "no_chart_disappeared" in record:
            extra += "" if record["no_chart_disappeared"] else "  [a chart disappeared]"
            extra += "" if record["every_chart_at_finish"] else "  [a chart missing at finish]"
        print(f"  {name:<28} {seconds(numbers)}  {seconds(record['finished_s'])}{extra}")
    held = report["measures"].get("held_key")
    if held:
        print(f"\nheld key, {held['presses']} presses {held['gap_s'] * 1000:.0f} ms apart on {held['slider']!r}:")
        print(f"  finished after the last key   {seconds(held['finished_after_last_key_s'])}")
        print(f"  final numbers after last key  {seconds(held['final_numbers_after_last_key_s'])}")
        print(f"  stale numbers at the end: {held['stale_at_end']} of {len(held['samples'])}")
    print("\n(warm visits: 'numbers updated' column is the title showing)")
    for verdict in report["targets"]:
        print(f"target {verdict['target']} {verdict['comparison']} {verdict['limit_s']:g} s: {verdict['verdict']} "
              f"(worst median {verdict['worst_median_s']:.3f} s)")


def check_report(report: dict) -> list[str]:
    """Problems with a report's figures: a time that is missing, not finite or not positive; empty when sound."""
    problems = []

    def walk(value, where: str, times: bool = False) -> None:
        # Every number under a key ending in "_s" is a time (cold_first_load_s: one per page).
        key = where.rsplit(".", 1)[-1]
        times = times or key.endswith("_s")
        if isinstance(value, dict):
            for name, item in value.items():
                walk(item, f"{where}.{name}", times and name != "n")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]", times)
        elif value is not None and times:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                problems.append(f"{where} = {value!r}")

    walk({"cold_first_load_s": report.get("cold_first_load_s"), "measures": report.get("measures")}, "report")
    return problems

"""harness/bench_browser.py: its report has every measure, sound figures and a verdict per target.

The browser run starts the app on 300 images and takes each measure once (about 90 s on two cores);
skipped when chromium or chromedriver is missing. Nothing here asserts how fast the app is.
"""
from __future__ import annotations

import math

import pytest
from harness.chromium import AVAILABLE, MISSING_REASON

from harness import bench_browser, bench_report

pytestmark = pytest.mark.slow  # a real server, browser or virtual environment


def test_check_report_flags_times_that_are_not_positive_and_finite():
    sound = {"cold_first_load_s": {"/": 1.5}, "measures": {"x": {"finished_s": {"median": 0.4, "min": 0.3, "max": 0.5},
                                                                 "samples": [{"numbers_s": None, "finished_s": 0.4}]}}}
    assert bench_report.check_report(sound) == []
    broken = {"cold_first_load_s": {"/": float("nan")},
              "measures": {"x": {"finished_s": {"median": 0.0, "min": -1.0, "max": 0.5}}}}
    assert len(bench_report.check_report(broken)) == 3


def test_verdicts_compare_the_worst_median_with_each_limit():
    measures = {"inspect_threshold": {"numbers_updated_s": {"median": 0.4}},
                "inspect_tau": {"numbers_updated_s": {"median": 0.6}},
                "warm_visit /": {"finished_s": {"median": 2.0}}}
    verdicts = {verdict["target"]: verdict for verdict in bench_report.verdicts(measures)}
    assert verdicts["slider step on Inspect, numbers updated"]["verdict"] == "missed"
    assert verdicts["slider step on Inspect, numbers updated"]["worst_median_s"] == 0.6
    assert verdicts["warm page visit"]["verdict"] == "missed"  # the limit is strict: < 2 s
    assert "slider step on /tradeoff, numbers updated" not in verdicts  # nothing measured for it
    tau_step = bench_report.verdicts({"tradeoff_a_tau": {"numbers_updated_s": {"median": 0.8},
                                                          "finished_s": {"median": 3.5}}})
    finished = next(v for v in tau_step if v["target"] == "tau step on /tradeoff, page finished with every chart")
    assert finished["worst_median_s"] == 3.5 and finished["verdict"] == "missed"


@pytest.mark.skipif(not AVAILABLE, reason=MISSING_REASON)
def test_a_short_run_reports_every_measure():
    report = bench_browser.run_benchmark(repeats=1, eval_limit=300, timeout=120)

    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["torch_threads"] >= 1
    assert report["machine"]["streamlit_version"]
    assert report["app"]["evaluation_images"] == 300
    assert set(report["cold_first_load_s"]) == {path for path, _ in bench_report.PAGES}
    measures = report["measures"]
    expected = {f"warm_visit {path}" for path, _ in bench_report.PAGES}
    expected |= {name for name, *_ in bench_browser.SLIDER_STEPS} | {"held_key"}
    assert set(measures) == expected
    for name, record in measures.items():
        assert record["failures"] == [], name
        assert len(record["samples"]) == 1, name
    for name, *_ in bench_browser.SLIDER_STEPS:
        sample = measures[name]["samples"][0]
        assert sample["from"] != sample["to"], name  # the step reached a new setting
        assert sample["unchanged"] == (sample["numbers_s"] is None), name
        assert math.isfinite(measures[name]["numbers_updated_s"]["median"])
        assert sample["charts_before"] >= 0 and {"no_chart_disappeared", "every_chart_at_finish"} <= set(measures[name])
    assert measures["tradeoff_a_tau"]["samples"][0]["charts_before"] >= 3  # the curve, histogram and per-class chart
    held = measures["held_key"]["samples"][0]
    assert round(float(held["to"]) - float(held["from"]), 2) == 0.08  # eight steps of 0.01
    assert len(held["key_gaps_ms"]) == bench_browser.HELD_PRESSES - 1
    assert held["values_fresh"] and None not in held["values_fresh"]
    assert bench_report.check_report(report) == []
    assert {verdict["verdict"] for verdict in report["targets"]} <= {"met", "missed"}
    assert len(report["targets"]) == len(bench_report.TARGETS)

"""The pay-off and cost-audit views through AppTest (tests/apptest.py): curves, alarms, budgets, uploaded
archives, unfamiliar inputs and the worst-case search."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from apptest import APP, AppTest, TIMEOUT, assert_clean, markdown_text, metrics, start, start_payoff, zip_of


def test_audit_filters_change_the_shown_inputs():
    at = start("views/audit.py")
    total = metrics(at)["Inputs shown"]
    at.radio(key="answers").set_value("incorrect").run()
    assert_clean(at)
    wrong = metrics(at)["Inputs shown"]
    at.multiselect(key="audit_classes").set_value(["Bag"]).run()
    assert_clean(at)
    bags = metrics(at)["Inputs shown"]
    count = lambda text: int(text.replace(",", ""))  # noqa: E731
    assert count(wrong) < count(total)
    assert count(bags) <= count(wrong)
    assert at.get("download_button")


def test_audit_ranks_by_estimated_time():
    at = start("views/audit.py")
    assert float(metrics(at)["Mean est. ms"]) > 0
    at.radio(key="rank_by").set_value("estimated ms").run()
    assert_clean(at)
    shown = next(frame.value for frame in at.dataframe if "est_ms" in frame.value and "index" in frame.value)
    assert shown["est_ms"].is_monotonic_decreasing and (shown["est_ms"] > 0).all()
    assert at.query_params["rank_by"] in ("estimated ms", ["estimated ms"])


def test_payoff_view_shows_the_curve_controls_and_routing_health():
    at = start_payoff()
    assert at.title[0].value == "Does routing pay off?"
    shown = metrics(at)
    for label in ("Accuracy, current setting", "Random routing, same costs", "Misclassified / correct mean MFLOPs",
                  "Error rate, costliest tenth / cheapest tenth"):
        assert label in shown and "nan" not in shown[label].lower()
    assert len(at.get("plotly_chart")) >= 4
    assert at.dataframe[0].value["cell"].tolist() == [1, 2, 3]
    assert any("Random routing" in caption.value for caption in at.caption)
    verdict = next(text for text in (m.value for m in at.markdown) if "most accurate static network" in text)
    assert "_" not in verdict and "parameters" in verdict  # a readable name, never a file's stem


def test_payoff_alarm_shows_for_a_collapsed_cell():
    at = start_payoff()
    # The joint checkpoint's routers saturate no weight at its tau, so threshold 1 runs no branch: every
    # cell sends every input down the one empty pattern. (The shipped routers do saturate some.)
    at.radio(key="checkpoint_source").set_value("Earlier shipped, joint objective").run()
    at.slider(key="threshold").set_value(1.0).run()
    assert not at.exception, [e.value for e in at.exception]
    alarms = [error.value for error in at.error]
    assert len(alarms) == 3 and all("100.00% of the inputs down one selection pattern" in a for a in alarms)
    assert any("run no branch at all" in warning.value for warning in at.warning)


def test_payoff_budget_chooses_a_setting_within_it_and_applies_it():
    at = start_payoff()
    at.number_input(key="budget").set_value(3.0).run()
    assert_clean(at, alarms_allowed=True)
    chosen = at.success[0].value
    found = re.search(r"\*\*tau ([\d.]+), threshold ([\d.]+)\*\*, [\d.]+% at ([\d.]+) MFLOPs on 5,000 training "
                      r"images held out of training \(recorded in the checkpoint\)", chosen)
    assert found, chosen
    tau, threshold, held_out_mflops = (float(value) for value in found.groups())
    assert held_out_mflops <= 3.0
    assert at.query_params["budget"] in ("3.0", ["3.0"])
    # The shipped DRNet's first cell sends nearly every image one way at every setting of the sweep.
    assert any("trips the collapse alarm" in warning.value for warning in at.warning)
    at.button(key="apply_budget").click().run()
    assert not at.exception, [e.value for e in at.exception]  # the collapse alarm may speak at the new setting
    assert at.slider(key="tau").value == pytest.approx(tau)
    assert at.slider(key="threshold").value == pytest.approx(threshold)


def test_audit_draws_no_empty_group_and_inspect_warns_when_nothing_runs():
    at = start("views/audit.py")
    at.radio(key="answers").set_value("incorrect").run()
    assert_clean(at)
    outcomes = next(frame.value for frame in at.dataframe if "outcome" in frame.value)
    assert outcomes["outcome"].tolist() == ["incorrect"]
    at.switch_page("views/inspect.py").run()
    at.radio(key="checkpoint_source").set_value("Earlier shipped, joint objective").run()  # saturates no weight
    at.slider(key="threshold").set_value(1.0).run()
    assert not at.exception
    assert any("no branch runs for this image" in warning.value for warning in at.warning)


def test_a_budget_outside_the_box_in_the_url_leaves_it_empty():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["budget"] = "1e9"
    at.run()
    at.switch_page("views/payoff.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="budget").value is None and not at.success


def test_attribution_reconciles_expected_and_executed_cost():
    at = start(tab="Attribution")
    executed = metrics(at)["Executed MFLOPs"]
    text = markdown_text(at)
    assert f"**Executed {executed} MFLOPs** = " in text and "always-on" in text and "**Expected " in text


def test_audit_takes_an_uploaded_zip_marks_unfamiliar_rows_and_lists_skipped_members():
    from drnet_core.data.datasets import load_shipped_subset

    garments = load_shipped_subset()
    entries = {}
    for position in range(6):
        buffer = io.BytesIO()
        Image.fromarray(garments.images[position].numpy()).save(buffer, format="PNG")
        name = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot")[int(garments.labels[position])]
        entries[f"{name}/{position}.png"] = buffer.getvalue()
    noise = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).integers(0, 256, (64, 64))).astype("uint8")).save(noise, format="PNG")
    entries["noise/noise.png"] = noise.getvalue()
    entries["../escape.png"] = noise.getvalue()
    entries["notes.txt"] = b"not an image"
    at = start("views/audit.py")
    at.radio(key="audit_source").set_value("Your images").run()
    assert_clean(at)
    at.file_uploader(key="audit_upload").upload("mine.zip", zip_of(entries), "application/zip").run()
    assert_clean(at)
    shown = metrics(at)
    assert shown["Inputs shown"] == "7" and shown["Unfamiliar"] != "–"
    table = next(frame.value for frame in at.dataframe if "input" in frame.value and "ood" in frame.value)
    assert bool(table.set_index("input").loc["noise/noise.png", "ood"]) is True
    skipped = next(frame.value for frame in at.dataframe if "why" in frame.value)
    assert set(skipped["input"]) == {"../escape.png", "notes.txt"}
    assert any("familiar" in str(frame.value.to_dict()) for frame in at.dataframe)


def test_audit_worst_case_tab_draws_the_sweep_against_the_dense_ceiling():
    at = start("views/audit.py", audit_tab="Worst case", sponge_limit="10")
    at.multiselect(key="sponge_budgets").set_value([4]).run()
    at.toggle(key="sponge_run").set_value(True).run()
    assert_clean(at)
    sweep = next(frame.value for frame in at.dataframe if "forced_mean_mflops" in frame.value)
    assert len(sweep) == 1 and sweep["forced_mean_mflops"][0] >= sweep["clean_mean_mflops"][0]
    chart = next(c for c in at.get("plotly_chart") if "How much cost can a perturbation force" in c.proto.spec)
    assert "the ceiling" in chart.proto.spec

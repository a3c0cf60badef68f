"""A short soak of the app in a real browser (scripts/soak.py): ten sessions, each with its own
setting in its URL, reloaded in turn for 24 seconds after a warm-up round; every page must show its
own session's numbers, the server must stay healthy and its memory must level off.

About two minutes on two cores, most of it the warm-up round. Skipped when chromium or chromedriver is
missing (the checks of the soak's own logic below still run). The three-minute figures are in docs/results/soak.json.
"""
from __future__ import annotations

import pytest
from harness.chromium import AVAILABLE, MISSING_REASON

from harness import soak

pytestmark = pytest.mark.slow  # a real server, browser or virtual environment


@pytest.mark.skipif(not AVAILABLE, reason=MISSING_REASON)
def test_ten_sessions_keep_their_own_numbers_and_the_server_levels_off():
    report = soak.soak(sessions=10, minutes=0.4, eval_limit=200, pace=3.0, sample_every=2.5)
    assert report["page_errors"] == 0, report["page_error_details"]
    assert report["mismatches"] == 0, report["mismatch_details"]
    assert report["health_failures"] == 0
    assert report["server_exit_code"] is None
    assert report["soak_page_loads"] > 0
    assert report["rss"]["levels_off"], report["rss"]
    assert all(loads >= 1 for loads in report["page_loads_per_session"].values())


def test_sessions_have_distinct_settings_and_distinguishable_inspect_figures():
    plan = soak.plan_sessions(10)
    assert len({(s.page, s.tau, s.threshold, s.tau_b, s.threshold_b) for s in plan}) == 10
    assert {s.page for s in plan} == {"inspect", "tradeoff"}
    figures = soak.ExpectedFigures(eval_limit=50)
    inspected = [figures.for_session(s)["Executed MFLOPs"][0] for s in plan if s.page == "inspect"]
    # A tab showing another session's cost would otherwise go unnoticed.
    assert len({round(mflops, 3) for mflops in inspected}) == len(inspected)


@pytest.mark.parametrize("shown, expected, matches", [
    ("6.140", 6.1404, True), ("6.140", 6.1406, False), ("93.20%", 93.2, True), ("93.20%", 93.4, False),
    ("1,234", 1234.2, True), ("T-shirt/top", "T-shirt/top", True), ("Trouser", "T-shirt/top", False),
    ("—", 1.0, False)])
def test_shown_values_compare_as_rounded_on_the_page(shown, expected, matches):
    assert soak.shown_matches(shown, expected) is matches

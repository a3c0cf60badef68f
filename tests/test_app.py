"""Every view of the Streamlit app through streamlit.testing.v1.AppTest: it renders without an exception
or an error, and moving a widget changes what the view shows. DRNET_EVAL_LIMIT keeps evaluations small."""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("DRNET_EVAL_LIMIT", "120")

from streamlit.testing.v1 import AppTest  # noqa: E402

from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint  # noqa: E402
from drnet_core.analysis.evaluate import default_setting  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py")
TIMEOUT = 240


def start(page: str | None = "views/inspect.py", **query: str | list[str]) -> AppTest:
    """The app after its first run with these URL query parameters, then on `page` (by default Inspect;
    None stays on the first page, Start here)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest, *, alarms_allowed: bool = False) -> None:
    """No exception and no error, except (with `alarms_allowed`) the pay-off view's collapse alarms,
    which are the page reporting on the model, not failing."""
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error if not (alarms_allowed and "selection pattern" in e.value)]
    assert not errors, errors


def start_payoff() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("views/payoff.py").run()
    assert_clean(at, alarms_allowed=True)
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def sidebar_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.sidebar.markdown)


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def png_bytes(color: int = 255) -> bytes:
    image = Image.new("L", (60, 40), color)
    image.paste(Image.new("L", (20, 30), 0), (20, 5))  # a dark garment on a light background
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_start_here_is_the_first_page_and_links_a_tour():
    at = start(None)
    assert at.title[0].value == "Start here"
    text = markdown_text(at)
    for needle in ("Dynamic Routing Network", "n0", "Identity", "identity"):
        assert needle in text
    links = re.findall(r"\]\(([a-z-]+\?[^)]*)\)", text)
    assert [link.split("?")[0] for link in links] == ["inspect", "inspect", "how-it-works", "payoff", "audit"]
    assert "barely route" in text or "Every cell routes" in text
    assert any("routing_graph" in chart.proto.id or "start_graph" in chart.proto.id for chart in at.get("plotly_chart"))


def test_inspect_renders_and_sidebar_shows_the_model():
    at = start()
    assert at.title[0].value == "Inspect an image"
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    for needle in ("Checkpoint", "Device", "Test accuracy", "Evaluating on"):
        assert needle in sidebar
    assert "Prediction" in metrics(at)
    assert at.query_params["tau"] and at.query_params["threshold"]


def test_threshold_slider_changes_the_inspected_cost():
    at = start()
    before = metrics(at)["Executed MFLOPs"]
    at.slider(key="threshold").set_value(0.0).run()
    assert_clean(at)
    after = metrics(at)["Executed MFLOPs"]
    assert after != before
    assert at.query_params["threshold"] in ("0.0", ["0.0"])


def test_gallery_choice_changes_the_prediction_view():
    at = start()
    box = at.selectbox(key="image")
    before = [(m.value, m.delta) for m in at.metric[:2]]
    box.select_index(len(box.options) - 1).run()
    assert_clean(at)
    assert at.selectbox(key="image").index == len(box.options) - 1
    assert [(m.value, m.delta) for m in at.metric[:2]] != before


def test_upload_goes_through_and_bad_upload_shows_an_error():
    at = start()
    at.radio(key="source").set_value("Upload").run()
    assert_clean(at)
    at.file_uploader(key="upload").upload("shirt.png", png_bytes(), "image/png").run()
    assert_clean(at)
    assert "Prediction" in metrics(at)
    at.file_uploader(key="upload").clear().upload("notes.png", b"this is not an image", "image/png").run()
    assert not at.exception
    assert at.error and "notes.png" in at.error[0].value


def test_counterfactual_force_off_changes_the_cost():
    at = start(tab="Counterfactual")
    base = metrics(at)["Executed MFLOPs"]
    executed = at.multiselect(key="force_off")
    # Force off every branch: the cost falls to the always-on parts.
    executed.set_value(list(range(len(executed.options)))).run()
    assert_clean(at)
    values = [m.value for m in at.metric if m.label == "Executed MFLOPs"]
    assert len(values) == 2 and values[1] != base


def test_noise_toggle_enables_path_resampling():
    at = start(tab="Same image, different paths")
    at.toggle(key="noise").set_value(True).run()
    assert_clean(at)
    assert "Distinct paths" in metrics(at)
    assert "in 64 samples" in [c.value for c in at.caption]
    at.slider(key="samples").set_value(16).run()
    assert_clean(at)
    assert "in 16 samples" in [c.value for c in at.caption]


def test_tradeoff_view_updates_with_setting_b():
    at = start("views/tradeoff.py")
    assert at.title[0].value == "Temperature & threshold"
    before = [m.value for m in at.metric if m.label == "Mean MFLOPs"]
    at.slider(key="threshold_b").set_value(0.0).run()
    assert_clean(at)
    after = [m.value for m in at.metric if m.label == "Mean MFLOPs"]
    assert before[0] == after[0] and before[1] != after[1]
    assert "predictions" in markdown_text(at)


def test_tradeoff_curve_is_a_labelled_preview_until_the_full_sweep_is_asked_for():
    at = start("views/tradeoff.py")
    charts = {chart.proto.id for chart in at.get("plotly_chart")}
    assert all(any(key in chart for chart in charts) for key in ("tradeoff_curve", "mflops_histogram", "per_class"))
    curve_caption = next(c.value for c in at.caption if c.value.startswith("Curve:"))
    assert "preview of 12 of these images" in curve_caption
    at.button(key="full_sweep").click().run()
    assert_clean(at)
    curve_caption = next(c.value for c in at.caption if c.value.startswith("Curve:"))
    assert "preview" not in curve_caption and "first 120" in curve_caption
    assert not [button for button in at.button if button.key == "full_sweep"]


def test_clusters_view_changes_with_k_and_method():
    at = start("views/clusters.py")
    assert at.title[0].value == "Routing clusters"
    at.slider(key="k").set_value(2).run()
    assert_clean(at)
    rows_two = len(at.dataframe[0].value)
    at.slider(key="k").set_value(5).run()
    assert_clean(at)
    assert len(at.dataframe[0].value) >= rows_two
    at.selectbox(key="method").set_value("agglomerative").run()
    at.selectbox(key="metric").set_value("jaccard").run()
    at.selectbox(key="embedding").set_value("tsne").run()
    assert_clean(at)
    assert "Adjusted mutual information (clusters vs. classes)" in metrics(at)


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


def test_teaching_demo_follows_the_sidebars_tau():
    at = start("views/teach.py")
    assert at.title[0].value == "How it works"
    at.slider(key="tau").set_value(0.1).run()
    sharp = float(metrics(at)["Largest weight"])
    assert "Temperature tau: 0.1" in markdown_text(at)
    at.slider(key="tau").set_value(4.0).run()
    assert_clean(at)
    flat = float(metrics(at)["Largest weight"])
    assert sharp > flat  # a higher temperature flattens the weights
    assert "Branches that run" in metrics(at)


def test_settings_come_from_the_url():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["tau"] = "2.5"
    at.query_params["threshold"] = "0.05"
    at.query_params["noise"] = "true"
    at.run()
    assert_clean(at)
    assert at.slider(key="tau").value == pytest.approx(2.5)
    assert at.slider(key="threshold").value == pytest.approx(0.05)
    assert at.toggle(key="noise").value is True


def test_the_bundled_checkpoints_can_be_chosen_in_the_sidebar():
    at = start()
    assert "`drnet_fashion.pt`" in sidebar_text(at)
    at.radio(key="checkpoint_source").set_value("With pooling branches").run()
    assert_clean(at)
    text = sidebar_text(at)
    assert "`drnet_fashion_pooling.pt`" in text and "at tau 2, threshold 0.05" in text
    assert "Prediction" in metrics(at)


def query_value(at: AppTest, key: str) -> str:
    value = at.query_params[key]
    return value[0] if isinstance(value, list) else value


def test_the_checkpoint_is_in_the_url_by_name_or_by_the_uploads_sha256():
    from drnet_core.net.checkpoint import BUNDLED_CHECKPOINTS

    at = start(checkpoint="With pooling branches")
    assert at.radio(key="checkpoint_source").value == "With pooling branches"
    assert "`drnet_fashion_pooling.pt`" in sidebar_text(at)
    assert (at.slider(key="tau").value, at.slider(key="threshold").value) == (pytest.approx(2.0), pytest.approx(0.05))

    # An upload is named by its sha256: a link restores it while the upload store still holds it.
    data = BUNDLED_CHECKPOINTS["Earlier shipped, joint objective"].read_bytes()
    at = start()
    at.radio(key="checkpoint_source").set_value("Upload a file").run()
    at.file_uploader(key="checkpoint_upload").upload("mine.pt", data).run()
    assert_clean(at)
    digest = query_value(at, "checkpoint")
    assert len(digest) == 64 and "`mine.pt`" in sidebar_text(at)
    restored = start(checkpoint=digest)
    assert restored.radio(key="checkpoint_source").value == "Upload a file"
    assert f"sha256 {digest[:12]}" in "\n".join(c.value for c in restored.sidebar.caption)
    assert metrics(restored)["Executed MFLOPs"] == metrics(at)["Executed MFLOPs"]


def test_a_link_to_an_unknown_upload_says_so_and_uses_the_shipped_checkpoint():
    at = start(checkpoint="0" * 64)
    assert not at.exception and "no longer on this server" in at.sidebar.warning[0].value
    assert "`drnet_fashion.pt`" in sidebar_text(at)
    at = start(checkpoint="../../etc/passwd")
    assert not at.exception and "neither a bundled checkpoint" in at.sidebar.warning[0].value


def test_bad_checkpoint_upload_shows_an_error_and_keeps_working():
    at = start()
    at.radio(key="checkpoint_source").set_value("Upload a file").run()
    at.file_uploader(key="checkpoint_upload").upload("model.pt", b"definitely not a checkpoint").run()
    assert not at.exception
    assert at.error and "shipped checkpoint instead" in at.error[0].value
    assert "Prediction" in metrics(at)


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


def test_choosing_a_checkpoint_moves_the_sliders_to_its_defaults():
    at = start()
    at.slider(key="threshold").set_value(0.3).run()
    at.radio(key="checkpoint_source").set_value("With pooling branches").run()
    assert_clean(at)
    assert (at.slider(key="tau").value, at.slider(key="threshold").value) == (pytest.approx(2.0), pytest.approx(0.05))
    at.radio(key="checkpoint_source").set_value("Shipped").run()
    assert_clean(at)
    tau, threshold = default_setting(load_checkpoint(SHIPPED_CHECKPOINT)[1])
    assert (at.slider(key="tau").value, at.slider(key="threshold").value) == (pytest.approx(tau), pytest.approx(threshold))
    assert at.query_params["tau"] in (str(tau), [str(tau)])


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


def test_noise_view_shows_branch_frequencies_and_path_entropy():
    at = start(tab="Same image, different paths")
    at.toggle(key="noise").set_value(True).run()
    assert_clean(at)
    assert metrics(at)["Path entropy"].endswith(" bits")
    heatmap = next(chart for chart in at.get("plotly_chart") if "How often each branch ran" in chart.proto.spec)
    assert '"type":"heatmap"' in heatmap.proto.spec.replace(" ", "")


def test_a_budget_outside_the_box_in_the_url_leaves_it_empty():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["budget"] = "1e9"
    at.run()
    at.switch_page("views/payoff.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="budget").value is None and not at.success


def test_only_the_open_tab_runs_and_the_url_names_it():
    at = start()
    charts = {chart.proto.id for chart in at.get("plotly_chart")}
    assert not any("cost_distribution" in key for key in charts)
    at = start(tab="Cost")
    assert any("cost_distribution" in chart.proto.id for chart in at.get("plotly_chart"))
    assert not any("routing_graph" in chart.proto.id for chart in at.get("plotly_chart"))


def test_forced_branches_come_from_the_url():
    labels = start(tab="Counterfactual").multiselect(key="force_off").options  # the URL names branches by label
    at = start(tab="Counterfactual", force_off=list(labels))
    assert at.multiselect(key="force_off").value == list(range(len(labels)))
    values = [m.value for m in at.metric if m.label == "Executed MFLOPs"]
    assert len(values) == 2 and values[0] != values[1]


def test_attribution_reconciles_expected_and_executed_cost():
    at = start(tab="Attribution")
    executed = metrics(at)["Executed MFLOPs"]
    text = markdown_text(at)
    assert f"**Executed {executed} MFLOPs** = " in text and "always-on" in text and "**Expected " in text


def zip_of(entries: dict[str, bytes]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


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


def test_inspect_warns_of_an_unfamiliar_upload_and_searches_its_worst_case():
    at = start(source="Upload")
    noise = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).integers(0, 256, (64, 64))).astype("uint8")).save(noise, format="PNG")
    at.file_uploader(key="upload").upload("noise.png", noise.getvalue(), "image/png").run()
    assert_clean(at)
    assert any("Unfamiliar input" in warning.value for warning in at.warning)
    at = start(tab="Worst case", sponge_eps="2")
    assert_clean(at)
    assert "Forced MFLOPs" in metrics(at)


def test_audit_worst_case_tab_draws_the_sweep_against_the_dense_ceiling():
    at = start("views/audit.py", audit_tab="Worst case", sponge_limit="10")
    at.multiselect(key="sponge_budgets").set_value([4]).run()
    at.toggle(key="sponge_run").set_value(True).run()
    assert_clean(at)
    sweep = next(frame.value for frame in at.dataframe if "forced_mean_mflops" in frame.value)
    assert len(sweep) == 1 and sweep["forced_mean_mflops"][0] >= sweep["clean_mean_mflops"][0]
    chart = next(c for c in at.get("plotly_chart") if "How much cost can a perturbation force" in c.proto.spec)
    assert "the ceiling" in chart.proto.spec

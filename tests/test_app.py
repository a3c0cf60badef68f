"""The app's views through AppTest (tests/apptest.py): each renders without an exception or an error,
and moving a widget changes what it shows. Inspect, trade-off, clusters, teaching, URL state, checkpoints."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from apptest import APP, AppTest, TIMEOUT, assert_clean, markdown_text, metrics, png_bytes, query_value, sidebar_text, start
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from drnet_core.analysis.evaluate import default_setting


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


def test_noise_view_shows_branch_frequencies_and_path_entropy():
    at = start(tab="Same image, different paths")
    at.toggle(key="noise").set_value(True).run()
    assert_clean(at)
    assert metrics(at)["Path entropy"].endswith(" bits")
    heatmap = next(chart for chart in at.get("plotly_chart") if "How often each branch ran" in chart.proto.spec)
    assert '"type":"heatmap"' in heatmap.proto.spec.replace(" ", "")


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

"""Inspect an image: preprocessing, prediction, routing path, weights, cost, attributions,
counterfactuals, noise resampling and path comparison for one input."""
from __future__ import annotations

import math

import streamlit as st

from drnet_app import caches, evaluation, state, ui
from drnet_core.analysis import attribution, explorer, sponge
from drnet_core.figures import charts as figures, routing_graph
from drnet_core.defaults import MAX_UPLOAD_MB, TAU_MAX, TAU_MIN

settings = state.current_settings()
model, meta = caches.model_and_meta(settings.checkpoint)
images = caches.evaluation_set()
classes = settings.class_names
architecture = model.architecture()
labels = architecture.branch_labels()
gallery = explorer.gallery_positions(images.labels, per_class=2)


def gallery_name(position: int) -> str:
    position = int(position)  # query-param and widget values may arrive as other integer types
    index = int(images.indices[position]) if images.indices is not None else position
    return f"{classes[int(images.labels[position])]} · test image #{index}"


st.title("Inspect an image")
st.caption("Upload a picture of a garment or pick a test image; see what the router selects for it and what that costs.")

left, right = st.columns([1, 2], gap="large")
with left:
    # Kept for the session: coming back from another page shows the same image.
    source = st.radio("Image", ["Gallery", "Upload"], horizontal=True, persist_state="session",
                      key=state.bound("source", "Gallery", options=["Gallery", "Upload"]))
    invert_choice = st.radio("Inversion", ["Auto", "Invert", "Keep"], horizontal=True, persist_state="session",
                             key=state.bound("invert", "Auto", options=["Auto", "Invert", "Keep"]),
                             help="Fashion-MNIST garments are light on black. Auto inverts pictures whose background "
                                  "(border) is light.")
    invert = {"Auto": None, "Invert": True, "Keep": False}[invert_choice]
    prepared, true_class, name = None, None, ""
    if source == "Upload":
        upload = st.file_uploader(f"PNG, JPEG, WebP, BMP or GIF (first frame), up to {MAX_UPLOAD_MB} MB", key="upload")
        if upload is None:
            st.info("Choose a picture to upload, or switch to the gallery.")
        else:
            prepared = evaluation.uploaded_image(upload, invert)
            name = upload.name
    else:
        position = st.selectbox("Gallery image", gallery, format_func=gallery_name, persist_state="session",
                                key=state.bound("image", gallery[0], options=gallery))
        prepared = evaluation.gallery_image(position, invert=invert is True)
        true_class, name = int(images.labels[position]), gallery_name(position)
    state.publish("source", "invert", "image")

if prepared is None:
    st.stop()

key = evaluation.image_key(prepared)
result = caches.inspection(settings.checkpoint, key, prepared.model_input, settings.tau, settings.threshold,
                           settings.noise_seed)

with left:
    a, b, c = st.columns(3)
    a.image(ui.crisp(prepared.original), caption="original", width="stretch")
    b.image(ui.crisp(prepared.grayscale), caption="grayscale, square", width="stretch")
    c.image(ui.enlarge(prepared.pixels, 4), caption="model input 28×28" + (" (inverted)" if prepared.inverted else ""),
            width="stretch")
    calibration, calibration_origin = caches.ood_calibration(settings.checkpoint)
    unfamiliarity = caches.image_ood_score(settings.checkpoint, key, prepared.model_input)
    if calibration is None:
        st.caption(f"Unfamiliar-input warning unavailable: {calibration_origin}.")
    elif calibration.flags([unfamiliarity])[0]:
        st.warning(f"**Unfamiliar input.** This picture is unlike the images the network was trained on "
                   f"(unfamiliarity {unfamiliarity:.0f}; {calibration.held_out_tpr:.0%} of held-out Fashion-MNIST "
                   f"images score at most {calibration.score_threshold:.0f}). Its label and its cost say little "
                   "about a garment: the network gives every input one of its ten classes.", icon=":material/warning:")
    else:
        st.caption(f"Familiar input: unfamiliarity {unfamiliarity:.0f}, within the {calibration.score_threshold:.0f} "
                   "that 95% of held-out Fashion-MNIST images stay under.")
    st.plotly_chart(figures.probabilities_figure(result.probabilities, classes, true_class), key="probabilities")
with right:
    m1, m2, m3 = st.columns([3, 2, 2])  # a class name such as "T-shirt/top" needs the room at 1280 px
    m1.metric("Prediction", classes[result.prediction])
    m1.caption(f"{result.confidence:.1%} confident")
    m2.metric("Executed MFLOPs", f"{result.mflops:.3f}")
    m2.caption(f"{result.fraction_of_dense:.0%} of dense ({result.dense_mflops:.2f})")
    m3.metric("Active parameters", f"{result.active_params:,.0f}")
    m3.caption(f"of {model.dense_params():,}")
    if result.branches_run == 0:
        st.warning(f"At tau {settings.tau:g} and threshold {settings.threshold:g} no branch runs for this image: every "
                   "cell passes its input through unchanged, and the prediction comes from the stem, reductions and "
                   "head alone.")


def routing_path_tab() -> None:
    graph = routing_graph.routing_graph(result)
    ran = result.branches_run
    # The setting goes in the caption: in the title it was cut off at the column's width.
    st.plotly_chart(routing_graph.routing_figure(
        graph, f"Routing path of {name}: {ran} of {len(labels)} branches ran"), key="routing_graph")
    st.caption(f"At tau {settings.tau:g}, threshold {settings.threshold:g}. Coloured lines are branches that ran, "
               "wider and more opaque the higher their weight; grey ones were skipped. Hover a branch for its op, "
               "weight and cost. How to read the graph: **Start here**.")


def branch_weights_tab() -> None:
    st.plotly_chart(figures.weight_heatmap(result), key="weights")


def cost_tab() -> None:
    run = evaluation.routed_run(settings)
    st.plotly_chart(figures.flops_distribution_figure(
        run.mflops.numpy(), result.mflops, result.dense_mflops,
        f"This image's cost against {evaluation.limited_set(settings).name}"), key="cost_distribution")


def attribution_tab() -> None:
    method = st.radio("Method", ["integrated_gradients", "saliency"], horizontal=True,
                      format_func=lambda m: m.replace("_", " ").capitalize(), persist_state="session",
                      key=state.bound("attr_method", "integrated_gradients",
                                      options=["integrated_gradients", "saliency"]))
    state.publish("attr_method")
    with st.spinner("Attributing…", show_time=True):
        explained, cost = caches.attributions(settings.checkpoint, key, prepared.model_input, result.prediction,
                                              settings.tau, settings.threshold, method, classes)
    x1, x2 = st.columns(2)
    x1.plotly_chart(figures.attribution_figure(
        explained.pixels, prepared.pixels.numpy(), f"What drives '{classes[result.prediction]}' "
                                                   f"(p = {explained.value:.2f})"), key="class_attribution")
    x2.plotly_chart(figures.attribution_figure(
        cost.pixels, prepared.pixels.numpy(), f"What drives the routed cost ({cost.value:.2f} expected MFLOPs)"),
        key="cost_attribution")
    breakdown = attribution.cost_breakdown(model, result.mflops, cost.value)
    st.caption("Red pixels raise the explained output, blue ones lower it. Branch selection itself has no gradient, "
               "so the cost map explains a differentiable stand-in: the branches' cost expected under the router's "
               "weights.")
    st.markdown(f"**Executed {breakdown.executed:.3f} MFLOPs** = {breakdown.always_on:.3f} always-on (stem, "
                f"reductions, routers, head) + {breakdown.executed_branches:.3f} for the branches that ran, each at "
                f"its full cost. **Expected {breakdown.expected_branches:.3f} MFLOPs** = the sum of weight × cost "
                "over every branch, run or skipped: a branch that runs at weight 0.4 counts fully in the first and "
                "0.4 times in the second.")


def counterfactual_tab() -> None:
    st.markdown("Force branches on or off and see how the prediction and the cost change.")
    on_col, off_col = st.columns(2)
    # In the URL (repeated parameters), so a link reproduces the counterfactual.
    force_on = on_col.multiselect("Force on", range(len(labels)), format_func=labels.__getitem__, key="force_on",
                                  bind="query-params")
    force_off = off_col.multiselect("Force off", range(len(labels)), format_func=labels.__getitem__,
                                    key="force_off", bind="query-params")
    try:
        changed = caches.inspection(settings.checkpoint, key, prepared.model_input, settings.tau,
                                    settings.threshold, settings.noise_seed, tuple(sorted(force_on)),
                                    tuple(sorted(force_off)))
    except ValueError as error:
        st.error(str(error))
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("Prediction", classes[changed.prediction])
    c1.caption("unchanged" if changed.prediction == result.prediction else f"was {classes[result.prediction]}")
    c2.metric("Confidence", f"{changed.confidence:.1%}")
    cost_change = changed.mflops - result.mflops
    c3.metric("Executed MFLOPs", f"{changed.mflops:.3f}",
              ui.nonzero_delta(f"{cost_change:+.3f}"), delta_color="inverse")
    diff = routing_graph.path_diff_graph(result, changed)
    st.plotly_chart(routing_graph.path_diff_figure(diff, "Router's path (A) vs. counterfactual path (B)",
                                                   "router", "counterfactual"), key="counterfactual_diff")


def noise_tab() -> None:
    if not settings.noise:
        st.info("Turn on **Gumbel noise** in the sidebar to resample this image's path with fresh noise.")
        return
    samples = st.slider("Noise samples", 16, 256, step=16, persist_state="session",
                        key=state.bound("samples", 64, low=16, high=256))
    state.publish("samples")
    with st.spinner(f"Routing {samples} noisy copies…"):
        table = caches.noise_paths(settings.checkpoint, key, prepared.model_input, settings.tau,
                                   settings.threshold, samples, settings.seed, classes)
    s1, s2, s3 = st.columns(3)
    s1.metric("Distinct paths", f"{len(table)}")
    s1.caption(f"in {samples} samples")
    s2.metric("Most frequent path", f"{table['share'].iloc[0]:.0%}")
    s2.caption(f"predicts {table['prediction'].iloc[0]}")
    s3.metric("Path entropy", f"{explorer.path_entropy_bits(table):.2f} bits")
    s3.caption(f"of at most {math.log2(samples):.1f}")
    st.plotly_chart(figures.selection_frequency_heatmap(
        architecture, explorer.noise_selection_frequency(table),
        f"How often each branch ran in {samples} noisy copies (seed {settings.seed})"), key="noise_frequency")
    st.caption("0% or 100%: the noise never changes that branch's choice; in between, it does.")
    # The pattern itself is in the heatmap above; its hex key would be one more unexplained column.
    st.dataframe(table.drop(columns=["mask", "key"]).head(20), hide_index=True, key="noise_table",
                 column_config={"share": st.column_config.ProgressColumn("share", format="percent", min_value=0,
                                                                        max_value=1),
                                "mflops": st.column_config.NumberColumn("MFLOPs", format="%.3f"),
                                "path": st.column_config.NumberColumn(help="rank by frequency, 1 = most frequent"),
                                "branches": st.column_config.NumberColumn(help="how many branches ran on this path"),
                                "prediction": st.column_config.TextColumn(
                                    help="the class most often predicted on this path")})


def compare_tab() -> None:
    mode = st.radio("Compare with", ["Another image", "Another setting"], horizontal=True, persist_state="session",
                    key=state.bound("compare", "Another image", options=["Another image", "Another setting"]))
    if mode == "Another image":
        other = st.selectbox("Image B", gallery, format_func=gallery_name, persist_state="session",
                             key=state.bound("image_b", gallery[1], options=gallery))
        other_image = evaluation.gallery_image(other)
        other_result = caches.inspection(settings.checkpoint, evaluation.image_key(other_image),
                                         other_image.model_input, settings.tau, settings.threshold,
                                         settings.noise_seed)
        label_b = gallery_name(other)
    else:
        t_col, h_col = st.columns(2)
        tau_b = t_col.slider("tau for B", TAU_MIN, TAU_MAX, step=0.05, persist_state="session",
                             key=state.bound("cmp_tau", 1.0, low=TAU_MIN, high=TAU_MAX))
        threshold_b = h_col.slider("threshold for B", 0.0, 1.0, step=0.01, persist_state="session",
                                   key=state.bound("cmp_threshold", 0.3, low=0.0, high=1.0))
        other_result = caches.inspection(settings.checkpoint, key, prepared.model_input, tau_b, threshold_b,
                                         settings.noise_seed)
        label_b = f"tau {tau_b:g}, threshold {threshold_b:g}"
    state.publish("compare", "image_b", "cmp_tau", "cmp_threshold")
    d1, d2 = st.columns(2)
    d1.metric("A (this image, sidebar setting)", classes[result.prediction])
    d1.caption(f"{result.mflops:.3f} MFLOPs")
    d2.metric(f"B ({label_b})", classes[other_result.prediction])
    d2.caption(f"{other_result.mflops:.3f} MFLOPs")
    diff = routing_graph.path_diff_graph(result, other_result)
    counts = routing_graph.diff_counts(diff)
    st.plotly_chart(routing_graph.path_diff_figure(
        diff, f"Path diff: {counts['both']} shared, {counts['only A']} only in A, {counts['only B']} only in B"),
        key="compare_diff")


def worst_case_tab() -> None:
    st.markdown("**How costly can this image be made?** Gradient ascent on the routers' cost changes each pixel by "
                "at most eps (of the 0–255 range), then a real routed run measures what the changed image costs.")
    eps = st.select_slider("Budget eps (x 1/255)", [1, 2, 4, 8, 16, 32], persist_state="session",
                           key=state.bound("sponge_eps", 8, options=[1, 2, 4, 8, 16, 32]))
    state.publish("sponge_eps")
    forced = caches.sponge_one(settings.checkpoint, key, prepared.pixels, eps / 255, settings.tau,
                               settings.threshold)
    forced_input = sponge.normalise(forced.forced_pixels)
    changed = caches.inspection(settings.checkpoint, f"{key}-sponge-{eps}", forced_input, settings.tau,
                                settings.threshold, None)
    c1, c2, c3 = st.columns(3)
    c1.metric("Forced MFLOPs", f"{float(forced.forced_mflops[0]):.3f}",
              ui.nonzero_delta(f"{float(forced.forced_mflops[0] - forced.clean_mflops[0]):+.3f}"),
              delta_color="inverse")
    c1.caption(f"from {float(forced.clean_mflops[0]):.3f}; dense {forced.dense_mflops:.2f} is the ceiling")
    c2.metric("Prediction after", classes[changed.prediction])
    c2.caption("unchanged" if changed.prediction == result.prediction else f"was {classes[result.prediction]}")
    c3.image(ui.enlarge((forced.forced_pixels[0, 0] * 255).round().byte(), 4),
             caption=f"perturbed image (eps {eps}/255)", width="stretch")
    diff = routing_graph.path_diff_graph(result, changed)
    st.plotly_chart(routing_graph.path_diff_figure(diff, "This image's path (A) vs. the perturbed image's path (B)",
                                                   "original", "perturbed"), key="sponge_diff")
    st.caption("The search and the measurement use the sidebar's tau and threshold, without noise. "
               "`python -m drnet_core sponge` runs it over the test split at the checkpoint's default setting.")


TABS = {"Routing path": routing_path_tab, "Branch weights": branch_weights_tab, "Cost": cost_tab,
        "Attribution": attribution_tab, "Counterfactual": counterfactual_tab,
        "Same image, different paths": noise_tab, "Compare": compare_tab, "Worst case": worst_case_tab}
# Only the open tab runs, so a slider step pays for what is on screen; the open tab is in the URL. Beside
# the image and under the numbers, so that the routing graph starts above the fold on a laptop screen.
with right:
    for tab, draw in zip(st.tabs(list(TABS), key="tab", bind="query-params"), TABS.values()):
        if tab.open:
            with tab:
                draw()

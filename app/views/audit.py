"""Cost audit: which inputs take the costliest paths, cost per class, cost against error, unfamiliar inputs,
CSV export, for the evaluation set or the auditor's own images; and the worst cost a perturbation can force."""
from __future__ import annotations

import streamlit as st

from drnet_app import audit_rows, caches, evaluation, state, ui
from drnet_core.analysis import audit, batch_audit
from drnet_core.figures import charts as figures, sponge as sponge_figures
from drnet_core.data.zip_intake import MAX_DEPTH, MAX_MEMBERS, MAX_TOTAL_BYTES

settings = state.current_settings()
classes = settings.class_names
evaluated = evaluation.limited_set(settings)
calibration, calibration_origin = caches.ood_calibration(settings.checkpoint)
SOURCES = ["Evaluation set", "Your images"]

st.title("Cost audit")


def evaluation_table():
    """(table, thumbnails' pixels, set name, run-like setting) of the evaluation set."""
    run = evaluation.routed_run(settings)
    times = caches.time_table(settings.checkpoint, settings.dataset_name)
    table = audit.instance_table(run, classes, evaluated.indices, time_table=times)
    scores = caches.evaluation_ood_scores(settings.checkpoint, settings.dataset_name, settings.eval_limit)
    table["ood"] = calibration.flags(scores) if scores is not None else None
    table["ood_score"] = scores if scores is not None else float("nan")
    return table, evaluated.images, evaluated.name, run


def uploaded_table():
    """The same for the auditor's uploaded images, or None (after saying why) when there is nothing to audit."""
    files = st.file_uploader(
        "Images or zip archives (an archive's class folders, named like 'Coat' or 'T-shirt_top', give labels)",
        accept_multiple_files=True, key="audit_upload")
    st.caption(f"Zips are read in memory: at most {MAX_MEMBERS:,} files and {MAX_TOTAL_BYTES // 2**20} MB "
               f"decompressed, archives inside archives {MAX_DEPTH - 1} level deep. Anything unusable is listed and "
               "skipped; the rest is audited.")
    if not files:
        st.info("Upload images, or a zip of them, to audit what they cost.")
        return None
    uploads = audit_rows.uploads_of(files)
    table, pixels, skipped = caches.uploaded_audit(settings.checkpoint, settings.dataset_name, uploads,
                                                   settings.tau, settings.threshold)
    if skipped:
        with st.expander(f"{len(skipped)} input(s) skipped", expanded=table is None):
            st.dataframe([{"input": s.name, "why": s.reason} for s in skipped], hide_index=True, key="skipped_table")
    if table is None:
        st.error("None of the uploaded files is a usable image.")
        return None
    run_like = audit.Setting(settings.tau, settings.threshold)
    return table, pixels, audit_rows.uploads_name(uploads), run_like


def class_filter(table, class_list):
    class_text = st.session_state[state.bound("true_classes", "")]
    if "audit_classes" not in st.session_state:
        positions = [int(part) for part in class_text.split(",") if part.strip().isdigit()]
        st.session_state["audit_classes"] = [class_list[p] for p in sorted(set(positions)) if p < len(class_list)]
    f1, f2, f3 = st.columns(3)  # the answers' three choices on one line
    chosen = f1.multiselect("True class", list(class_list), key="audit_classes", placeholder="all classes")
    st.session_state["true_classes"] = ",".join(str(class_list.index(n)) for n in chosen if n in class_list)
    correctness = f2.radio("Answers", ["all", "correct", "incorrect"], horizontal=True,
                           key=state.bound("answers", "all", options=["all", "correct", "incorrect"]))
    return chosen, correctness, f3


def cost_range_filter(table, column):
    # A range slider holds a pair, which the URL helpers do not parse: its two ends travel apart.
    low, high = float(table["mflops"].min()), float(table["mflops"].max())
    if high <= low:
        column.markdown(f"Every input costs **{low:.3f} MFLOPs** at this setting.")
        return low, high
    if "audit_range" not in st.session_state:
        # Streamlit drops a widget's state in a run that does not draw it (no upload yet): only the first
        # drawing takes the range from the URL, later ones start from the whole range.
        start = st.session_state[state.bound("mflops_min", low, low=low, high=high)]
        end = st.session_state[state.bound("mflops_max", high, low=low, high=high)]
        st.session_state["audit_range"] = (min(start, end), max(start, end))
        st.session_state.setdefault("audit_range_bounds", (low, high))
    kept = st.session_state["audit_range"]
    if st.session_state.get("audit_range_bounds") != (low, high) or not (low <= kept[0] <= kept[1] <= high):
        st.session_state["audit_range"] = (low, high)  # the setting or the set changed the costs: reset
        st.session_state["audit_range_bounds"] = (low, high)
    step = max((high - low) / 200, 1e-6)
    chosen = column.slider("Cost range (MFLOPs)", low, high, step=step, format="%.3f", key="audit_range")
    # The slider snaps to its steps from the low end, which can land a rounding error short of the costliest row.
    cost_range = (low if chosen[0] - low < step / 2 else chosen[0], high if high - chosen[1] < step / 2 else chosen[1])
    st.session_state["mflops_min"], st.session_state["mflops_max"] = (float(end) for end in cost_range)
    state.publish("mflops_min", "mflops_max")
    return cost_range


def headline(filtered, table):
    m1, m2, m3, m4, m5, m6 = st.columns(6)
    m1.metric("Inputs shown", f"{len(filtered):,}")
    m1.caption(f"of {len(table):,} evaluated")
    m2.metric("Mean MFLOPs", f"{filtered['mflops'].mean():.3f}" if len(filtered) else "–")
    m3.metric("Mean est. ms", f"{filtered[audit.TIME_COLUMN].mean():.3f}" if len(filtered) else "–")
    labelled = filtered["correct"].dropna()
    m4.metric("Accuracy", f"{labelled.astype(float).mean():.1%}" if len(labelled) else "–")
    m5.metric("Distinct paths", f"{filtered['path_id'].nunique():,}")
    flagged = filtered["ood"].dropna()
    m6.metric("Unfamiliar", f"{int(flagged.sum()):,}" if calibration is not None else "–")
    m6.caption("flagged unlike the training images" if calibration is not None else "warning unavailable")


def costliest_section(filtered, pixels):
    st.subheader("Costliest inputs")
    rankings = {"MFLOPs": "mflops", "estimated ms": audit.TIME_COLUMN}
    c1, c2 = st.columns([1, 2])
    rank_by = c1.radio("Rank by", list(rankings), horizontal=True,
                       key=state.bound("rank_by", "MFLOPs", options=list(rankings)))
    count = c2.slider("How many", 4, 48, step=4, key=state.bound("top", 12, low=4, high=48))
    state.publish("rank_by", "top")
    times = caches.time_table(settings.checkpoint, settings.dataset_name)
    st.caption(f"Estimated ms: what each input costs in a batch of {times.batch} on this machine ({times.device}), "
               "the always-on part's share plus every branch it ran, each timed alone. Pooling costs time but no "
               "multiply-adds, so the two rankings differ. The executor's gathers and scatters are left out, so "
               "a measured batch takes longer than the sum (`python -m drnet_core bench`).")
    top = audit.costliest(filtered, count, by=rankings[rank_by])
    name = "input" if "input" in top else "index"
    if len(top):
        ui.thumbnails([pixels[p] for p in top["position"]],
                         [f"{'' if name == 'input' else '#'}{i} {t}→{p} · {c:.{3 if rank_by == 'estimated ms' else 2}f}"
                          f"{' · unfamiliar' if o is True else ''}"
                          for i, t, p, c, o in zip(top[name], top["true"], top["predicted"], top[rankings[rank_by]],
                                                   top["ood"])],
                         per_row=6)  # eight to a row wrap their captions inside words at 1280 px
    st.dataframe(top.drop(columns=["position"]), hide_index=True, key="costliest_table",
                 column_config={"confidence": st.column_config.NumberColumn(format="percent"),
                                "mflops": st.column_config.NumberColumn("MFLOPs", format="%.3f"),
                                audit.TIME_COLUMN: st.column_config.NumberColumn("est. ms", format="%.3f"),
                                "active_params": st.column_config.NumberColumn("active params", format="%d"),
                                "ood": st.column_config.CheckboxColumn("unfamiliar"),
                                "ood_score": st.column_config.NumberColumn("unfamiliarity", format="%.1f")})


def figures_section(filtered, class_list):
    if not len(filtered):
        st.info("No input matches these filters.")
        return
    left, right = st.columns(2)
    ms_per_mflop = audit.ms_per_mflop(filtered)
    left.plotly_chart(figures.time_vs_flops_figure(filtered), key="time_vs_flops")
    right.markdown(f"Estimated time per MFLOP ranges from **{ms_per_mflop.min():.3f}** to "
                   f"**{ms_per_mflop.max():.3f} ms** across these inputs. Two things make multiply-adds "
                   "understate time, most of all for the cheapest inputs: the always-on part costs every input "
                   "the same, and pooling costs time but no multiply-adds.")
    left, right = st.columns(2)
    left.plotly_chart(figures.cost_per_class_figure(audit.cost_per_class(filtered), class_names=class_list),
                      key="cost_per_class")
    right.plotly_chart(figures.cost_vs_error_figure(filtered), key="cost_vs_error")
    # Full width: in the half column beside the costs per class its last column was cut at 1280 px.
    number = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(audit.cost_by_correctness(filtered), hide_index=True, key="correctness_table",
                 column_config={"mean MFLOPs": number, "median MFLOPs": number, "mean est. ms": number})
    st.subheader("Unfamiliar inputs")
    if calibration is None:
        st.warning(f"The unfamiliar-input warning is unavailable for this checkpoint: {calibration_origin}.")
        return
    st.caption(f"An input is unfamiliar when its penultimate features lie farther from every class than those of "
               f"{calibration.held_out_tpr:.0%} of the images held out of training (Mahalanobis distance over "
               f"{calibration.score_threshold:.1f}; {calibration_origin}).")
    st.dataframe(batch_audit.familiarity_cost(filtered), hide_index=True, key="familiarity_table",
                 column_config={"mean MFLOPs": number, "max MFLOPs": number,
                                "mean confidence": st.column_config.NumberColumn(format="percent")})


def costs_tab() -> None:
    source = st.radio("Inputs", SOURCES, horizontal=True, key=state.bound("audit_source", SOURCES[0], options=SOURCES))
    state.publish("audit_source")
    found = evaluation_table() if source == SOURCES[0] else uploaded_table()
    if found is None:
        return
    table, pixels, set_name, run = found
    st.caption(f"Executed multiply-adds and estimated time per input on {set_name} at tau {settings.tau:g}, "
               f"threshold {settings.threshold:g}.")
    table.insert(0, "position", range(len(table)))
    class_list = list(classes) + ([batch_audit.UNLABELLED] if (table["true"] == batch_audit.UNLABELLED).any() else [])
    chosen, correctness, range_column = class_filter(table, class_list)
    cost_range = cost_range_filter(table, range_column)
    state.publish("true_classes", "answers")
    filtered = audit.filter_table(table, classes=chosen, correctness=correctness, mflops_range=cost_range)
    headline(filtered, table)
    costliest_section(filtered, pixels)
    figures_section(filtered, tuple(class_list))
    times = caches.time_table(settings.checkpoint, settings.dataset_name)
    whole = (float(table["mflops"].min()), float(table["mflops"].max()))
    narrowed = None if tuple(cost_range) == whole else cost_range  # the whole range filters nothing
    origin = audit.provenance(settings.checkpoint.sha256, run, set_name, checkpoint_name=settings.checkpoint.name,
                              filters=audit.describe_filters(chosen, correctness, narrowed),
                              timing_machine=audit.machine_description(times.device))
    # Written when the button is clicked: a page run would otherwise build and send the CSV every time.
    st.download_button("Download per-instance results (CSV)", lambda: audit.to_csv(filtered.drop(columns=["position"]), origin),
                       file_name=audit.csv_file_name(settings.checkpoint.name, settings.tau, settings.threshold),
                       mime="text/csv", key="download_csv", icon=":material/download:")


def worst_case_tab() -> None:
    st.markdown("How much cost can an attacker force? Projected gradient ascent on the routers' cost, within an "
                "L-infinity budget eps in pixel space, then the executed MFLOPs of a real routed run at the "
                "checkpoint's default setting. Nothing can pass the dense cost, where every branch runs.")
    limit = st.slider("Test images searched", 10, 100, step=10, key=state.bound("sponge_limit", 20, low=10, high=100))
    budgets = st.multiselect("Budgets eps (x 1/255)", [1, 2, 4, 8, 16, 32], key="sponge_budgets", default=[2, 8])
    state.publish("sponge_limit")
    if not budgets:
        st.info("Choose at least one budget.")
        return
    if not st.toggle("Run the search", key="sponge_run",
                     help="A few seconds per image and budget on a CPU; the results are kept for the next visit."):
        return
    rows = caches.sponge_sweep(settings.checkpoint, limit, tuple(sorted(b / 255 for b in budgets)))
    st.plotly_chart(sponge_figures.sponge_sweep_figure(rows), key="sponge_figure")
    st.dataframe(rows, hide_index=True, key="sponge_table")
    st.caption("`python -m drnet_core sponge --eps 0.0314 --limit 300 --json` gives the same figures from the "
               "command line (docs/RELIABILITY.md has the shipped checkpoint's).")


TABS = {"Costs": costs_tab, "Worst case": worst_case_tab}
# Only the open tab runs; the open tab is in the URL.
for tab, draw in zip(st.tabs(list(TABS), key="audit_tab", bind="query-params"), TABS.values()):
    if tab.open:
        with tab:
            draw()

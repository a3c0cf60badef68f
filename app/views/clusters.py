"""Routing clusters: group the evaluation set by routing vector, embed it in 2-D, and describe each cluster."""
from __future__ import annotations

import numpy as np
import streamlit as st

from drnet_app import caches, evaluation, state, ui
from drnet_core.analysis import clusters
from drnet_core.figures import charts as figures, routing_graph
from drnet_core.compute_gate import heavy_work

settings = state.current_settings()
model, meta = caches.model_and_meta(settings.checkpoint)
classes = settings.class_names
evaluated = evaluation.limited_set(settings)

st.title("Routing clusters")
st.caption(f"Do inputs that route alike belong together? Routing vectors of {evaluated.name} at tau {settings.tau:g}, "
           f"threshold {settings.threshold:g}.")

# The first box holds the longest choice ("selected-branch mask"): wider, so that it is not cut at 1280 px.
c1, c2, c3, c4, c5 = st.columns([1.4, 1, 1, 1, 1])
kind = c1.selectbox("Routing vector", clusters.VECTOR_KINDS, format_func={"mask": "selected-branch mask",
                                                                          "weights": "branch weights"}.get,
                    key=state.bound("vector", "mask", options=clusters.VECTOR_KINDS))
method = c2.selectbox("Clustering", clusters.CLUSTER_METHODS, format_func={"kmeans": "k-means",
                                                                           "agglomerative": "agglomerative"}.get,
                      key=state.bound("method", "kmeans", options=clusters.CLUSTER_METHODS))
metrics = clusters.METRICS if method == "agglomerative" else ("euclidean",)
if kind == "weights" and method == "agglomerative":
    metrics = ("euclidean",)
metric_key = state.bound("metric", metrics[0], options=clusters.METRICS)
if st.session_state[metric_key] not in metrics:
    st.session_state[metric_key] = metrics[0]
metric = c3.selectbox("Distance", metrics, key=metric_key,
                      help="k-means always uses Euclidean distance; Hamming and Jaccard compare masks.")
k = c4.slider("Clusters k", 2, 12, key=state.bound("k", 4, low=2, high=12))
embedding = c5.selectbox("Embedding", clusters.EMBEDDINGS, format_func=str.upper,
                         key=state.bound("embedding", "pca", options=clusters.EMBEDDINGS))
state.publish("vector", "method", "metric", "k", "embedding")


run = evaluation.routed_run(settings)
try:
    with st.spinner("Clustering and embedding…", show_time=True), heavy_work():
        result, coords, vectors = caches.clustered(settings.checkpoint, settings.dataset_name, settings.eval_limit,
                                                   settings.tau, settings.threshold, settings.noise_seed,
                                                   kind, method, metric, k, embedding)
except ValueError as error:
    st.error(str(error))
    st.stop()

ami = clusters.adjusted_mutual_information(result.labels, run.labels.numpy())
m1, m2, m3 = st.columns([2, 1, 1])  # room for the long AMI label
m1.metric("Adjusted mutual information (clusters vs. classes)", f"{ami:.3f}",
          help="0: clusters share no more with the classes than chance; 1: clusters are the classes.")
m2.metric("Clusters found", f"{result.k}")
if result.k < k:
    m2.caption(f"{k} asked: there are fewer distinct paths.")
m3.metric("Distinct paths", f"{len(np.unique(run.path_masks.numpy(), axis=0)):,}")

color_by = st.radio("Colour by", ["cluster", "class", "FLOPs", "correctness"], horizontal=True,
                    key=state.bound("color", "cluster", options=["cluster", "class", "FLOPs", "correctness"]))
state.publish("color")
labels = run.labels.numpy()
predictions = run.predictions.numpy()
names = np.asarray(classes, dtype=object)
values = {"cluster": result.labels + 1, "class": names[labels], "FLOPs": run.mflops.numpy(),
          "correctness": np.where(run.correct.numpy(), "correct", "wrong")}[color_by]
split_index = evaluated.indices.numpy() if evaluated.indices is not None else np.arange(len(labels))
hover = [f"#{i}: {names[t]} → {names[p]}, cluster {c + 1}, {f:.3f} MFLOPs"
         for i, t, p, c, f in zip(split_index, labels, predictions, result.labels, run.mflops.numpy())]
palette = {"cluster": figures.cluster_palette(result.k), "class": figures.class_palette(classes),
           "correctness": figures.OUTCOME_COLORS}.get(color_by)
st.plotly_chart(figures.embedding_figure(coords, values, color_by, hover, categorical=color_by != "FLOPs",
                                         title=f"{embedding.upper()} of routing vectors, coloured by {color_by}",
                                         color_map=palette),
                key="embedding_chart")

# Table and class mix one above the other: beside the class mix, eight columns did not fit at 1280 px.
summary = clusters.cluster_summary(result, run, classes)
st.dataframe(summary, hide_index=True, key="cluster_table", width="stretch",
             column_config={"cluster": st.column_config.NumberColumn(width="small"),
                            "size": st.column_config.NumberColumn(width="small"),
                            "share": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1),
                            "dominant share": st.column_config.NumberColumn(format="percent"),
                            "accuracy": st.column_config.NumberColumn(format="percent"),
                            "mean MFLOPs": st.column_config.NumberColumn(format="%.3f"),
                            "distinct paths": st.column_config.NumberColumn(width="small")})
st.plotly_chart(figures.class_mix_figure(clusters.class_mix(result, run, classes), class_names=classes),
                key="class_mix")

st.subheader("One cluster up close")
cluster_key = state.bound("cluster", 0, low=0, high=result.k - 1)
if st.session_state[cluster_key] >= result.k:
    st.session_state[cluster_key] = 0  # fewer clusters than before: the chosen one no longer exists
chosen = st.selectbox("Cluster", list(range(result.k)), format_func=lambda c: f"cluster {c + 1}", key=cluster_key)
state.publish("cluster")
exemplar_positions = clusters.exemplars(result, vectors, chosen, count=8)
ui.thumbnails([evaluated.images[p] for p in exemplar_positions],
                 [f"#{split_index[p]}: {names[labels[p]]}" for p in exemplar_positions])
weights, mask = clusters.typical_path(result, run, chosen, model.architecture())
graph = routing_graph.routing_graph_of_cells(model.architecture(), weights, mask)
st.plotly_chart(routing_graph.routing_figure(graph, f"Typical path of cluster {chosen + 1} (branches most members run, "
                                                    "mean weights)"), key="cluster_path")

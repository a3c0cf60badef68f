"""How it works: DRNets in plain language, and an interactive Gumbel-Softmax demo on one connection."""
from __future__ import annotations

import numpy as np
import streamlit as st

from drnet_app import caches, evaluation, state, ui
from drnet_core.analysis import explorer
from drnet_core.figures import charts as figures

settings = state.current_settings()
model, meta = caches.model_and_meta(settings.checkpoint)
images = caches.evaluation_set()
classes = settings.class_names

st.title("How it works")
st.markdown(
    """
A **Dynamic Routing Network** (DRNet; Cai, Shu, Wang & Ooi, 2019) does not run the same computation for every input.
The network is a chain of **cells**. Inside a cell, every **connection** between two nodes holds several candidate
**branches**: separable and dilated convolutions, poolings, the identity. (The shipped model keeps all but the
poolings: they cost no multiply-adds, so a router saving FLOPs picks them, yet on a CPU they cost real time.)
A small **router** looks at the cell's input and scores every branch of every connection *for this input*.

The scores become weights with a temperature-scaled softmax, **softmax((scores + noise) / tau)**, one per
connection. A branch **runs only if its weight reaches the threshold**; the others are skipped and cost nothing.
So an easy input can take a cheap path and a hard one a costlier path.

* **Temperature tau.** Low tau sharpens the weights: the best branch takes almost all of the weight and few branches
  pass the threshold. High tau flattens them towards 1 / branches, so with a low threshold many branches run.
* **Threshold.** 0 runs every branch: the dense network. Higher thresholds skip more.
* **Gumbel noise.** During training random Gumbel noise is added to the scores so the network explores paths
  (the *Gumbel-Softmax* trick). Switch it on in the sidebar to see how the same input can take different paths.

The demo below shows one connection of the network for one test image at the sidebar's tau and threshold: move
tau in the sidebar and watch the weights reshape and branches cross the threshold.
"""
)

# The taus the curve below is drawn at: the slider's range, log-spaced like the curve's axis.
DEMO_TAUS = np.geomspace(0.05, 5.0, 60)

gallery = explorer.gallery_positions(images.labels, per_class=1)
c1, c2, c3 = st.columns(3)
position = c1.selectbox("Test image", gallery, format_func=lambda p: classes[int(images.labels[p])],
                        key=state.bound("demo_image", gallery[0], options=gallery))
prepared = evaluation.gallery_image(position)
inspected = caches.inspection(settings.checkpoint, evaluation.image_key(prepared), prepared.model_input,
                              settings.tau, settings.threshold, None)
# Until a link or the widgets say otherwise, show the connection whose weights move most with tau: many
# connections are saturated (one branch at weight ~1 over most of the range) and would show nothing.
default_cell, default_connection = 0, 0
if "demo_cell" not in st.session_state or "demo_connection" not in st.session_state:
    default_cell, default_connection = explorer.most_tau_sensitive_connection(inspected, DEMO_TAUS)
cell = c2.selectbox("Cell", list(range(len(model.cells))), format_func=lambda c: f"cell {c + 1}",
                    key=state.bound("demo_cell", default_cell, low=0, high=len(model.cells) - 1))
connections = model.cells[cell].connections
connection_key = state.bound("demo_connection", min(default_connection, len(connections) - 1), low=0,
                             high=len(connections) - 1)
if st.session_state[connection_key] >= len(connections):
    st.session_state[connection_key] = 0
connection = c3.selectbox("Connection", list(range(len(connections))),
                          format_func=lambda e: f"node {connections[e][0]} → node {connections[e][1]}", key=connection_key)
d1, d2, d3 = st.columns([2, 1, 1])
# One tau on every page: the demo shows the sidebar's, so what it explains is what the other views evaluate.
tau = settings.tau
d1.markdown(f"**Temperature tau: {tau:g}**, the sidebar's. Move it there to reshape the weights below.")
noisy = d2.toggle("Add Gumbel noise", key=state.bound("demo_noise", False))
seed = d3.number_input("Noise seed", 0, 10_000, step=1, key=state.bound("demo_seed", 0, low=0, high=10_000),
                       disabled=not noisy)
state.publish("demo_image", "demo_cell", "demo_connection", "demo_noise", "demo_seed")

logits = explorer.connection_logits(inspected, cell, connection)
noise = explorer.connection_noise(model, int(seed), cell, connection) if noisy else None
branch_names = model.cells[cell].branch_names
curve = explorer.gumbel_softmax_demo(logits, DEMO_TAUS, threshold=settings.threshold, noise=noise)
now = explorer.gumbel_softmax_demo(logits, np.array([tau]), threshold=settings.threshold, noise=noise)

left, right = st.columns([1, 3])
left.image(ui.enlarge(prepared.pixels, 5), caption=f"{classes[int(images.labels[position])]} (test image)",
           width="stretch")
selected = [branch_names[b] for b in now.loc[now["selected"], "branch"]]
left.metric("Branches that run", f"{len(selected)} of {len(branch_names)}")
left.metric("Largest weight", f"{now['weight'].max():.3f}")
left.caption(f"Uniform weights would be {1 / len(branch_names):.3f} each.")
left.markdown(("Running: " + ", ".join(f"`{name}`" for name in selected)) if selected else
              "Nothing passes the threshold: this connection is skipped.")
right.plotly_chart(figures.connection_weights_figure(
    now["weight"].to_numpy(), model.architecture().palette(branch_names), settings.threshold,
    f"Weights at tau {tau:g}, threshold {settings.threshold:g}" + (f", noise seed {seed}" if noisy else "")),
    key="demo_bars")
st.plotly_chart(figures.gumbel_demo_figure(curve, model.architecture().palette(branch_names), settings.threshold, tau), key="demo_curve")
st.caption("The router's scores for this connection come from the real network on this image "
           f"(cell {cell + 1}); tau and the threshold are the sidebar's, and the curve shows every other tau.")

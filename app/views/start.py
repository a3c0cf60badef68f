"""Start here: what a DRNet is, how to read the routing graph, a guided tour of prepared views, and
where the loaded checkpoint really routes."""
from __future__ import annotations

import streamlit as st

from drnet_app import caches, evaluation, state
from drnet_core.analysis import payoff, tour
from drnet_core.figures import routing_graph

settings = state.current_settings()
model, meta = caches.model_and_meta(settings.checkpoint)
images = caches.evaluation_set()
classes = settings.class_names

st.title("Start here")
st.markdown(
    "A **Dynamic Routing Network** (DRNet) is a neural network that decides, for each input, which of its parts "
    "to run. Each of its cells offers several candidate branches between its nodes, and a small router looks at "
    "the input and switches on only the branches it weighs at or above a threshold. So an easy image can take a "
    "cheap path and a hard one a costlier path, and the compute per image is really saved, not just masked.")

st.subheader("How to read the routing graph")
steps = tour.tour_steps(images.labels, classes, settings.tau, settings.threshold, indices=images.indices)
example_position = int(steps[0].params["image"])
example = evaluation.gallery_image(example_position)
result = caches.inspection(settings.checkpoint, evaluation.image_key(example), example.model_input, settings.tau,
                           settings.threshold, settings.noise_seed)
cell = model.cells[0]
connections = ", ".join(f"n{source}→n{target}" for source, target in cell.connections)
key_rows = "\n".join(f'<span style="color:{row["color"]}">■</span> `{row["branch"]}`: {row["what"]}'
                     + "  " for row in tour.branch_key(cell.branch_names))
graph_text, graph_figure = st.columns([2, 3], gap="large")
graph_text.markdown(
    f"* **Nodes.** Each shaded block is a cell. In a cell, **n0** is its input and "
    f"{', '.join(f'**n{n}**' for n in range(1, cell.nodes_per_cell + 1))} are the nodes it computes; each sums "
    "what arrives from the nodes before it. The cell's output is its input plus its nodes, so a cell that runs "
    "nothing passes its input on.\n"
    f"* **Connections.** Every pair of nodes is a connection ({connections}); a connection holds one candidate "
    f"branch of each type ({len(cell.branch_names)} here).\n"
    "* **Colours.** A branch that ran is drawn in its type's colour, wider and more opaque the higher its "
    "weight; a grey one was skipped. Hover a branch for its weight and cost.\n"
    "* **Identity** is the free choice: it hands its input on, scaled by its weight like every branch, with no "
    "multiply-adds. A cell whose connections run only identity costs nothing beyond its router.")
graph_text.markdown(key_rows, unsafe_allow_html=True)
graph = routing_graph.routing_graph(result)
example_name = tour.gallery_name(example_position, classes[int(images.labels[example_position])], images.indices)
graph_figure.plotly_chart(routing_graph.routing_figure(graph, f"Example: {example_name}", height=380),
                          key="start_graph")

st.subheader("A guided tour in five steps")
st.caption(f"Each link opens a view in a new tab, prepared as described, at tau {settings.tau:g} and threshold "
           f"{settings.threshold:g} unless the step says otherwise. Copy a link to share that exact view.")
for number, step in enumerate(steps, start=1):
    st.markdown(f"{number}. **[{step.title}]({tour.tour_link(step)})**: {step.what_to_see}")

st.subheader("Where this model really routes")
run = evaluation.routed_run(settings)
note = tour.cell_routing_note(payoff.routing_health(model, run))
st.markdown(f"On {evaluation.limited_set(settings).name} at tau {settings.tau:g}, threshold {settings.threshold:g}: "
            f"{note['sentence']}")
if note["barely"]:
    st.markdown(
        "Why: the routers are trained to keep the compute within a budget, and a branch choice that does not "
        "change the answer is worth nothing to them. Where one cheap pattern serves nearly every image, the "
        "router learns to send nearly every image that way, so the per-image decisions are made in the cells "
        "that route. The collapse alarm on **Does routing pay off?** tracks this for any setting.")

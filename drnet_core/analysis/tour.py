"""A guided tour for a lesson: links that open the explorer's views in a prepared state, the key to
the routing graph, and what a checkpoint's measured routing health says about its cells.

Every view restores its state from the URL's query parameters (the parameter names are the views'
widget keys), so a tour step is a view's URL path plus parameters; `tour_link` writes it as a link
relative to the app's root page, which keeps working behind a proxy that serves the app under a path.
"""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

import torch

from drnet_core.net.ops import OPS
from drnet_core.analysis.payoff import share_text


@dataclass(frozen=True)
class TourStep:
    title: str
    view: str  # the view's URL path (app/navigation.py)
    params: dict = field(default_factory=dict)  # query parameters: the state the view opens in
    what_to_see: str = ""  # one sentence for the class
    expect: tuple[str, ...] = ()  # texts the opened view shows in that state (the browser test reads them)
    metrics: tuple[tuple[str, str], ...] = ()  # (label, value) of metrics the opened view shows


def tour_link(step: TourStep) -> str:
    """The step's URL relative to the app's root page: `<view>?<parameters>`."""
    query = urllib.parse.urlencode({key: _text(value) for key, value in step.params.items()})
    return f"{step.view}?{query}" if query else step.view


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)


def first_of_class(labels: torch.Tensor, class_names: tuple[str, ...], wanted: str, fallback: int) -> tuple[int, str]:
    """(position, class name) of the first image of class `wanted` in a set, else of class `fallback`'s
    first image: a checkpoint trained on other classes still gets a tour."""
    labels = torch.as_tensor(labels)
    index = class_names.index(wanted) if wanted in class_names else fallback % len(class_names)
    if not bool((labels == index).any()):
        index = int(labels[0])
    return int((labels == index).nonzero()[0, 0]), class_names[index]


def gallery_name(position: int, class_name: str, indices=None) -> str:
    """How Inspect names a gallery image: "<class> · test image #<index in the split>"."""
    index = int(indices[position]) if indices is not None else position
    return f"{class_name} · test image #{index}"


def tour_steps(labels: torch.Tensor, class_names: tuple[str, ...], tau: float, threshold: float, *,
               indices=None, budget_mflops: float = 3.0, costliest: int = 8) -> list[TourStep]:
    """Five steps, each a view in a prepared state at setting (tau, threshold).

    labels/indices: the evaluation set's labels and split indices (Inspect's gallery is the first
    images of each class). The images are a sneaker, a shirt and a coat where the classes have them.
    """
    setting = {"tau": float(tau), "threshold": float(threshold)}
    sneaker, sneaker_class = first_of_class(labels, class_names, "Sneaker", 0)
    shirt, shirt_class = first_of_class(labels, class_names, "Shirt", 1)
    coat, coat_class = first_of_class(labels, class_names, "Coat", 2)
    sneaker_name, shirt_name = gallery_name(sneaker, sneaker_class, indices), gallery_name(shirt, shirt_class, indices)
    demo_tau = 1.0 if tau != 1.0 else 0.5
    return [
        TourStep("One image's path", "inspect", {**setting, "image": sneaker, "tab": "Routing path"},
                 f"The routing graph of a {sneaker_class.lower()}: which branches ran in each cell, and what that "
                 "cost against the dense network.", (f"Routing path of {sneaker_name}",)),
        TourStep(f"A {sneaker_class.lower()} and a {shirt_class.lower()} side by side", "inspect",
                 {**setting, "image": sneaker, "tab": "Compare", "compare": "Another image", "image_b": shirt},
                 "Two images, two paths: the branches both ran, and those only one of them ran.",
                 (f"B ({shirt_name})", "Path diff")),
        TourStep("Temperature at work", "how-it-works", {"tau": demo_tau, "threshold": float(threshold),
                                                         "demo_image": coat},
                 f"One connection's branch weights for a {coat_class.lower()} at tau {demo_tau:g}; move tau in the "
                 "sidebar and watch the weights sharpen or flatten and branches cross the threshold.",
                 (f"Weights at tau {demo_tau:g}",)),
        TourStep("Does routing pay off?", "payoff", {**setting, "budget": float(budget_mflops)},
                 f"The verdict against static networks of the same cost, and the most accurate setting within "
                 f"{budget_mflops:g} mean MFLOPs per image.", (f"Within {budget_mflops:g} MFLOPs:",)),
        TourStep("The costliest mistakes", "audit", {**setting, "answers": "incorrect", "rank_by": "MFLOPs",
                                                     "top": costliest},
                 f"The {costliest} misclassified images that cost the most: does the network spend more where it "
                 "struggles?", ("Costliest inputs",), (("Accuracy", "0.0%"),)),
    ]


def branch_key(branch_names: tuple[str, ...]) -> list[dict]:
    """One row per branch type the model holds: name, its colour in every routing figure (from the
    registry, `ops.OPS`) and what it does."""
    return [{"branch": name, "color": OPS[name].color, "what": describe_branch(name)} for name in branch_names]


def describe_branch(name: str) -> str:
    """A plain-words description of a registered branch type, read from its name."""
    if name == "identity":
        return "passes its input on (times its weight): no multiply-adds, the cheapest choice"
    kind, _, size = name.rpartition("_")
    words = {"sep_conv": "separable convolution", "dil_conv": "dilated separable convolution (wider view, same cost)",
             "avg_pool": "average pooling (no multiply-adds, but real time)",
             "max_pool": "max pooling (no multiply-adds, but real time)"}
    return f"{words.get(kind, kind.replace('_', ' '))}, {size}" if kind else name.replace("_", " ")


def cell_routing_note(health: list[dict]) -> dict:
    """What a `payoff.routing_health` table says about where routing happens.

    Returns `barely` (the cells `routing_health` calls collapsed: few selection patterns, or one pattern
    for most inputs), `routes` (the others) and `sentence`, a statement that holds for the numbers given.
    Shares are written as the collapse alarm writes them (`payoff.share_text`).
    """
    barely_cells = [row for row in health if row["collapsed"]]
    routing_cells = [row for row in health if not row["collapsed"]]

    def cells(rows: list[dict]) -> str:
        names = [str(row["cell"]) for row in rows]
        return ("cell " + names[0]) if len(names) == 1 else "cells " + ", ".join(names[:-1]) + " and " + names[-1]

    def patterns(row: dict) -> str:
        count = row["distinct_patterns"]
        return (f"{count:,} selection pattern{'s' if count != 1 else ''}, the most common for "
                f"{share_text(row['largest_pattern_share'])} of the images")

    parts = []
    if barely_cells:
        verb = "barely routes" if len(barely_cells) == 1 else "barely route"
        parts.append(f"{cells(barely_cells).capitalize()} {verb}: "
                     + "; ".join(f"cell {row['cell']} uses {patterns(row)}" for row in barely_cells) + ".")
    if routing_cells:
        verb = "routes" if len(routing_cells) == 1 else "route"
        lead = "Every cell routes" if not barely_cells else f"{cells(routing_cells).capitalize()} {verb}"
        parts.append(f"{lead} per image: " + "; ".join(f"cell {row['cell']} uses {patterns(row)}"
                                                       for row in routing_cells) + ".")
    return {"barely": [row["cell"] for row in barely_cells], "routes": [row["cell"] for row in routing_cells],
            "sentence": " ".join(parts)}

"""Benchmark the explorer's interactive paths on this machine.

    python -m scripts.bench_app [--limit N] [--repeats R] [--json out.json]

Measures, with the shipped checkpoint:
  * slider move, cold cache: route the whole evaluation set (the full Fashion-MNIST test split when
    installed) at a setting not seen before, a step away from the default, and summarise it, as the
    app does when tau or the threshold moves and nothing is cached;
  * upload to graph: decode and prepare a PNG upload, route it, build the networkx routing graph and
    its plotly figure, serialised to JSON as Streamlit sends it;
  * one attribution: captum Integrated Gradients (24 steps) for the predicted class, and for the
    router's expected MFLOPs.
Reports the median of R repeats of each, in seconds.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from drnet_core.analysis import attribution, explorer

from drnet_core.figures import routing_graph
from drnet_core.runtime import configure_cpu_memory
from drnet_core.net.checkpoint import default_device, load_checkpoint
from drnet_core.data.datasets import FASHION_CLASSES, load_test_set, to_model_input
from drnet_core.analysis.evaluate import default_setting, run_routed, summarize
from drnet_core.data.images import image_from_bytes

log = logging.getLogger("bench_app")


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def bench_slider(model, images, inputs, repeats: int, tau: float, threshold: float) -> list[float]:
    # A fresh setting every repeat, each a small slider move away from the checkpoint's default
    # (which is where the app opens): nothing can be reused, as with a cold cache.
    settings = [(tau * (1 + 0.05 * (i + 1)), threshold + 0.01 * (i + 1)) for i in range(repeats)]
    times = []
    for moved_tau, moved_threshold in settings:
        seconds, _ = timed(lambda: summarize(run_routed(model, inputs, images.labels, tau=moved_tau,
                                                        threshold=moved_threshold),
                                             model, images.name, FASHION_CLASSES))
        times.append(seconds)
    return times


def bench_upload(model, upload: bytes, tau: float, threshold: float, repeats: int) -> list[float]:
    def once():
        prepared = image_from_bytes(upload, "garment.png")
        result = explorer.inspect_input(model, prepared.model_input, tau=tau, threshold=threshold)
        graph = routing_graph.routing_graph(result)
        return routing_graph.routing_figure(graph, "routing path").to_json()

    once()  # first call pays plotly's one-off imports and validators
    return [timed(once)[0] for _ in range(repeats)]


def bench_attribution(model, model_input, tau: float, threshold: float, repeats: int) -> dict[str, list[float]]:
    target = explorer.inspect_input(model, model_input, tau=tau, threshold=threshold).prediction
    return {
        "class": [timed(lambda: attribution.class_attribution(model, model_input, target, tau=tau, threshold=threshold,
                                                              class_names=FASHION_CLASSES))[0] for _ in range(repeats)],
        "cost": [timed(lambda: attribution.cost_attribution(model, model_input, tau=tau, threshold=threshold))[0]
                 for _ in range(repeats)],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="route only the first N evaluation images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    configure_cpu_memory()  # as the CLI and the app do
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model, meta = load_checkpoint(device=default_device(), fold_batch_norms=True)  # as the app does
    tau, threshold = default_setting(meta)
    images = load_test_set().subset(args.limit)
    inputs = to_model_input(images.images)
    picture = Image.fromarray(255 - images.images[0].numpy()).resize((280, 280))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")

    slider = bench_slider(model, images, inputs, args.repeats, tau, threshold)
    upload = bench_upload(model, buffer.getvalue(), tau, threshold, max(args.repeats, 5))
    attributions = bench_attribution(model, inputs[:1], tau, threshold, args.repeats)
    report = {
        "device": str(model.device), "threads": torch.get_num_threads(), "evaluation_set": images.name,
        "slider_move_cold_s": statistics.median(slider),
        "upload_to_graph_s": statistics.median(upload),
        "class_attribution_s": statistics.median(attributions["class"]),
        "cost_attribution_s": statistics.median(attributions["cost"]),
        "repeats": args.repeats,
    }
    print(f"device {report['device']}, {report['threads']} threads, {images.name}")
    print(f"slider move, cold cache (route + summarise):  {report['slider_move_cold_s']:.2f} s")
    print(f"upload -> drawn routing graph:                {report['upload_to_graph_s']:.3f} s")
    print(f"attribution, predicted class (IG, 24 steps):  {report['class_attribution_s']:.2f} s")
    print(f"attribution, expected MFLOPs (IG, 24 steps):  {report['cost_attribution_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

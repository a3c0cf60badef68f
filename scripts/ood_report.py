"""Measure the unfamiliar-input warning: which score serves, and does `drnet audit` flag what it should?

    python -m scripts.ood_report --json docs/results/ood.json

1. Scores compared (max-softmax, energy, Mahalanobis on the penultimate features): AUROC and the
   false-positive rate at 95% TPR of Fashion-MNIST test images against every kind of non-garment picture
   (`drnet_core.data.ood_sets`), thresholds from the held-out training images.
2. Acceptance: a folder of Fashion-MNIST test images (class sub-folders) and non-garment pictures of the
   kinds the choice of score never looked at (`ood_sets.ACCEPTANCE_KINDS`) is audited with
   `python -m drnet_core audit FOLDER --json`, then the same set as a zip; the flagged shares per kind and
   whether both give the same rows.

Needs the shipped checkpoint's stored calibration (`python -m drnet_core calibrate-ood`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

from drnet_core.analysis import ood

from drnet_core.data import ood_sets
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint, sha256_of
from drnet_core.data.datasets import load_fashion_mnist, to_model_input
from drnet_core.data.held_out import held_out_set
from drnet_core.data.images import prepare_image
from drnet_core.analysis.ood_calibration import find_calibration

COUNTS = {"photo:china": 200, "noise:uniform": 100, "blank": 50, "photo:flower": 150, "photo:grace_hopper": 150,
          "digits": 300, "noise:gaussian": 100, "noise:salt_and_pepper": 100}
SEED = 1


def score_comparison(model, meta, calibration, fashion_test: int) -> dict:
    tau, threshold = calibration.tau, calibration.threshold
    held_out = held_out_set(meta)
    outputs = lambda inputs: ood.forward_outputs(model, inputs, tau=tau, threshold=threshold)  # noqa: E731
    held = ood.all_scores(outputs(to_model_input(held_out.images)), calibration.feature_model)
    test = load_fashion_mnist("test")
    familiar = ood.all_scores(outputs(to_model_input(test.images[:fashion_test])), calibration.feature_model)
    rows = {}
    for kind, count in COUNTS.items():
        pictures = ood_sets.pictures_of_kind(kind, count, SEED)
        inputs = torch.cat([prepare_image(p).model_input for p in pictures])
        unfamiliar = ood.all_scores(outputs(inputs), calibration.feature_model)
        rows[kind] = {"tuning": kind in ood_sets.TUNING_KINDS, **{
            name: ood.detection_metrics(familiar[name], unfamiliar[name], ood.threshold_at_tpr(held[name]))
            for name in ood.SCORES}}
    return {"fashion_test_images": fashion_test, "held_out_images": len(held_out), "kinds": rows}


def write_acceptance_set(folder: Path, fashion_test: int) -> None:
    test = load_fashion_mnist("test")
    names = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    for index in range(fashion_test):
        target = folder / names[int(test.labels[index])] / f"test_{index:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[index].numpy()).save(target)
    for kind in ood_sets.ACCEPTANCE_KINDS:
        target = folder / ("nongarment-" + kind.replace(":", "-").replace("_", "-"))
        target.mkdir(parents=True, exist_ok=True)
        for number, picture in enumerate(ood_sets.pictures_of_kind(kind, COUNTS[kind], SEED)):
            picture.save(target / f"{number:04d}.{'jpg' if kind.startswith('photo') else 'png'}")


def zip_folder(folder: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                handle.write(path, path.relative_to(folder).as_posix())


def run_audit(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "drnet_core", "audit", str(path), "--json"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def acceptance(fashion_test: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        folder, archive = Path(scratch) / "set", Path(scratch) / "set.zip"
        write_acceptance_set(folder, fashion_test)
        zip_folder(folder, archive)
        from_folder, from_zip = run_audit(folder), run_audit(archive)
    strip = lambda rows: [{k: v for k, v in row.items() if k != "source"} for row in rows]  # noqa: E731
    groups: dict[str, list[bool]] = {}
    for row in from_folder["rows"]:
        top = row["input"].split("/")[0]
        groups.setdefault(top if top.startswith("nongarment-") else "fashion-mnist-test", []).append(row["ood"])
    return {"command": "python -m drnet_core audit FOLDER --json (and the same set as a zip)",
            "rows": len(from_folder["rows"]), "skipped": len(from_folder["skipped"]),
            "folder_and_zip_rows_equal": strip(from_folder["rows"]) == strip(from_zip["rows"]),
            "flagged_share": {group: float(np.mean(flags)) for group, flags in sorted(groups.items())},
            "count": {group: len(flags) for group, flags in sorted(groups.items())},
            "cost_by_familiarity": from_folder["cost_by_familiarity"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion-test", type=int, default=500, help="Fashion-MNIST test images in the sets")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    model, meta = load_checkpoint(SHIPPED_CHECKPOINT, fold_batch_norms=True)
    calibration = find_calibration(sha256_of(SHIPPED_CHECKPOINT))
    if calibration is None:
        print("error: no stored calibration; run `python -m drnet_core calibrate-ood` first", file=sys.stderr)
        return 2
    report = {"calibration": calibration.describe(), "scores": score_comparison(model, meta, calibration,
                                                                               args.fashion_test),
              "acceptance": acceptance(args.fashion_test)}
    text = json.dumps(report, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Small builders shared by the tests: tiny models, IDX files written on the fly, the `drnet` command."""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from drnet_core.training.config import PRESETS
from drnet_core.net.model import DRNet

# Test images each page of the browser tests' served app evaluates (tests/conftest.py::server).
BROWSER_EVAL_LIMIT = 500


def tiny_model(seed: int = 0) -> DRNet:
    torch.manual_seed(seed)
    model = DRNet(PRESETS["tiny"].model)
    # Spread router logits so that thresholds between 0 and 1 select different branch sets.
    with torch.no_grad():
        for cell in model.cells:
            cell.router.mlp[-1].weight.mul_(20.0)
            cell.router.mlp[-1].bias.normal_(0, 2.0)
    return model.eval()


def randomize_batch_norms(module: torch.nn.Module) -> None:
    """Random running statistics and affine parameters, so that no batch norm is the identity map
    and a difference anywhere would show."""
    for norm in module.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_mean.normal_(0, 0.2)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.data.uniform_(0.5, 1.5)
            norm.bias.data.normal_(0, 0.2)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_fake_fashion(directory: Path, train: int = 96, test: int = 40, seed: int = 0) -> Path:
    """A learnable stand-in for Fashion-MNIST: each class is a bright bar at its own row."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 40, size=(count, 28, 28))
        for index, label in enumerate(labels):
            images[index, 2 + 2 * label: 4 + 2 * label, 4:24] = 230
        write_idx(directory / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz", labels)
    return directory


ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m drnet_core ARGS` in a fresh process, its output captured."""
    return subprocess.run([sys.executable, "-m", "drnet_core", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def shipped_gallery_input(class_index: int):
    """The shipped model, its default (tau, threshold) and the model input of the gallery's image of
    class `class_index` (the first test image of that class): (model, model_input, tau, threshold)."""
    from drnet_core.analysis import explorer
    from drnet_core.analysis.evaluate import default_setting
    from drnet_core.data.datasets import load_test_set
    from drnet_core.data.images import prepare_dataset_image
    from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint

    model, meta = load_checkpoint(SHIPPED_CHECKPOINT)
    images = load_test_set()
    position = explorer.gallery_positions(images.labels, per_class=1)[class_index]
    return (model, prepare_dataset_image(images.images[position]).model_input, *default_setting(meta))

"""Datasets: Fashion-MNIST from its IDX files, the shipped test subset, CIFAR-10 batches.

Nothing is ever downloaded. Fashion-MNIST is read from `--data-dir`, else `$DRNET_DATA`, else
/usr/share/datasets/fashion-mnist (Debian's `dataset-fashion-mnist` package). When the full test
split is missing, evaluation falls back to the class-balanced 2,000-image test subset shipped in
assets/, and every report names the set it used.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from drnet_core.resources import ASSETS

SHIPPED_SUBSET = ASSETS / "fashion_mnist_test_subset.npz"
DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# Checkpoints written before CIFAR-10 was supported name no dataset: they are Fashion-MNIST's.
DEFAULT_DATASET = "fashion-mnist"

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetError(RuntimeError):
    """A dataset is missing or unreadable; the message says how to provide it."""


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, H, W) or (N, H, W, 3) uint8
    labels: torch.Tensor  # (N,) int64
    name: str             # what the set is, for every report that uses it
    dataset: str = DEFAULT_DATASET
    indices: torch.Tensor | None = None  # positions in the original split, when a subset

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, count: int | None) -> "ImageSet":
        if count is None or count >= len(self):
            return self
        indices = self.indices[:count] if self.indices is not None else torch.arange(count)
        return ImageSet(self.images[:count], self.labels[:count], f"{self.name}, first {count}", self.dataset, indices)


def fashion_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    if data_dir:
        return Path(data_dir)
    if os.environ.get("DRNET_DATA"):
        return Path(os.environ["DRNET_DATA"])
    return DEFAULT_FASHION_DIR


def _fashion_help(directory: Path) -> str:
    return (f"Provide Fashion-MNIST's four IDX .gz files in {directory}: install Debian's package "
            "(`apt-get install dataset-fashion-mnist`, which puts them in /usr/share/datasets/fashion-mnist), "
            "or point `--data-dir` / the DRNET_DATA environment variable at a folder holding them.")


def read_idx(path: Path) -> np.ndarray:
    """Parse one gzipped IDX file (the format of LeCun's MNIST) into an array."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DatasetError(f"{path} is not a readable gzip file ({error}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
    dims = raw[3]
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DatasetError(f"{path} is truncated (header incomplete).")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    expected = int(np.prod(shape)) if shape else 0
    if len(raw) - header != expected:
        raise DatasetError(f"{path} is truncated or corrupt: header promises {expected} bytes, "
                           f"file holds {len(raw) - header}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> ImageSet:
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = fashion_data_dir(data_dir)
    image_file, label_file = (directory / name for name in _FASHION_FILES[split])
    for path in (image_file, label_file):
        if not path.is_file():
            raise DatasetError(f"Fashion-MNIST {split} split not found: {path} is missing. " + _fashion_help(directory))
    try:
        images, labels = read_idx(image_file), read_idx(label_file)
    except DatasetError as error:
        raise DatasetError(f"{error} {_fashion_help(directory)}") from None
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{image_file} / {label_file} do not hold matching 28x28 images and labels. "
                           + _fashion_help(directory))
    if labels.max(initial=0) > 9:
        raise DatasetError(f"{label_file} holds labels outside 0-9. " + _fashion_help(directory))
    name = f"Fashion-MNIST {split} split ({len(labels):,} images)"
    return ImageSet(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)), name)


def load_shipped_subset() -> ImageSet:
    with np.load(SHIPPED_SUBSET) as archive:
        images, labels, indices = archive["images"], archive["labels"], archive["indices"]
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)),
                    f"shipped Fashion-MNIST test subset ({len(labels):,} images)", indices=torch.from_numpy(indices))


def load_test_set(data_dir: str | os.PathLike | None = None, *, allow_subset: bool = True) -> ImageSet:
    """The full Fashion-MNIST test split, or the shipped subset when the split is not installed."""
    try:
        return load_fashion_mnist("test", data_dir)
    except DatasetError:
        if not allow_subset:
            raise
        return load_shipped_subset()


def balanced_subset_indices(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(labels).tolist():
        members = (labels == cls).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def write_shipped_subset(data_dir: str | os.PathLike | None = None, per_class: int = 200) -> Path:
    test = load_fashion_mnist("test", data_dir)
    indices = balanced_subset_indices(test.labels, per_class)
    np.savez_compressed(SHIPPED_SUBSET, images=test.images[indices].numpy(),
                        labels=test.labels[indices].numpy().astype(np.uint8), indices=indices.numpy())
    return SHIPPED_SUBSET


# ---- CIFAR-10 (python pickle batches) -------------------------------------------------------

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
# All a CIFAR-10 batch references when unpickled: numpy arrays (numpy 1 and 2 module names) and
# byte strings. Anything else is refused, so a tampered batch file cannot run code.
_CIFAR_PICKLE_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
})


def _cifar_help() -> str:
    return (f"Download the python version of CIFAR-10 ({CIFAR10_URL}), extract it with "
            "`tar xzf cifar-10-python.tar.gz` and pass the extracted 'cifar-10-batches-py' folder as --data-dir; "
            "it holds data_batch_1 ... data_batch_5 and test_batch.")


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python batch file -> (images uint8 (N, 32, 32, 3), labels int64 (N,))."""
    try:
        with open(path, "rb") as handle:
            # The batches were pickled by Python 2: their strings load as bytes.
            batch = _BatchUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # a corrupt pickle fails in many ways; all mean the same here
        raise DatasetError(f"{path} is not a readable CIFAR-10 python batch ({type(error).__name__}: {error}). "
                           + _cifar_help()) from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{path} is not a CIFAR-10 python batch (it holds a {type(batch).__name__}, not a dict).")
    batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DatasetError(f"{path} is not a CIFAR-10 python batch: it lacks 'data' or 'labels' "
                           f"(keys: {sorted(map(str, batch))}).")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' must be uint8 rows of 3072 values (3 x 32 x 32), "
                           f"found {data.dtype} with shape {data.shape}.")
    if labels.ndim != 1 or len(labels) != len(data):
        raise DatasetError(f"{path} holds {len(data)} images but {labels.size} labels.")
    if len(labels) and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path} holds labels outside 0-9.")
    # A row is the red plane, then green, then blue, each 32 rows of 32 pixels.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int64)


def load_cifar10(split: str, data_dir: str | os.PathLike | None) -> ImageSet:
    """CIFAR-10 from its standard python batches: data_batch_1..5 (train) and test_batch (test)."""
    if split not in _CIFAR_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not data_dir:
        raise DatasetError("CIFAR-10 needs --data-dir. " + _cifar_help())
    directory = Path(data_dir)
    if not directory.is_dir():
        raise DatasetError(f"CIFAR-10 folder {directory} does not exist. " + _cifar_help())
    paths = [directory / name for name in _CIFAR_FILES[split]]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise DatasetError(f"CIFAR-10 {split} split not found: {', '.join(missing)} missing in {directory}. "
                           + _cifar_help())
    images, labels = zip(*(read_cifar_batch(path) for path in paths))
    stacked = np.concatenate(images)
    return ImageSet(torch.from_numpy(stacked), torch.from_numpy(np.concatenate(labels)),
                    f"CIFAR-10 {split} split ({len(stacked):,} images)", dataset="cifar10")


def load_cifar10_test(data_dir: str | os.PathLike | None) -> ImageSet:
    return load_cifar10("test", data_dir)


# ---- the registry ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Dataset:
    load: Callable[..., ImageSet]  # (split, data_dir) -> the split's images
    load_test: Callable[..., ImageSet]  # (data_dir) -> the set evaluations report on
    # Per-channel mean and standard deviation of the training split, so that inputs are roughly
    # zero-mean, unit-variance.
    normalisation: tuple[tuple[float, ...], tuple[float, ...]]
    input_shape: tuple[int, int, int]  # (channels, height, width) of every image
    class_names: tuple[str, ...]
    preset: str  # the preset (config.PRESETS) whose network takes these images


DATASETS: dict[str, Dataset] = {
    # Evaluation falls back to the shipped test subset where the full test split is not installed.
    "fashion-mnist": Dataset(load_fashion_mnist, load_test_set, ((0.2860,), (0.3530,)), (1, 28, 28),
                             FASHION_CLASSES, "fashion"),
    "cifar10": Dataset(load_cifar10, load_cifar10_test, ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                       (3, 32, 32), CIFAR10_CLASSES, "cifar10-mobile"),
}


def dataset_named(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_of(meta: dict) -> str:
    """The dataset a checkpoint was trained on, from its metadata."""
    return meta.get("dataset", DEFAULT_DATASET)


def load_split(dataset: str, split: str, data_dir: str | os.PathLike | None = None) -> ImageSet:
    return dataset_named(dataset).load(split, data_dir)


def load_evaluation_set(dataset: str, data_dir: str | os.PathLike | None = None) -> ImageSet:
    """The test split evaluations report on (Fashion-MNIST: the shipped subset where the split is missing)."""
    return dataset_named(dataset).load_test(data_dir)


# ---- tensors ---------------------------------------------------------------------------------

def to_model_input(images: torch.Tensor, dataset: str = DEFAULT_DATASET) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, 3) -> normalised float (N, C, H, W)."""
    x = images.float().div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    mean, std = dataset_named(dataset).normalisation
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return ((x - mean_t) / std_t).contiguous(memory_format=torch.channels_last)


def augment(batch: torch.Tensor, generator: torch.Generator | None = None, pad: int = 2,
            erase_probability: float = 0.0) -> torch.Tensor:
    """Random translation by up to `pad` pixels, random horizontal flip and, with
    `erase_probability`, random erasing (Zhong et al. 2020), batched.

    Padding uses the border value so a shifted garment does not gain an artificial frame.
    """
    n, _, height, width = batch.shape
    padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    rows = (offsets[:, 0].view(n, 1) + torch.arange(height).view(1, height))  # (N, H)
    cols = (offsets[:, 1].view(n, 1) + torch.arange(width).view(1, width))    # (N, W)
    flip = torch.rand(n, generator=generator) < 0.5
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols)
    gathered = padded[torch.arange(n).view(n, 1, 1), :, rows.view(n, height, 1), cols.view(n, 1, width)]
    shifted = gathered.permute(0, 3, 1, 2)  # (N, C, H, W)
    if erase_probability > 0:
        shifted = random_erase(shifted, erase_probability, generator)
    return shifted.contiguous(memory_format=torch.channels_last)


def random_erase(batch: torch.Tensor, probability: float, generator: torch.Generator | None = None,
                 area: tuple[float, float] = (0.02, 0.33), aspect: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al., AAAI 2020): with `probability`, one rectangle of each image,
    covering `area` of it at an aspect ratio in `aspect`, is replaced by Gaussian noise.

    The input is normalised, so noise of mean 0 and std 1 matches the data's own statistics.
    """
    n, channels, height, width = batch.shape
    fraction = torch.empty(n).uniform_(*area, generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(aspect[0]), math.log(aspect[1]), generator=generator)
    ratio = log_ratio.exp()
    box_h = (fraction * height * width * ratio).sqrt().round().clamp(1, height)
    box_w = (fraction * height * width / ratio).sqrt().round().clamp(1, width)
    top = (torch.rand(n, generator=generator) * (height - box_h + 1)).floor()
    left = (torch.rand(n, generator=generator) * (width - box_w + 1)).floor()
    chosen = torch.rand(n, generator=generator) < probability
    ys, xs = torch.arange(height).view(1, height, 1), torch.arange(width).view(1, 1, width)
    inside = ((ys >= top.view(n, 1, 1)) & (ys < (top + box_h).view(n, 1, 1))
              & (xs >= left.view(n, 1, 1)) & (xs < (left + box_w).view(n, 1, 1)) & chosen.view(n, 1, 1))
    noise = torch.randn(batch.shape, generator=generator, dtype=batch.dtype)
    return torch.where(inside.unsqueeze(1), noise, batch)

"""Pictures that are not garments, from what installed packages ship: for measuring the unfamiliar-input warning.

Nothing is downloaded. Kinds:

* photo crops: random square crops of the sample photos scikit-learn (china.jpg, flower.jpg) and
  matplotlib (grace_hopper.jpg) ship;
* digits: scikit-learn's 8x8 handwritten digits, upscaled to 28x28;
* noise: uniform, Gaussian and salt-and-pepper noise at several sizes;
* blank: single-colour pictures, black to white.

Every picture is a PIL image that goes through the same intake as an upload (`images.prepare_image`).
`TUNING_KINDS` are the ones the choice of score may look at; `ACCEPTANCE_KINDS` are kept apart for the
acceptance check and never inform a choice.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

PHOTO_SOURCES = {"china": "sklearn", "flower": "sklearn", "grace_hopper": "matplotlib"}
TUNING_KINDS = ("photo:china", "noise:uniform", "blank")
ACCEPTANCE_KINDS = ("photo:flower", "photo:grace_hopper", "digits", "noise:gaussian", "noise:salt_and_pepper")


def sample_photo(name: str) -> Image.Image:
    """One of `PHOTO_SOURCES` as an RGB picture, read from the installed package."""
    if PHOTO_SOURCES.get(name) == "sklearn":
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(f"{name}.jpg"))
    if PHOTO_SOURCES.get(name) == "matplotlib":
        from matplotlib import cbook

        with cbook.get_sample_data(f"{name}.jpg") as handle:
            return Image.open(handle).convert("RGB")
    raise ValueError(f"unknown sample photo {name!r}; known: {', '.join(PHOTO_SOURCES)}")


def photo_crops(name: str, count: int, seed: int) -> list[Image.Image]:
    """`count` random square crops of a sample photo, each between 48 px and the photo's short side."""
    photo = sample_photo(name)
    rng = np.random.default_rng(seed)
    short = min(photo.size)
    crops = []
    for _ in range(count):
        side = int(rng.integers(48, short + 1))
        left = int(rng.integers(0, photo.width - side + 1))
        top = int(rng.integers(0, photo.height - side + 1))
        crops.append(photo.crop((left, top, left + side, top + side)))
    return crops


def digits(count: int, seed: int) -> list[Image.Image]:
    """`count` of scikit-learn's handwritten digits (8x8, 0-16), scaled to 0-255 and upscaled to 28x28."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    chosen = np.random.default_rng(seed).choice(len(images), size=min(count, len(images)), replace=False)
    return [Image.fromarray(np.rint(images[i] * (255 / 16)).astype(np.uint8)).resize((28, 28), Image.Resampling.BICUBIC)
            for i in chosen]


def noise(kind: str, count: int, seed: int) -> list[Image.Image]:
    """`count` noise pictures of sizes 28 to 256 px: 'uniform', 'gaussian' (grey, sd 64) or 'salt_and_pepper'."""
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(count):
        side = int(rng.choice([28, 64, 128, 256]))
        colour = bool(rng.integers(0, 2))
        shape = (side, side, 3) if colour else (side, side)
        if kind == "uniform":
            values = rng.integers(0, 256, size=shape)
        elif kind == "gaussian":
            values = rng.normal(128, 64, size=shape)
        elif kind == "salt_and_pepper":
            values = np.where(rng.random(shape) < rng.uniform(0.05, 0.5), 255, 0)
        else:
            raise ValueError(f"unknown noise kind {kind!r}")
        pictures.append(Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)))
    return pictures


def blank(count: int, seed: int) -> list[Image.Image]:
    """`count` single-colour pictures (grey levels and colours, 28 to 256 px)."""
    rng = np.random.default_rng(seed)
    return [Image.new("RGB", (int(side),) * 2, tuple(int(v) for v in rng.integers(0, 256, 3)))
            for side in rng.choice([28, 64, 128, 256], size=count)]


def pictures_of_kind(kind: str, count: int, seed: int = 0) -> list[Image.Image]:
    """`count` pictures of one kind: 'photo:<name>', 'digits', 'noise:<kind>' or 'blank'."""
    family, _, detail = kind.partition(":")
    if family == "photo":
        return photo_crops(detail, count, seed)
    if family == "noise":
        return noise(detail, count, seed)
    if kind == "digits":
        return digits(count, seed)
    if kind == "blank":
        return blank(count, seed)
    raise ValueError(f"unknown kind {kind!r}")

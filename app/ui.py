"""Small display helpers the views share: metric deltas and crisp enlarged images."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch
from PIL import Image


def nonzero_delta(text: str) -> str | None:
    """A formatted change ("+0.70%", "-1.234") as a metric's delta, or None when it rounds to nothing:
    Streamlit would draw an arrow for "+0.000"."""
    return None if float(text.strip("+-%")) == 0 else text


def enlarge(pixels, scale: int = 4) -> Image.Image:
    """A crisp, enlarged copy of a small grayscale image (browsers blur small images when scaling)."""
    array = np.asarray(pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels, dtype=np.uint8)
    image = Image.fromarray(array)
    return image.resize((array.shape[1] * scale, array.shape[0] * scale), Image.Resampling.NEAREST)


def crisp(image: Image.Image, side: int = 224) -> Image.Image:
    """Enlarge a small picture with nearest-neighbour sampling; leave large ones alone."""
    if max(image.size) >= side:
        return image
    scale = max(1, side // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def thumbnails(images, captions: list[str], per_row: int = 8) -> None:
    """A grid of enlarged thumbnails with captions."""
    images = list(images)
    for start in range(0, len(images), per_row):
        columns = st.columns(per_row)
        for column, image, caption in zip(columns, images[start:start + per_row], captions[start:start + per_row]):
            column.image(enlarge(image, 3), caption=caption, width="stretch")

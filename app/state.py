"""What identifies the app's state: the checkpoint in use, the sidebar's settings, and the URL query
parameters that carry them, so that a link reproduces a view. The sidebar that sets the settings is
sidebar.py; what is computed from them is cached in caches.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import streamlit as st


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file, identified by its path and the sha256 of its bytes; `name` is only its label.

    Equal checkpoints are the same weights whatever their label (an upload restored from a link is
    labelled by its digest, not by its file name), and `caches` keys them the same way.
    """

    path: str
    sha256: str
    name: str = field(compare=False)


@dataclass(frozen=True)
class Settings:
    """The sidebar's global settings; every cached result is keyed by the fields it depends on."""

    checkpoint: Checkpoint
    class_names: tuple[str, ...]  # the checkpoint's, read when the sidebar loads it
    tau: float
    threshold: float
    noise: bool
    seed: int
    eval_limit: int
    dataset_name: str

    @property
    def noise_seed(self) -> int | None:
        return self.seed if self.noise else None


def current_settings() -> Settings:
    return st.session_state["_settings"]


# ---- URL query parameters ----------------------------------------------------------------------

def _parse(raw: str, default):
    try:
        if isinstance(default, bool):
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(float(raw))
        if isinstance(default, float):
            value = float(raw)
            return value if np.isfinite(value) else default
        return type(default)(raw)
    except (TypeError, ValueError):
        return default


def bound(key: str, default, *, low=None, high=None, options=None) -> str:
    """Seed a widget's session state from the URL (once per session) and return its key.

    Out-of-range or unknown values from a hand-edited link fall back to the default.
    """
    if key not in st.session_state:
        value = default
        if key in st.query_params:
            value = _parse(st.query_params[key], default)
        if low is not None and not low <= value <= high:
            value = default
        if options is not None and value not in options:
            value = default
        st.session_state[key] = value
    return key


def publish(*keys: str) -> None:
    """Mirror the current widget values into the URL so a link reproduces the view."""
    for key in keys:
        if key in st.session_state:
            value = st.session_state[key]
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if st.query_params.get(key) != text:
                st.query_params[key] = text

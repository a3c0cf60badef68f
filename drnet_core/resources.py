"""Where the files that ship with DRNet Explorer are: checkpoints and test subset, the app, its settings.

From a checkout they are the project's top-level `assets/`, `app/` and `.streamlit/` folders. An
installed package (`pip install .`, see pyproject.toml) holds the same folders inside `drnet_core`, as
`drnet_core/assets`, `drnet_core/app` and `drnet_core/streamlit_config`, so that `drnet evaluate` and
`drnet app` work from any folder.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _shipped(name_in_package: str, name_in_checkout: str) -> Path:
    installed = PACKAGE / name_in_package
    return installed if installed.is_dir() else PACKAGE.parent / name_in_checkout


ASSETS = _shipped("assets", "assets")
APP = _shipped("app", "app")
STREAMLIT_CONFIG = _shipped("streamlit_config", ".streamlit") / "config.toml"

"""Where the files that ship with DRNet Explorer are: checkpoints and test subset, the app, its settings.

From a checkout they are the project's top-level `assets/`, `app/` and `.streamlit/` folders. An
installed package (`pip install .`, see pyproject.toml) holds assets and settings inside `drnet_core`,
as `drnet_core/assets` and `drnet_core/streamlit_config`, and the app as the package `drnet_app`, so
that `drnet evaluate` and `drnet app` work from any folder.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _shipped(name_in_package: str, name_in_checkout: str) -> Path:
    installed = PACKAGE / name_in_package
    return installed if installed.is_dir() else PACKAGE.parent / name_in_checkout


ASSETS = _shipped("assets", "assets")
STREAMLIT_CONFIG = _shipped("streamlit_config", ".streamlit") / "config.toml"


def app_folder() -> Path:
    """The installed app's folder. Located, not imported: nothing in drnet_core imports the app."""
    spec = importlib.util.find_spec("drnet_app")
    if spec is None or spec.origin is None:
        raise RuntimeError("the app (package drnet_app) is not installed: run `make setup` in the checkout, "
                           "or `pip install .`")
    return Path(spec.origin).parent

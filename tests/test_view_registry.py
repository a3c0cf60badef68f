"""Adding a view to the app is one file and one `View` entry in `drnet_app.navigation` (docs/ARCHITECTURE.md):
a toy view, written to a temporary folder, shows in the menu, reads the sidebar's settings and draws a figure
computed by drnet_core, with no other change to the app."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("DRNET_EVAL_LIMIT", "120")

from streamlit.testing.v1 import AppTest  # noqa: E402

from drnet_app import navigation  # noqa: E402
from drnet_app.navigation import View  # noqa: E402
from apptest import APP, TIMEOUT, assert_clean  # noqa: E402

TOY_VIEW = '''
import streamlit as st

from drnet_app import caches, evaluation, state
from drnet_core.figures import charts

settings = state.current_settings()
image = evaluation.gallery_image(0)
inspection = caches.inspection(settings.checkpoint, evaluation.image_key(image), image.model_input, settings.tau,
                               settings.threshold, settings.noise_seed)
st.title("Toy view")
st.markdown(f"toy view at tau {settings.tau:g}: {inspection.architecture.total_branches} branches")
st.plotly_chart(charts.weight_heatmap(inspection), key="toy_heatmap")
'''


@pytest.fixture
def toy_view(tmp_path, monkeypatch):
    path = tmp_path / "toy_view.py"
    path.write_text(TOY_VIEW)
    # An absolute file name: View.path joins it to the views folder, which keeps it as it is.
    monkeypatch.setattr(navigation, "VIEWS", navigation.VIEWS + (View(str(path), "Toy view", ":material/toys:",
                                                                       "toy"),))
    return path


def test_the_toy_view_is_one_file_and_one_navigation_entry(toy_view):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["tau"] = "0.7"
    at.run()
    at.switch_page(str(toy_view)).run()
    assert_clean(at)
    assert "Toy view" in [title.value for title in at.main.title]
    text = "\n".join(m.value for m in at.markdown)
    assert "toy view at tau 0.7: " in text and " branches" in text
    assert at.get("plotly_chart"), "the toy view's figure was not drawn"


def test_the_toy_view_is_not_in_the_menu_without_its_entry():
    assert all(view.url_path != "toy" for view in navigation.VIEWS)

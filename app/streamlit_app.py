"""DRNet Explorer: a Streamlit app showing how a Dynamic Routing Network routes each input.

Run with `streamlit run app/streamlit_app.py`. The sidebar holds the global settings (tau,
threshold, Gumbel noise, evaluation size, checkpoint); each view is one page under app/views/.
"""
from __future__ import annotations

import streamlit as st

from drnet_app import sidebar
from drnet_app.navigation import VIEWS
from drnet_core.runtime import configure_cpu_memory, use_every_core_in_this_thread

configure_cpu_memory()
use_every_core_in_this_thread()

st.set_page_config(page_title="DRNet Explorer", page_icon=":material/alt_route:", layout="wide")

PAGES = [st.Page(view.path, title=view.title, icon=view.icon, url_path=view.url_path, default=index == 0)
         for index, view in enumerate(VIEWS)]

page = st.navigation(PAGES)
try:
    st.session_state["_settings"] = sidebar.sidebar()
except Exception as error:  # the shipped checkpoint or data itself is unusable: say so, never a traceback
    st.error(f"The explorer cannot start: {error}")
    st.stop()
try:
    page.run()
except Exception as error:  # last line of defence: a message, never a traceback on the page
    st.error(f"Something went wrong on this page: {type(error).__name__}: {error}")

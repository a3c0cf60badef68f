"""DRNet Explorer's Streamlit app: the frame (streamlit_app.py), the sidebar, the views, and the state
they share. It imports drnet_core; nothing imports it."""

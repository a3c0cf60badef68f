"""Serving the app to a classroom: N Streamlit replicas behind nginx (`python -m deploy.replicas`,
`make replicas`; docs/DEPLOY.md)."""

"""Plotly figures drawn from analysis results; nothing here reads a live network."""

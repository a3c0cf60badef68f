"""Figures of the worst-case cost search (`drnet_core.analysis.sponge`): pure functions, summaries in, plotly out."""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from drnet_core.figures.charts import ACCENT, WARN, _style


def sponge_sweep_figure(rows: list[dict], title: str = "How much cost can a perturbation force?") -> go.Figure:
    """Clean and forced mean (and forced max) executed MFLOPs, and forced accuracy, against the L-infinity
    budget; the dense cost, which no input can pass, as a line. rows: `SpongeResult.summary()` per eps."""
    rows = sorted(rows, key=lambda row: row["eps"])
    eps = [row["eps"] * 255 for row in rows]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=eps, y=[r["clean_mean_mflops"] for r in rows], name="clean mean",
                                mode="lines+markers", line=dict(color="#888888", dash="dot")))
    figure.add_trace(go.Scatter(x=eps, y=[r["forced_mean_mflops"] for r in rows], name="forced mean",
                                mode="lines+markers", line=dict(color=WARN)))
    figure.add_trace(go.Scatter(x=eps, y=[r["forced_max_mflops"] for r in rows], name="forced max",
                                mode="lines+markers", line=dict(color=WARN, dash="dash")))
    figure.add_trace(go.Scatter(x=eps, y=[r["forced_accuracy"] for r in rows], name="forced accuracy",
                                mode="lines+markers", line=dict(color=ACCENT)), secondary_y=True)
    if rows:
        figure.add_hline(y=rows[0]["dense_mflops"], line=dict(color="#444444", width=1),
                         annotation_text=f"dense {rows[0]['dense_mflops']:.2f} MFLOPs: the ceiling",
                         annotation_position="top left")
    figure.update_xaxes(title="L-infinity budget eps (x 1/255)")
    figure.update_yaxes(title="executed MFLOPs", rangemode="tozero", secondary_y=False)
    figure.update_yaxes(title="accuracy", range=[0, 1], tickformat=".0%", secondary_y=True)
    return _style(figure, title, height=380, legend=dict(orientation="h", y=-0.25))

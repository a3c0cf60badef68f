"""The app's views, in menu order: the one list that the frame (`streamlit_app.py`) and the tests read.

Adding a view is a file under views/ and one entry here (README, "Add a view").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VIEW_DIR = Path(__file__).resolve().parent / "views"


@dataclass(frozen=True)
class View:
    file: str  # under views/
    title: str  # the menu entry
    icon: str
    url_path: str  # the first view is served at the root, whatever its url_path says

    @property
    def path(self) -> Path:
        return VIEW_DIR / self.file


VIEWS = (
    View("start.py", "Start here", ":material/flag:", "start"),
    View("inspect.py", "Inspect an image", ":material/image_search:", "inspect"),
    View("tradeoff.py", "Temperature & threshold", ":material/tune:", "tradeoff"),
    View("payoff.py", "Does routing pay off?", ":material/balance:", "payoff"),
    View("clusters.py", "Routing clusters", ":material/bubble_chart:", "clusters"),
    View("audit.py", "Cost audit", ":material/receipt_long:", "audit"),
    View("teach.py", "How it works", ":material/school:", "how-it-works"),
)

"""Driving the app in-process with streamlit.testing.v1.AppTest: start it on a page with URL query
parameters, check it rendered cleanly, and read what it shows. DRNET_EVAL_LIMIT keeps evaluations small."""
from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

os.environ.setdefault("DRNET_EVAL_LIMIT", "120")

from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py")
TIMEOUT = 240


def start(page: str | None = "views/inspect.py", **query: str | list[str]) -> AppTest:
    """The app after its first run with these URL query parameters, then on `page` (by default Inspect;
    None stays on the first page, Start here)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest, *, alarms_allowed: bool = False) -> None:
    """No exception and no error, except (with `alarms_allowed`) the pay-off view's collapse alarms,
    which are the page reporting on the model, not failing."""
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error if not (alarms_allowed and "selection pattern" in e.value)]
    assert not errors, errors


def start_payoff() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("views/payoff.py").run()
    assert_clean(at, alarms_allowed=True)
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def sidebar_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.sidebar.markdown)


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def png_bytes(color: int = 255) -> bytes:
    image = Image.new("L", (60, 40), color)
    image.paste(Image.new("L", (20, 30), 0), (20, 5))  # a dark garment on a light background
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def query_value(at: AppTest, key: str) -> str:
    value = at.query_params[key]
    return value[0] if isinstance(value, list) else value


def zip_of(entries: dict[str, bytes]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()

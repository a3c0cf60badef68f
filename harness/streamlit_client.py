"""A light client of a running Streamlit app that speaks Streamlit's own websocket protocol, as the
browser's frontend does: one session, its script runs, its sliders moved by name.

    async with ProtocolSession("http://127.0.0.1:8501", page="tradeoff", query="tau=0.5") as session:
        await session.run()                                        # the page's first run
        step = await session.move_slider("Selection threshold", 0.31)
        print(step["numbers_s"], step["finished_s"], session.metrics["Accuracy"])

It connects to /_stcore/stream (subprotocol "streamlit"), sends BackMsg.rerun_script with the page, the
query string and the widget values it has set, and reads ForwardMsgs: the elements of each run (sliders
by label, with their widget ids; metrics by label) and the end of the run (script_finished). It draws
nothing and runs no JavaScript, so many sessions fit where a browser each would not; what the server
does for it is what it does for a browser. Used by harness/load_classroom.py.
"""
from __future__ import annotations

import asyncio
import time
import urllib.parse

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

FINISHED = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY}


class ScriptFailed(RuntimeError):
    """A run ended with an exception on the page, or not successfully."""


class ProtocolSession:
    """One app session over the websocket. `cookie`: a Cookie header (e.g. a proxy's sticky cookie)."""

    def __init__(self, url: str, page: str = "", query: str = "", cookie: str | None = None):
        parts = urllib.parse.urlsplit(url)
        self.stream_url = urllib.parse.urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc,
                                                   parts.path.rstrip("/") + "/_stcore/stream", "", ""))
        self.page, self.query, self.cookie = page, query, cookie
        self.sliders: dict[str, str] = {}   # label -> widget id
        self.values: dict[str, float] = {}  # widget id -> value sent
        # Metrics by their place on the page, so that an element redrawn in place (a preview's numbers
        # replaced by the exact ones) keeps only its latest value.
        self._metric_at: dict[tuple[int, ...], tuple[str, str]] = {}
        self.exceptions: list[str] = []
        self._socket = None
        self._finished: asyncio.Future | None = None
        self._first_metric: float | None = None
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> ProtocolSession:
        headers = {"Cookie": self.cookie} if self.cookie else None
        self._socket = await websockets.connect(self.stream_url, subprotocols=["streamlit"], max_size=None,
                                                additional_headers=headers, open_timeout=60, ping_interval=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._socket is not None:
            await self._socket.close()

    async def run(self, timeout: float = 600.0) -> dict:
        """Rerun the script with the values set so far; {"numbers_s", "finished_s"} from the request."""
        loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        self._first_metric = None
        self._metric_at, self.exceptions = {}, []
        message = BackMsg()
        state = message.rerun_script
        state.query_string = self.query
        state.page_name = self.page
        for widget_id, value in self.values.items():
            state.widget_states.widgets.append(WidgetState(id=widget_id, double_array_value={"data": [value]}))
        started = time.perf_counter()
        await self._socket.send(message.SerializeToString())
        status = await asyncio.wait_for(self._finished, timeout)
        finished = time.perf_counter()
        if status not in FINISHED or self.exceptions:
            raise ScriptFailed(f"run ended with status {status}: {self.exceptions[:1]}")
        numbers = self._first_metric if self._first_metric is not None else finished
        return {"numbers_s": numbers - started, "finished_s": finished - started}

    async def move_slider(self, label: str, value: float, timeout: float = 600.0) -> dict:
        """Set the slider labelled `label` (as the last run drew it) to `value` and rerun."""
        if label not in self.sliders:
            raise LookupError(f"no slider labelled {label!r} on the page; it has {sorted(self.sliders)}")
        self.values[self.sliders[label]] = value
        return await self.run(timeout)

    async def _read(self) -> None:
        async for raw in self._socket:
            message = ForwardMsg()
            message.ParseFromString(raw)
            kind = message.WhichOneof("type")
            if kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                self._element(message.delta.new_element, tuple(message.metadata.delta_path))
            elif kind == "script_finished" and self._finished is not None and not self._finished.done():
                self._finished.set_result(message.script_finished)

    @property
    def metrics(self) -> dict[str, list[str]]:
        """label -> values, in page order."""
        shown: dict[str, list[str]] = {}
        for place in sorted(self._metric_at):
            label, body = self._metric_at[place]
            shown.setdefault(label, []).append(body)
        return shown

    def _element(self, element, place: tuple[int, ...]) -> None:
        kind = element.WhichOneof("type")
        if kind == "slider":
            self.sliders[element.slider.label] = element.slider.id
        elif kind == "metric":
            self._metric_at[place] = (element.metric.label, element.metric.body)
            if self._first_metric is None:
                self._first_metric = time.perf_counter()
        elif kind == "exception":
            self.exceptions.append(element.exception.message)

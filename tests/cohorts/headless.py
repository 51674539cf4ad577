"""Drive headless Chromium over the DevTools protocol: load a page, collect console errors,
evaluate JavaScript, take a full-page screenshot; and decode the PNG it returns."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np

CHROMIUM = Path("/usr/bin/chromium")

#: Launch flags known to work on the project's machines (no network, no GPU, no sandbox).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


@dataclass
class PageResult:
    """What one page load produced."""

    console_errors: list[str] = field(default_factory=list)
    #: Every URL the page requested (documents, scripts, styles, images, fetches), except
    #: those the browser blocked before sending (see ``blocked``).
    requests: list[str] = field(default_factory=list)
    #: URLs the browser refused to request, with the reason (``csp``, ``mixed-content``, ...).
    blocked: list[tuple[str, str]] = field(default_factory=list)
    evaluated: Any = None
    screenshot_png: bytes = b""
    width: int = 0
    height: int = 0


def load_page(
    url: str, script: str, width: int = 1366, height: int = 768, *, flags: tuple[str, ...] = ()
) -> PageResult:
    """Open ``url`` at a laptop-sized viewport, run ``script`` (an expression returning a
    JSON-serializable value), then capture the whole page as PNG. ``flags`` are extra
    Chromium switches."""
    with Browser(flags=flags) as browser:
        tab = browser.open(url, width, height)
        evaluated = tab.eval(script)
        png, w, h = tab.screenshot()
        return PageResult(tab.console_errors(), tab.requests(), tab.blocked(), evaluated, png, w, h)


def _devtools_url(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> str:
    """The browser's DevTools websocket URL, read from its stderr."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited early with code {proc.returncode}")
            continue
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            return m.group(1)
    raise RuntimeError("chromium did not report a DevTools URL in time")


class _Wire:
    """The one websocket to the browser: numbered commands, events filed by session."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: dict[str | None, list[dict[str, Any]]] = {}

    def _file(self, msg: dict[str, Any]) -> None:
        self.events.setdefault(msg.get("sessionId"), []).append(msg)

    def call(
        self, method: str, params: dict[str, Any] | None, session_id: str | None, timeout_s: float
    ) -> Any:
        self.next_id += 1
        wanted = self.next_id
        msg: dict[str, Any] = {"id": wanted, "method": method, "params": params or {}}
        if session_id is not None:
            msg["sessionId"] = session_id
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout_s
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == wanted:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._file(reply)

    def wait_for(self, method: str, session_id: str | None, timeout_s: float) -> None:
        def seen() -> bool:
            return any(e["method"] == method for e in self.events.get(session_id, []))

        deadline = time.monotonic() + timeout_s
        while not seen():
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if "method" in reply:
                self._file(reply)


class _Session:
    """Commands and events of one flattened target session (or the browser itself)."""

    def __init__(self, wire: _Wire, session_id: str | None = None) -> None:
        self.wire = wire
        self.session_id = session_id

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.wire.events.get(self.session_id, [])

    def call(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 60) -> Any:
        return self.wire.call(method, params, self.session_id, timeout_s)

    def wait_for(self, method: str, timeout_s: float = 60) -> None:
        self.wire.wait_for(method, self.session_id, timeout_s)


class Browser:
    """One headless Chromium for several pages (``with Browser() as b: tab = b.open(...)``)."""

    def __init__(self, *, flags: tuple[str, ...] = ()) -> None:
        self.flags = flags
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._ws: Any = None
        self._session: _Session | None = None
        self._wire: _Wire | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Browser:
        from websockets.sync.client import connect

        self._profile = tempfile.TemporaryDirectory()
        self._proc = subprocess.Popen(
            [
                str(CHROMIUM),
                *FLAGS,
                *self.flags,
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            self._ws = self._stack.enter_context(
                connect(_devtools_url(self._proc), max_size=None, open_timeout=20)
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self._wire = _Wire(self._ws)
        self._session = _Session(self._wire)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self._ws = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._profile is not None:
            shutil.rmtree(self._profile.name, ignore_errors=True)
            self._profile = None

    def open(self, url: str, width: int = 1366, height: int = 768) -> Tab:
        """A new tab at ``width`` x ``height`` CSS px with ``url`` loaded."""
        assert self._wire is not None, "use the Browser as a context manager"
        browser = _Session(self._wire)
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        s = _Session(self._wire, sid)
        for domain in ("Page", "Runtime", "Log", "Network"):
            s.call(f"{domain}.enable")
        s.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        s.call("Page.navigate", {"url": url})
        s.wait_for("Page.loadEventFired")
        return Tab(s, target, self)

    def allow_downloads(self, directory: Path) -> None:
        """Save downloads into ``directory`` (browser-wide)."""
        assert self._session is not None
        self._session.call(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(directory), "eventsEnabled": True},
        )


class Tab:
    """One page: evaluate JavaScript, click, type, take a screenshot."""

    def __init__(self, session: _Session, target: str, browser: Browser) -> None:
        self.s = session
        self.target = target
        self.browser = browser

    def eval(self, expression: str) -> Any:
        """Value of a JavaScript expression (promises awaited)."""
        reply = self.s.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"script failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_until(self, condition: str, timeout_s: float = 30) -> None:
        """Poll the JavaScript ``condition`` until it is true (page events run meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while not self.eval(f"!!({condition})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout_s} s: {condition}")
            time.sleep(0.05)

    def emulate_media(self, media: str) -> None:
        """Lay the page out for ``print`` (or ``screen``) media."""
        self.s.call("Emulation.setEmulatedMedia", {"media": media})

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the first element matching ``selector``."""
        box = self.eval(
            f"(function(){{var e=document.querySelector({json.dumps(selector)});"
            "e.scrollIntoView({block:'center'});var r=e.getBoundingClientRect();"
            "return [r.left+r.width/2,r.top+r.height/2];})()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.s.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
            )

    def type(self, selector: str, text: str) -> None:
        """Focus ``selector`` and type ``text`` as keyboard input."""
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.s.call("Input.insertText", {"text": text})

    def screenshot(self) -> tuple[bytes, int, int]:
        """The whole page as PNG, with its CSS width and height."""
        metrics = self.s.call("Page.getLayoutMetrics")["cssContentSize"]
        w, h = int(metrics["width"]), int(metrics["height"])
        shot = self.s.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1},
            },
        )["data"]
        return base64.b64decode(shot), w, h

    def _events(self) -> list[dict[str, Any]]:
        self.eval("0")  # flush pending events into the session's list
        return self.s.events

    def console_errors(self) -> list[str]:
        """console.error / assert calls, uncaught exceptions and error log entries."""
        errors = []
        for e in self._events():
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
                )
            elif e["method"] == "Runtime.exceptionThrown":
                errors.append(str(p.get("exceptionDetails", {}).get("text")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append(str(p["entry"].get("text")))
        return errors

    def _urls(self) -> tuple[dict[str, str], dict[str, str]]:
        events = self._events()
        urls = {
            e["params"]["requestId"]: str(e["params"]["request"]["url"])
            for e in events
            if e["method"] == "Network.requestWillBeSent"
        }
        blocked = {
            e["params"]["requestId"]: str(e["params"]["blockedReason"])
            for e in events
            if e["method"] == "Network.loadingFailed" and e["params"].get("blockedReason")
        }
        return urls, blocked

    def requests(self) -> list[str]:
        """Every URL the page requested, except those the browser blocked before sending."""
        urls, blocked = self._urls()
        return [url for rid, url in urls.items() if rid not in blocked]

    def blocked(self) -> list[tuple[str, str]]:
        """URLs the browser refused to request, with the reason."""
        urls, blocked = self._urls()
        return [(urls.get(rid, "?"), why) for rid, why in blocked.items()]

    def close(self) -> None:
        """Close the tab."""
        _Session(self.s.wire).call("Target.closeTarget", {"targetId": self.target})


# ---------------------------------------------------------------------- PNG decoding


def decode_png(data: bytes) -> np.ndarray:
    """8-bit RGB/RGBA non-interlaced PNG -> (height, width, channels) uint8 array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = channels = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
            depth, colour, interlace = body[8], body[9], body[12]
            if depth != 8 or interlace != 0 or colour not in (2, 6):
                raise ValueError("unsupported PNG (need 8-bit RGB/RGBA, not interlaced)")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    rows = raw.reshape(height, 1 + width * channels)
    out = _unfilter(rows, channels)
    return out.reshape(height, width, channels)


@nb.njit(cache=True)
def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:  # pragma: no cover - numba
    h, stride = rows.shape[0], rows.shape[1] - 1
    out = np.zeros((h, stride), dtype=np.uint8)
    for y in range(h):
        ftype = rows[y, 0]
        for x in range(stride):
            raw = np.int32(rows[y, x + 1])
            a = np.int32(out[y, x - bpp]) if x >= bpp else 0
            b = np.int32(out[y - 1, x]) if y > 0 else 0
            c = np.int32(out[y - 1, x - bpp]) if (y > 0 and x >= bpp) else 0
            if ftype == 0:
                v = raw
            elif ftype == 1:
                v = raw + a
            elif ftype == 2:
                v = raw + b
            elif ftype == 3:
                v = raw + (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                v = raw + pred
            out[y, x] = np.uint8(v & 0xFF)
    return out


def colour_pixels(image: np.ndarray, hex_colour: str) -> int:
    """Pixels exactly of ``hex_colour`` (``#rrggbb``)."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
    return int((image[:, :, :3] == rgb).all(axis=2).sum())

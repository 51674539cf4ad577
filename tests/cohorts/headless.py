"""Drive headless Chromium over the DevTools protocol: load a page, collect console errors,
evaluate JavaScript, take a full-page screenshot; and decode the PNG it returns."""

from __future__ import annotations

import base64
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
    from websockets.sync.client import connect

    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, *flags, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ws_url = _devtools_url(proc)
            with connect(ws_url, max_size=None, open_timeout=20) as ws:
                return _drive(ws, url, script, width, height)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            shutil.rmtree(profile, ignore_errors=True)


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


class _Session:
    """Numbered CDP commands over one flattened target session."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.session_id: str | None = None
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 60) -> Any:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session_id is not None:
            msg["sessionId"] = self.session_id
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout_s
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, timeout_s: float = 60) -> None:
        if any(e["method"] == method for e in self.events):
            return
        deadline = time.monotonic() + timeout_s
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if "method" in reply:
                self.events.append(reply)
                if reply["method"] == method:
                    return


def _drive(ws: Any, url: str, script: str, width: int, height: int) -> PageResult:
    s = _Session(ws)
    target = s.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    s.session_id = s.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"
    ]
    for domain in ("Page", "Runtime", "Log", "Network"):
        s.call(f"{domain}.enable")
    s.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    s.call("Page.navigate", {"url": url})
    s.wait_for("Page.loadEventFired")
    evaluated = s.call(
        "Runtime.evaluate", {"expression": script, "returnByValue": True, "awaitPromise": True}
    )["result"].get("value")
    metrics = s.call("Page.getLayoutMetrics")["cssContentSize"]
    w, h = int(metrics["width"]), int(metrics["height"])
    shot = s.call(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1},
        },
    )["data"]
    errors = []
    urls = {
        e["params"]["requestId"]: str(e["params"]["request"]["url"])
        for e in s.events
        if e["method"] == "Network.requestWillBeSent"
    }
    blocked = {
        e["params"]["requestId"]: str(e["params"]["blockedReason"])
        for e in s.events
        if e["method"] == "Network.loadingFailed" and e["params"].get("blockedReason")
    }
    requests = [url for rid, url in urls.items() if rid not in blocked]
    for e in s.events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif e["method"] == "Runtime.exceptionThrown":
            errors.append(str(p.get("exceptionDetails", {}).get("text")))
        elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(str(p["entry"].get("text")))
    return PageResult(
        errors,
        requests,
        [(urls.get(rid, "?"), why) for rid, why in blocked.items()],
        evaluated,
        base64.b64decode(shot),
        w,
        h,
    )


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

"""Start the real ``cohortlens serve`` process on 127.0.0.1 for integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ADMIN_TOKEN = "test-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)

    def admin(self) -> httpx.Client:
        return self.client(Authorization=f"Bearer {ADMIN_TOKEN}")


@contextmanager
def running_server(
    db: str,
    log_dir: Path,
    *extra: str,
    env: Mapping[str, str | None] | None = None,
    ready: bool = True,
) -> Iterator[Server]:
    """A server process; stops it (SIGTERM, then SIGKILL) when the block ends."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COHORTLENS_")}
    environ["COHORTLENS_ADMIN_TOKEN"] = ADMIN_TOKEN
    for key, value in (env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cohortlens", "serve", "--db", db, "--port", str(port), *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        deadline = time.monotonic() + 90
        path = "/readyz" if ready else "/healthz"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(server.url + path, timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after 90 s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

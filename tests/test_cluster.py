"""The test cluster's start-up: a node whose `ray start` exits (Ray gives up on its raylet after a
fixed 30 s on a loaded machine) is started again, and the cluster waits until the state API lists it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .cluster import _start_until_alive


@pytest.fixture
def state_api():
    """A stand-in for the dashboard's /api/v0/nodes on 127.0.0.1; yields (port, the list of node states it serves)."""
    states: list[str] = []

    class Nodes(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"data": {"result": {"result": [{"state": s} for s in states]}}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Nodes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], states
    server.shutdown()


def _exits_at_once() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"], start_new_session=True)


def test_a_node_whose_start_exits_is_started_again_until_it_is_listed_alive(state_api):
    port, states = state_api
    started: list[subprocess.Popen] = []

    def start(attempt: int) -> tuple[subprocess.Popen, int]:
        if attempt == 0:
            proc = _exits_at_once()
        else:  # this one stays up, and the cluster lists it
            proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
            states[:] = ["ALIVE", "ALIVE"]
        started.append(proc)
        return proc, port

    states[:] = ["ALIVE", "DEAD"]  # the head, and a node that died before: not counted
    proc, dashboard = _start_until_alive(start, 2, "worker node 0", "w0*.log", timeout=20)
    try:
        assert len(started) == 2 and proc is started[1] and dashboard == port and proc.poll() is None
        assert started[0].returncode == 1
    finally:
        proc.kill()
        proc.wait()


def test_a_node_that_never_comes_up_fails_with_one_line_naming_its_logs(state_api):
    port, states = state_api
    states[:] = ["ALIVE"]
    attempts = []

    def start(attempt: int) -> tuple[subprocess.Popen, int]:
        attempts.append(attempt)
        return _exits_at_once(), port

    with pytest.raises(RuntimeError, match=r"^worker node 0 did not come up in 3 attempts \(logs: /tmp/x/w0\*\.log\)$"):
        _start_until_alive(start, 2, "worker node 0", "/tmp/x/w0*.log", timeout=20)
    assert attempts == [0, 1, 2]

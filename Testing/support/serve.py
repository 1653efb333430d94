"""One real SAM-Med3D server for the whole test session (``python -m SAMMed3DLib serve`` on 127.0.0.1).

Starting Ray costs 30-60 s on a loaded 2-core machine, so test modules share the server the ``ray_server``
fixture (Testing/conftest.py) starts once: a local Ray with two CPU workers on the tiny checkpoint, real HTTP on
a free port, a token. Tests that open sessions close them (the session-limit test counts them).
"""

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import requests

from SAMMed3DLib.bench.server import serve_process

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789abcdef"
MAX_SESSIONS = 6  # per worker
START_TIMEOUT = 150.0  # seconds
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}


@dataclass(frozen=True)
class RunningServer:
    url: str
    process: subprocess.Popen
    ray_token: Path
    token: str = TOKEN


@contextlib.contextmanager
def running_server(checkpoint: Path, folder: Path, threads: int) -> Iterator[RunningServer]:
    """A server on ``checkpoint`` with its log and token file in ``folder``; stopped (SIGTERM) on exit.
    ``threads``: torch threads per worker: CPU results depend on it, so tests pass their own for bit-identical
    masks. Ray's cluster token is a file of the test's, as a careless umask leaves it (mode 0644): the server
    must make it private."""
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")
    ray_token = folder / "ray_auth_token"
    ray_token.write_text("0123456789abcdef" * 4)
    ray_token.chmod(0o644)
    arguments = ["--weights", str(checkpoint), "--workers", "2", "--token-file", str(token_file),
                 "--max-upload-mb", "2", "--max-sessions", str(MAX_SESSIONS), "--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RAY_AUTH_TOKEN_PATH": str(ray_token)}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_AUTH_MODE", None)
    with serve_process(arguments, log=folder / "serve.log", timeout=START_TIMEOUT, env=env) as (url, process):
        yield RunningServer(url, process, ray_token)


def wait_all_alive(url: str, timeout: float = START_TIMEOUT) -> None:
    """Until every worker answers again (after a test killed one), so that later tests meet a whole server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            if requests.get(url + "/v1/health", timeout=10).json()["status"] == "ok":
                return
        time.sleep(0.5)
    raise AssertionError(f"the server at {url} did not recover its workers in {timeout} s")


def open_sessions(url: str) -> int:
    """Sessions the server's workers hold now."""
    workers = requests.get(url + "/v1/health", headers=AUTHORIZED, timeout=10).json()["workers"]
    return sum(int(w.get("sessions") or 0) for w in workers)


def kill_worker(url: str, index: int) -> None:
    """SIGKILL worker ``index`` (its sessions are lost; the server starts a new one)."""
    workers = requests.get(url + "/v1/health", headers=AUTHORIZED, timeout=10).json()["workers"]
    os.kill(next(w["pid"] for w in workers if w["index"] == index), signal.SIGKILL)

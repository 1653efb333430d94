"""Server benchmark: the same clicks in a local session and through a server, and latency under concurrency.

The overhead per refinement click is the median round trip through the server minus the median local step
(same volume, same clicks, same weights; the masks are checked equal), and, click by click, the round trip minus
the worker's engine time. Concurrency runs ``n`` clients at once, each with its own session, and reports p50/p95
of their refinement clicks.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import requests
import SimpleITK as sitk

from ..coordinates import lps_to_ras

Click = Tuple[Tuple[float, float, float], bool]


def phantom(size: Sequence[int], spacing: float = 1.0, seed: int = 0) -> sitk.Image:
    """A noisy int16 volume of ``size`` (x, y, z) voxels with a bright 40 mm sphere at its centre."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: size[2], : size[1], : size[0]]
    centre = [(n - 1) / 2 for n in size]
    inside = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) * spacing**2 <= 40.0**2
    values = np.where(inside, 300, 100) + rng.normal(0, 10, inside.shape)
    image = sitk.GetImageFromArray(values.astype(np.int16))
    image.SetSpacing([spacing] * 3)
    return image


def refinement_clicks(image: sitk.Image, count: int, seed: int = 0) -> List[Click]:
    """``count`` clicks within 20 mm of the image centre (less in a small image; one ROI: the first encodes,
    the rest refine)."""
    rng = np.random.default_rng(seed)
    reach = min(20.0, 0.3 * min(n * s for n, s in zip(image.GetSize(), image.GetSpacing())))
    # the image centre in RAS (roi.voxel_to_ras would import torch: this module stays torch-free for the tests)
    ras = lps_to_ras(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    return [(tuple(float(c + d) for c, d in zip(ras, rng.uniform(-reach, reach, 3))), i % 3 != 1) for i in range(count)]


def interleaved(
    local, remote, clicks: Sequence[Click], pause: float = 0.1
) -> Tuple[List[float], List[Dict[str, float]]]:
    """Each click locally, then through the server (both sides see the same load on a shared machine): the local
    step times (s) and the remote results' timings (s) plus ``flipped_bytes``, the answer's flips bit-packed.
    Each result is let go before the next click, as the Slicer module does (a result still held when the next
    click pastes costs a copy of the whole mask, on either side). ``pause`` (s) before each click, as between a
    user's clicks: torch's idle OpenMP threads spin ~10 ms after its last operation (one core of two here), which
    back to back may slow the other side's click."""
    local_times, remote_timings = [], []
    for point, positive in clicks:
        time.sleep(pause)
        start = time.perf_counter()
        local.add_click(point, positive)
        local_times.append(time.perf_counter() - start)
        time.sleep(pause)
        remote_timings.append(_timings(remote.add_click(point, positive)))
    return local_times, remote_timings


def _timings(result) -> Dict[str, float]:
    flipped = 0 if result.flipped is None else (int(np.prod(result.flipped[1])) + 7) // 8
    return {**result.timings, "flipped_bytes": float(flipped)}


def step_times(session, clicks: Sequence[Click]) -> Tuple[List[float], sitk.Image]:
    """Wall time of each click (s) and the final mask."""
    times = []
    for point, positive in clicks:
        start = time.perf_counter()
        session.add_click(point, positive)
        times.append(time.perf_counter() - start)
    return times, session.mask


def concurrent_latencies(open_session, image: sitk.Image, clicks: Sequence[Click], clients: int) -> List[float]:
    """Refinement-click latencies (s) of ``clients`` sessions clicking at once."""
    latencies: List[float] = []
    errors: List[str] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            session = open_session(image)
            times, _ = step_times(session, clicks)
            session.close()
            with lock:
                latencies.extend(times[1:])
        except Exception as exc:  # reported after the join
            errors.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]}")
    return latencies


def empty_round_trip(connection, count: int = 20) -> float:
    """Median time (s) of ``GET /v1/version`` on ``connection``: the fixed HTTP + Serve cost of any request."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        connection.version()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def percentiles(values: Sequence[float]) -> Dict[str, float]:
    return {"p50_ms": float(np.percentile(values, 50) * 1e3), "p95_ms": float(np.percentile(values, 95) * 1e3)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT_TRIES = 3
"""Starts tried on fresh ports: between picking a free port and Serve binding it, another process may take it."""


class PortTakenError(RuntimeError):
    """The server exited because its HTTP port was taken meanwhile."""


@contextmanager
def serve_process(
    arguments: Sequence[str],
    *,
    log: Optional[Path] = None,
    timeout: float = 300.0,
    env: Optional[Dict[str, str]] = None,
) -> Iterator[Tuple[str, subprocess.Popen]]:
    """``python -m SAMMed3DLib serve ARGUMENTS`` on 127.0.0.1 and a free port until the block ends (SIGTERM,
    then kill after 60 s): (base URL, process), yielded once ``/v1/health`` answers ok. ``log``: the server's
    output goes there (and its tail into the error if it does not start; a start that lost its port to another
    process is retried on another); else it is discarded."""
    for attempt in range(1, PORT_TRIES + 1):
        port = free_port()
        command = [sys.executable, "-m", "SAMMed3DLib", "serve", *arguments, "--port", str(port)]
        with open(log, "w") if log else open(os.devnull, "w") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env or dict(os.environ))
            try:
                _wait_healthy(f"http://127.0.0.1:{port}", process, timeout, log)
            except PortTakenError:
                _stop(process)
                if attempt == PORT_TRIES:
                    raise
                continue
            try:
                yield f"http://127.0.0.1:{port}", process
            finally:
                _stop(process)
            return


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float, log: Optional[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if requests.get(url + "/v1/health", timeout=5).json().get("status") == "ok":
                return
        except (requests.RequestException, ValueError, AttributeError):
            pass
        time.sleep(0.5)
    exited = process.poll() is not None
    state = f"exited with status {process.returncode}" if exited else "did not start in time"
    text = Path(log).read_text() if log else ""
    if exited and "error: cannot listen on" in text:  # launch.PORT_BUSY (this module stays free of Ray)
        raise PortTakenError(f"the server's port in {url} was taken before it could listen")
    raise RuntimeError(f"the server {state}" + (f":\n{text[-3000:]}" if log else ""))


@contextmanager
def local_server(weights: str, workers: int, threads: Optional[int], answer: str = "network",
                 timeout: float = 300.0) -> Iterator[str]:
    """A ``serve`` process on 127.0.0.1 (``--answer answer``) for the benchmark's duration; its base URL."""
    arguments = ["--weights", weights, "--workers", str(workers), "--max-sessions", "16", "--answer", answer]
    with serve_process([*arguments, *(["--threads", str(threads)] if threads else [])], timeout=timeout) as (url, _):
        yield url


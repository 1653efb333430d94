"""Server options, the bearer-token rule and the limits (no Ray, no torch)."""

import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..device import PRECISIONS
from ..errors import InputError

NAMESPACE = "sammed3d"
"""Ray namespace of the worker actors (named ``sammed3d-worker-<i>``)."""


ANSWERS = ("network", "lesion")
"""What a server's masks are: the network's, or (benchmarks only) a blob in place of its logits (bench/lesion.py)."""


NORMAL_PRIORITY = {"env_vars": {"RAY_worker_niceness": "0"}}
"""The runtime environment of the worker actors and the gateway: Ray starts its worker processes at nice 15, so
that on a shared host any normal-priority process took the CPU from the server's clicks (its engine ran 4x slower
than the same clicks in a process beside it on a loaded 2-core machine). A local Ray gets the same for all its
processes (Serve's proxy too) through its system config; on a joined cluster the proxy keeps Ray's default."""


SERVE_LOGGING = {"enable_access_log": False, "log_level": "WARNING"}
"""Serve's logging for the proxy and the gateway: no access-log line written and flushed on every click."""


def worker_name(index: int) -> str:
    return f"sammed3d-worker-{index}"


@dataclass(frozen=True)
class Limits:
    """Upload size (bytes, compressed and expanded), sessions per worker, idle time-out and request time-out (s)."""

    max_upload: int = 1 << 30
    max_sessions: int = 8
    idle_timeout: float = 1800.0
    request_timeout: float = 120.0


@dataclass(frozen=True)
class ServerConfig:
    """What ``serve`` was asked for. ``workers`` None: one per GPU of the cluster, or one CPU worker.
    ``threads``: torch CPU threads per worker (None: its share of its machine's cores). ``answer``: one
    of ``ANSWERS`` ("lesion" only for ``bench-server``'s realistic-answer figure). ``precision``: the image
    encoder's, one of the engine's ``PRECISIONS``."""

    weights: str
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    token: Optional[str] = None
    workers: Optional[int] = None
    address: Optional[str] = None
    num_cpus: int = 2
    threads: Optional[int] = None
    limits: Limits = Limits()
    answer: str = "network"
    precision: str = "fp32"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(config: ServerConfig) -> None:
    """Refuse a configuration that would expose the server without a token, or nonsense limits."""
    if not is_loopback(config.host) and not config.token:
        raise InputError(
            f"refusing to listen on {config.host} without a token: anyone on the network could use the GPU and read "
            "uploaded volumes; give --token-file FILE (one line, the shared secret) or bind to 127.0.0.1"
        )
    if config.precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    if config.answer not in ANSWERS:
        raise InputError(f"--answer must be one of {', '.join(ANSWERS)}, got {config.answer!r}")
    if config.threads is not None and config.threads < 1:
        raise InputError(f"--threads must be at least 1, got {config.threads}")
    if config.workers is not None and config.workers < 1:
        raise InputError(f"--workers must be at least 1, got {config.workers}")
    limits = config.limits
    if limits.max_upload < 1 or limits.max_sessions < 1 or limits.idle_timeout <= 0 or limits.request_timeout <= 0:
        raise InputError("the limits (--max-upload-mb, --max-sessions, --idle-timeout, --request-timeout) must be > 0")


def read_token(path: Path) -> str:
    """The secret in ``path`` (surrounding white space dropped); InputError if unreadable, empty or too short."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the token file {path}: {exc}") from exc
    if len(token) < 16:
        raise InputError(f"the token in {path} is too short: use at least 16 characters (e.g. `openssl rand -hex 32`)")
    return token


def token_matches(expected: Optional[str], authorization: Optional[str]) -> bool:
    """Whether an ``Authorization: Bearer <token>`` header carries ``expected`` (constant-time; no token: True)."""
    if not expected:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), expected.encode("utf-8"))

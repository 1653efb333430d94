"""Download settings in one object: where the cache and registry are, time limits, retries, size cap, progress."""

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Tuple, Union

from ..errors import DownloadError

ProgressCallback = Callable[[int, Optional[int], float], Optional[bool]]
"""``callback(bytes_done, total_bytes_or_None, bytes_per_second)``; returning False cancels."""

PathLike = Union["os.PathLike[str]", str]
Timeout = Union[float, Tuple[float, float]]

DEFAULT_TIMEOUT: Tuple[float, float] = (10.0, 60.0)  # seconds: connect, and the longest wait for data
DEFAULT_RETRIES = 3  # further attempts per URL after the first failure that made no progress
DEFAULT_BACKOFF = 1.0  # seconds before the first retry; doubled for each further one
DEFAULT_MAX_TIME = 3600.0  # seconds for a whole download, retries included (~110 kB/s for 400 MB)
DEFAULT_MAX_SIZE = 4 << 30  # bytes accepted for a file whose size the registry does not give (4 GiB)


@dataclass(frozen=True)
class DownloadOptions:
    """How :func:`~SAMMed3DLib.weights.resolve_checkpoint` finds and fetches a checkpoint.

    ``cache_dir``/``registry``: None for the defaults (``$SAMMED3D_CACHE_DIR`` / ``model_weights.json``);
    ``registry`` may also be an already loaded mapping. ``timeout``: seconds to connect and the longest wait
    for data, one number for both or a (connect, read) pair; a transfer that brings less than
    ``MIN_BYTES_PER_WINDOW`` bytes within the read time-out counts as stalled too. ``max_time``: seconds
    for the whole download, retries and mirrors included. ``max_size``: bytes accepted when the registry
    does not give the file's size. ``backoff``: seconds before the first retry, doubled for each next one.
    """

    cache_dir: Optional[PathLike] = None
    registry: Union[Mapping, PathLike, None] = None
    timeout: Timeout = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    max_time: float = DEFAULT_MAX_TIME
    max_size: int = DEFAULT_MAX_SIZE
    progress: Optional[ProgressCallback] = None

    def __post_init__(self) -> None:
        if isinstance(self.timeout, tuple) and len(self.timeout) != 2:
            raise DownloadError(f"timeout must be one number or (connect, read) seconds, not {self.timeout!r}")
        for value in self.timeout if isinstance(self.timeout, tuple) else (self.timeout,):
            check_positive(value, "timeout", "seconds")
        check_positive(self.max_time, "max_time", "seconds")
        check_positive(self.max_size, "max_size", "bytes")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise DownloadError(f"retries must be a whole number >= 0, not {self.retries!r}")
        if not _is_number(self.backoff) or not math.isfinite(self.backoff) or self.backoff < 0:
            raise DownloadError(f"backoff must be a number of seconds >= 0, not {self.backoff!r}")

    @property
    def read_timeout(self) -> float:
        """Seconds to wait for data before the transfer counts as stalled."""
        return float(self.timeout[1] if isinstance(self.timeout, tuple) else self.timeout)


def check_positive(value: object, name: str, unit: str) -> None:
    """One DownloadError unless ``value`` is a finite number > 0 (``name`` and ``unit`` word the message)."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type]
        raise DownloadError(f"{name} must be a positive number of {unit}, not {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def with_settings(options: Optional[DownloadOptions], **settings) -> DownloadOptions:
    """``options`` (default: all defaults) with the given fields replaced; unknown names are one error."""
    base = options if options is not None else DownloadOptions()
    known = {f.name for f in dataclasses.fields(DownloadOptions)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"unknown download setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return dataclasses.replace(base, **settings) if settings else base

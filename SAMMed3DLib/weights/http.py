"""One HTTP(S) URL's bytes into a ``.part`` file: one attempt at a time, resuming from what the file holds.

Every attempt is bounded three ways: the read time-out (no data at all), a minimum pace (less than
``MIN_BYTES_PER_WINDOW`` bytes within one read time-out: a trickle that keeps the socket alive), and a
byte cap (the registry's size when known, else ``max_size``), besides the overall :class:`Deadline`.
Failures are sorted for the caller: :class:`TransientError` is worth retrying on the same URL,
:class:`SourceError` means this URL cannot deliver the file (try the next mirror).
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

import requests
import urllib3

from .. import __version__
from ..errors import DownloadError
from .cache import remove_quietly
from .confirm import confirm_url
from .options import DownloadOptions

CHUNK = 64 << 10  # bytes per read at most; a dropped connection loses at most one read, so keep it small
MIN_BYTES_PER_WINDOW = 1024  # bytes that must arrive within each read time-out, else the transfer is stalled
MAX_CONFIRM_PAGES = 3  # HTML confirmation pages followed per request
MAX_PAGE_BYTES = 1 << 20  # a confirmation page is a few kB


class TransientError(Exception):
    """A failure worth retrying on the same URL (network error, time-out, 5xx, dropped connection)."""


class StalledError(TransientError):
    """Data arrives too slowly to finish; retried like a time-out, but bytes received do not count as progress."""


class SourceError(Exception):
    """This URL cannot deliver the file (404, web page, wrong size or checksum); try the next mirror."""


class DownloadCancelledError(DownloadError):
    """The progress callback returned False (or raised this): the download stopped and left nothing behind."""


class DeadlineError(DownloadError):
    """The whole download took longer than ``max_time``; nothing further is tried."""


@dataclass
class Deadline:
    """The overall time limit of one download: ``seconds`` from creation (monotonic clock)."""

    seconds: float
    name: str
    start: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.start + self.seconds - time.monotonic()

    def check(self) -> None:
        """Raise :class:`DeadlineError` once the time is up."""
        if self.remaining() <= 0:
            raise DeadlineError(
                f"download of {self.name} stopped: it took longer than the {self.seconds:g} s allowed "
                "(max_time, --max-time); nothing was kept"
            )


class Meter:
    """Calls the progress callback with the transfer rate (bytes per second) of this download."""

    def __init__(self, callback: Optional[Callable]) -> None:
        self.callback = callback
        self.start = time.monotonic()
        self.received = 0

    def update(self, done: int, total: Optional[int], new_bytes: int) -> None:
        self.received += new_bytes
        if self.callback is None:
            return
        rate = self.received / max(time.monotonic() - self.start, 1e-6)
        if self.callback(done, total, rate) is False:
            raise DownloadCancelledError("download cancelled")


class _Pace:
    """Raises :class:`StalledError` when fewer than ``MIN_BYTES_PER_WINDOW`` bytes came in ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()
        self.bytes = 0

    def add(self, count: int) -> None:
        self.bytes += count
        elapsed = time.monotonic() - self.start
        if elapsed < self.seconds:
            return
        if self.bytes < MIN_BYTES_PER_WINDOW:
            raise StalledError(
                f"too slow: {self.bytes} bytes in {elapsed:.1f} s (at least {MIN_BYTES_PER_WINDOW} bytes must "
                f"arrive within the {self.seconds:g} s time-out)"
            )
        self.start, self.bytes = time.monotonic(), 0


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def open_part(part: Path, append: bool) -> BinaryIO:
    """``part`` opened for writing (appending when resuming); the caller closes it with ``with``."""
    try:
        return open(part, "ab" if append else "wb")  # noqa: SIM115 - returned into the caller's with-block
    except OSError as exc:
        raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from exc


def write_block(fh: BinaryIO, data: bytes, part: Path) -> None:
    """Append ``data``; a failing write (disk full, file too large) stops the whole download."""
    try:
        fh.write(data)
        fh.flush()
    except OSError as exc:
        raise DownloadError(f"cannot write {part}: {exc.strerror or exc} (disk full?)") from exc


class HttpTransfer:
    """One URL's transfer into ``part``; ``run()`` is one attempt, resuming from what ``part`` holds.

    ``size``: the file's size in bytes from the registry, or None (then ``opts.max_size`` caps it).
    """

    def __init__(self, url: str, part: Path, size: Optional[int], opts: DownloadOptions, deadline: Deadline) -> None:
        self.url = url  # becomes the confirmed URL once a Drive confirmation page was followed
        self.part = part
        self.size = size
        self.limit = size if size is not None else opts.max_size
        self.opts = opts
        self.deadline = deadline
        self.meter = Meter(opts.progress)
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": f"SAMMed3DLib/{__version__}", "Accept-Encoding": "identity"})

    def run(self) -> None:
        offset = size_of(self.part)
        try:
            with self._response(offset) as response:
                self._receive(response, offset)
        except requests.RequestException as exc:
            raise _classify(exc, self.opts.read_timeout) from exc
        except urllib3.exceptions.HTTPError as exc:  # raised by the raw reads of ``_blocks``
            raise _classify(exc, self.opts.read_timeout) from exc

    def _response(self, offset: int) -> requests.Response:
        """The response carrying the file's bytes (from ``offset``), after any confirmation pages."""
        for _ in range(MAX_CONFIRM_PAGES + 1):
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            response = self.session.get(self.url, headers=headers, stream=True, timeout=self.opts.timeout)
            if response.status_code == 416 and offset != self.size:
                response.close()
                remove_quietly(self.part)  # the server refuses to resume what we hold: start again from 0
                raise TransientError("the server could not resume the download")
            _check_status(response, offset, self.size)
            if "text/html" not in response.headers.get("Content-Type", "").lower():
                return response
            page = self._read_page(response)
            confirmed = confirm_url(page, response.url, response.cookies.get_dict())
            if confirmed is None:
                raise SourceError("the server sent a web page instead of the file (not public, or quota exceeded?)")
            self.url = confirmed
        raise SourceError("too many confirmation pages; the file could not be fetched")

    def _read_page(self, response: requests.Response) -> str:
        """An HTML answer's text, at most ``MAX_PAGE_BYTES`` of it (an endless page cannot fill the memory)."""
        with response:
            data = bytearray()
            for block in _blocks(response):
                data += block
                self.deadline.check()
                if len(data) > MAX_PAGE_BYTES:
                    raise SourceError(f"the server sent a web page of more than {MAX_PAGE_BYTES} bytes, not the file")
        return data.decode(response.encoding or "utf-8", errors="replace")

    def _receive(self, response: requests.Response, offset: int) -> None:
        """Write the body after ``offset`` (or from 0 if the server ignored Range) into ``part``."""
        if response.status_code == 416:
            return  # nothing left to send: ``part`` already holds the whole file (checked by the caller)
        if offset and response.status_code == 200:
            offset = 0  # the server ignored Range and sends the whole file: restart cleanly
        total = _total_size(response, offset)
        self._check_offer(total)
        done, pace = offset, _Pace(self.opts.read_timeout)
        with open_part(self.part, append=offset > 0) as out:
            for block in _blocks(response):
                write_block(out, block, self.part)
                done += len(block)
                if done > self.limit:
                    raise SourceError(self._too_much())
                self.meter.update(done, total, len(block))
                self.deadline.check()
                pace.add(len(block))
        if total is not None and done < total:
            raise TransientError(f"connection closed after {done} of {total} bytes")

    def _check_offer(self, total: Optional[int]) -> None:
        """Refuse before reading when the announced size is not the expected one or over the cap."""
        if total is None:
            return
        if self.size is not None and total != self.size:
            raise SourceError(f"wrong size: the server offers {total} bytes, expected {self.size}")
        if total > self.limit:
            raise SourceError(f"the server offers {total} bytes, {self._cap_text()}")

    def _too_much(self) -> str:
        if self.size is not None:
            return f"wrong size: the server sent more than the expected {self.size} bytes"
        return f"the server sent more than {self.limit} bytes, {_UNKNOWN_SIZE_CAP}"

    def _cap_text(self) -> str:
        return f"more than the {self.limit} bytes allowed, {_UNKNOWN_SIZE_CAP}"


_UNKNOWN_SIZE_CAP = "the most accepted for a file of unknown size (max_size: the registry entry's or --max-size)"


def _blocks(response: requests.Response) -> Iterator[bytes]:
    """The body in pieces as they arrive (``read1`` returns what the socket has, so a trickle cannot
    hold a read open for long and the pace and deadline are checked at least once per read time-out)."""
    raw = response.raw
    read = getattr(raw, "read1", None) or raw.read  # read1: urllib3 >= 2; older ones read whole chunks
    while True:
        block = read(CHUNK, decode_content=True)
        if not block:
            return
        yield block


def _check_status(response: requests.Response, offset: int, size: Optional[int]) -> None:
    """Raise for an HTTP status that carries no usable file bytes."""
    code = response.status_code
    if code == 416 and offset and size is not None and offset == size:
        return
    if code == 206 and _range_start(response) != offset:
        raise TransientError("the server resumed at the wrong position")
    if code in (200, 206):
        return
    reason = f"HTTP {code} {response.reason or ''}".strip()
    response.close()
    if code in (408, 429) or code >= 500:
        raise TransientError(reason)
    raise SourceError(reason)


def _range_start(response: requests.Response) -> Optional[int]:
    """First byte position of a 206 response's ``Content-Range: bytes a-b/n``."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _total_size(response: requests.Response, offset: int) -> Optional[int]:
    """Full file size in bytes from Content-Range or Content-Length, or None when the server does not say."""
    if response.status_code == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        if total.isdigit():
            return int(total)
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and not response.headers.get("Content-Encoding"):
        return int(length) + (offset if response.status_code == 206 else 0)
    return None


def _classify(exc: Exception, read_timeout: float) -> Exception:
    """Map a requests or urllib3 error to a retryable failure with a short reason, or a failure of this URL."""
    timed_out = (requests.Timeout, urllib3.exceptions.TimeoutError)
    if isinstance(exc, timed_out) or "timed out" in str(exc).lower():
        return TransientError(f"timed out (no data within {read_timeout:g} s)")
    dropped = (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)
    if isinstance(exc, dropped):
        return TransientError("connection dropped during the transfer")
    if isinstance(exc, requests.ConnectionError):
        return TransientError(f"cannot connect ({_root_reason(exc)})")
    return SourceError(str(exc))


def _root_reason(exc: BaseException) -> str:
    """The innermost OS-level reason of a connection error (e.g. 'connection refused')."""
    seen, visited = exc, set()
    while id(seen) not in visited:
        visited.add(id(seen))
        nxt = seen.__cause__ or seen.__context__ or next((a for a in seen.args if isinstance(a, BaseException)), None)
        if nxt is None:
            break
        seen = nxt
    if isinstance(seen, ConnectionRefusedError) or "refused" in str(exc).lower():
        return "connection refused"
    if "name or service not known" in str(exc).lower() or "nodename nor servname" in str(exc).lower():
        return "host not found"
    return type(seen).__name__

"""Resumable, verified downloads into the cache.

One call of :func:`download` takes the per-file lock, returns the cached file if it verifies, else
fetches from each URL in turn (mirrors) into ``<file>.part``: an interrupted transfer resumes with an
HTTP ``Range`` request (or restarts when the server ignores it), transient failures are retried with
exponential back-off, and the ``.part`` file is renamed into place only after its size and SHA-256 pass.

Partial files: any failure, a cancel from the progress callback and Ctrl-C all delete the ``.part``
file, so the cache never holds a partial download after an error. Only a process killed outright
leaves one behind; the next download of the same file resumes from it (the final checksum still guards).
"""

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import requests

from .. import __version__
from ..errors import DownloadError
from .cache import (
    PART_SUFFIX,
    ensure_dir,
    file_lock,
    record_hash,
    remove_quietly,
    sha256_file,
    sibling,
    verify_cached,
)
from .confirm import confirm_url
from .urls import expand_url, file_url_path, is_valid_url, url_filename

ProgressCallback = Callable[[int, Optional[int], float], Optional[bool]]
"""``callback(bytes_done, total_bytes_or_None, bytes_per_second)``; returning False cancels."""

DEFAULT_TIMEOUT: Tuple[float, float] = (10.0, 60.0)  # seconds: connect, and between two reads
DEFAULT_RETRIES = 3  # further attempts per URL after the first failure that made no progress
DEFAULT_BACKOFF = 1.0  # seconds before the first retry; doubled for each further one
MAX_BACKOFF = 30.0  # seconds, upper bound of a single wait
MAX_RESUMES = 50  # resumes after progress allowed per URL, so a server that always drops cannot loop forever
MAX_CONFIRM_PAGES = 3  # HTML confirmation pages followed per request
CHUNK = 64 << 10  # bytes per read; a dropped connection loses at most one read, so keep it small


class DownloadCancelledError(DownloadError):
    """The progress callback returned False (or raised this): the download stopped and left nothing behind."""


class _TransientError(Exception):
    """A failure worth retrying on the same URL (network error, time-out, 5xx, dropped connection)."""


class _SourceError(Exception):
    """This URL cannot deliver the file (404, web page, wrong size or checksum); try the next mirror."""


@dataclass
class Options:
    """Knobs of one download: time-outs in seconds (connect, read), retries and back-off base in seconds."""

    timeout: Union[float, Tuple[float, float]] = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    progress: Optional[ProgressCallback] = None


@dataclass
class _Meter:
    """Calls the progress callback with the transfer rate (bytes per second) of this call."""

    callback: Optional[ProgressCallback]
    start: float = field(default_factory=time.monotonic)
    received: int = 0

    def update(self, done: int, total: Optional[int], new_bytes: int) -> None:
        self.received += new_bytes
        if self.callback is None:
            return
        rate = self.received / max(time.monotonic() - self.start, 1e-6)
        if self.callback(done, total, rate) is False:
            raise DownloadCancelledError("download cancelled")


def download(
    url_or_urls: Union[str, Sequence[str]],
    dest_dir: Union["os.PathLike[str]", str],
    *,
    sha256: Optional[str] = None,
    size: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    filename: Optional[str] = None,
    timeout: Union[float, Tuple[float, float]] = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
) -> Path:
    """Download to ``dest_dir/filename`` (default: the URL's last segment) and return the path.

    ``url_or_urls``: one URL or mirrors tried in order (``http(s)://``, ``file://``, ``gdrive:<id>``).
    ``sha256``/``size`` (bytes): checked before the file appears; when no hash is given, the first
    download's hash is recorded in ``<file>.sha256`` and checked on every later call. An existing file
    that verifies is returned without touching the network; one that does not is deleted and fetched again.
    """
    urls = [url_or_urls] if isinstance(url_or_urls, str) else list(url_or_urls)
    _check_urls(urls)
    folder = Path(dest_dir)
    ensure_dir(folder)
    target = folder / (filename or url_filename(urls[0]))
    opts = Options(timeout=timeout, retries=retries, backoff=backoff, progress=progress)
    with _locked(target):
        note = _drop_if_corrupted(target, sha256, size)
        try:
            return _download_locked(urls, target, sha256, size, opts)
        except DownloadCancelledError:
            raise
        except DownloadError as exc:
            if note:
                raise DownloadError(f"{note}; {exc}") from exc
            raise


def _check_urls(urls: List[str]) -> None:
    if not urls:
        raise DownloadError("no URL to download from")
    for url in urls:
        if not is_valid_url(url):
            raise DownloadError(f"malformed URL {url!r} (expected http(s)://, file:// or gdrive:<id>)")


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold ``target``'s cache lock; waits while another process or thread downloads the same file."""
    try:
        lock = file_lock(target)
        lock.acquire()
    except OSError as exc:
        raise DownloadError(f"cannot lock {target} in the cache: {exc.strerror or exc}") from exc
    try:
        yield
    finally:
        lock.release()


def _drop_if_corrupted(target: Path, sha256: Optional[str], size: Optional[int]) -> str:
    """Delete a cached ``target`` that fails verification; return a note saying so ('' if none was dropped)."""
    if not target.is_file():
        return ""
    try:
        problem = verify_cached(target, sha256, size)
    except OSError as exc:
        problem = f"it cannot be read ({exc.strerror or exc})"
    if problem is None:
        return ""
    remove_quietly(target, sibling(target, ".sha256"))
    return f"the cached {target} was corrupted ({problem}) and has been deleted"


def _download_locked(urls: List[str], target: Path, sha256: Optional[str], size: Optional[int], opts: Options) -> Path:
    """Try each URL in turn; the verified ``.part`` file becomes ``target``. Cleans up on every failure."""
    if target.is_file():
        return target
    part = sibling(target, PART_SUFFIX)
    failures: List[str] = []
    try:
        for url in urls:
            try:
                _fetch_with_retries(url, part, size, opts)
                digest = _verify_part(part, sha256, size)
            except _SourceError as exc:
                remove_quietly(part)
                failures.append(f"{url}: {exc}")
                continue
            _install(part, target, digest)
            return target
    except BaseException:
        remove_quietly(part)
        raise
    raise DownloadError(_failure_summary(target.name, failures))


def _failure_summary(name: str, failures: List[str]) -> str:
    if len(failures) == 1:
        url, reason = failures[0].split(": ", 1)
        return f"download of {name} from {url} failed: {reason}"
    return f"download of {name} failed from all {len(failures)} sources: " + "; ".join(failures)


def _verify_part(part: Path, sha256: Optional[str], size: Optional[int]) -> str:
    """The SHA-256 of a complete ``.part`` file, after checking its size and expected hash."""
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        raise _SourceError(f"wrong size: received {actual_size} bytes, expected {size}")
    digest = sha256_file(part)
    if sha256 and digest != sha256.lower():
        raise _SourceError(f"checksum mismatch: expected SHA-256 {sha256.lower()}, got {digest}; file discarded")
    return digest


def _install(part: Path, target: Path, digest: str) -> None:
    """Atomically move the verified file into the cache and record its hash."""
    try:
        os.replace(part, target)
        record_hash(target, digest)
    except OSError as exc:
        remove_quietly(part)
        raise DownloadError(f"cannot write {target} into the cache: {exc.strerror or exc}") from exc


def _fetch_with_retries(url: str, part: Path, size: Optional[int], opts: Options) -> None:
    """Fill ``part`` from one URL, resuming after drops and retrying transient failures with back-off."""
    local = file_url_path(url)
    if local is not None:
        _copy_local(local, part, _Meter(opts.progress))
        return
    transfer = _HttpTransfer(expand_url(url), part, size, opts)
    try:
        _retry_loop(transfer, part, opts)
    finally:
        transfer.session.close()


def _retry_loop(transfer: "_HttpTransfer", part: Path, opts: Options) -> None:
    """Run attempts until one completes; waits ``backoff * 2**n`` seconds after the n-th fruitless one."""
    failures = resumes = tries = 0
    high = _size_of(part)
    while True:
        tries += 1
        try:
            transfer.run()
            return
        except _TransientError as exc:
            now = _size_of(part)
            if now > high and resumes < MAX_RESUMES:
                high, resumes = now, resumes + 1  # progress was made: resume at once, not a failure
                continue
            failures += 1
            if failures > opts.retries:
                raise _SourceError(f"{exc} ({tries} attempt{'s' if tries > 1 else ''})") from exc
            time.sleep(min(opts.backoff * 2 ** (failures - 1), MAX_BACKOFF))


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _copy_local(source: Path, part: Path, meter: _Meter) -> None:
    """Copy a ``file://`` mirror into ``part`` with progress."""
    try:
        total = source.stat().st_size
        src = open(source, "rb")  # noqa: SIM115 - closed by the with-block below; open errors are the source's
    except OSError as exc:
        raise _SourceError(f"cannot read {source}: {exc.strerror or exc}") from exc
    with src, _open_part(part, append=False) as out:
        done = 0
        for block in iter(lambda: src.read(CHUNK), b""):
            _write(out, block, part)
            done += len(block)
            meter.update(done, total, len(block))


def _open_part(part: Path, append: bool) -> BinaryIO:
    """``part`` opened for writing (appending when resuming); the caller closes it with ``with``."""
    try:
        return open(part, "ab" if append else "wb")  # noqa: SIM115 - returned into the caller's with-block
    except OSError as exc:
        raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from exc


def _write(fh, data: bytes, part: Path) -> None:
    """Append ``data``; a failing write (disk full, file too large) stops the whole download."""
    try:
        fh.write(data)
        fh.flush()
    except OSError as exc:
        raise DownloadError(f"cannot write {part}: {exc.strerror or exc} (disk full?)") from exc


class _HttpTransfer:
    """One URL's transfer into ``part``; ``run()`` is one attempt, resuming from what ``part`` holds."""

    def __init__(self, url: str, part: Path, size: Optional[int], opts: Options) -> None:
        self.url = url  # becomes the confirmed URL once a Drive confirmation page was followed
        self.part = part
        self.size = size
        self.opts = opts
        self.meter = _Meter(opts.progress)
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": f"SAMMed3DLib/{__version__}", "Accept-Encoding": "identity"})

    def run(self) -> None:
        offset = _size_of(self.part)
        try:
            with self._response(offset) as response:
                self._receive(response, offset)
        except requests.RequestException as exc:
            raise _classify(exc, self.opts.timeout) from exc

    def _response(self, offset: int) -> requests.Response:
        """The response carrying the file's bytes (from ``offset``), after any confirmation pages."""
        for _ in range(MAX_CONFIRM_PAGES + 1):
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            response = self.session.get(self.url, headers=headers, stream=True, timeout=self.opts.timeout)
            if response.status_code == 416 and offset != self.size:
                response.close()
                remove_quietly(self.part)  # the server refuses to resume what we hold: start again from 0
                raise _TransientError("the server could not resume the download")
            _check_status(response, offset, self.size)
            if "text/html" not in response.headers.get("Content-Type", "").lower():
                return response
            page = response.text
            response.close()
            confirmed = confirm_url(page, response.url, response.cookies.get_dict())
            if confirmed is None:
                raise _SourceError("the server sent a web page instead of the file (not public, or quota exceeded?)")
            self.url = confirmed
        raise _SourceError("too many confirmation pages; the file could not be fetched")

    def _receive(self, response: requests.Response, offset: int) -> None:
        """Write the body after ``offset`` (or from 0 if the server ignored Range) into ``part``."""
        if response.status_code == 416:
            return  # nothing left to send: ``part`` already holds the whole file (checked by the caller)
        if offset and response.status_code == 200:
            offset = 0  # the server ignored Range and sends the whole file: restart cleanly
        total = _total_size(response, offset)
        if self.size is not None and total is not None and total != self.size:
            raise _SourceError(f"wrong size: the server offers {total} bytes, expected {self.size}")
        done = offset
        with _open_part(self.part, append=offset > 0) as out:
            for block in response.iter_content(CHUNK):
                _write(out, block, self.part)
                done += len(block)
                if self.size is not None and done > self.size:
                    raise _SourceError(f"wrong size: the server sent more than the expected {self.size} bytes")
                self.meter.update(done, total, len(block))
        if total is not None and done < total:
            raise _TransientError(f"connection closed after {done} of {total} bytes")


def _check_status(response: requests.Response, offset: int, size: Optional[int]) -> None:
    """Raise for an HTTP status that carries no usable file bytes."""
    code = response.status_code
    if code == 416 and offset and size is not None and offset == size:
        return
    if code == 206 and _range_start(response) != offset:
        raise _TransientError("the server resumed at the wrong position")
    if code in (200, 206):
        return
    reason = f"HTTP {code} {response.reason or ''}".strip()
    response.close()
    if code in (408, 429) or code >= 500:
        raise _TransientError(reason)
    raise _SourceError(reason)


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


def _classify(exc: requests.RequestException, timeout) -> Exception:
    """Map a requests error to a retryable failure with a short reason, or a failure of this URL."""
    if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
        return _TransientError(f"timed out (no answer within {_seconds(timeout)} s)")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return _TransientError("connection dropped during the transfer")
    if isinstance(exc, requests.ConnectionError):
        return _TransientError(f"cannot connect ({_root_reason(exc)})")
    return _SourceError(str(exc))


def _seconds(timeout) -> str:
    value = timeout[1] if isinstance(timeout, tuple) else timeout
    return f"{value:g}"


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

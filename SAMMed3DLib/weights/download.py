"""Resumable, verified, bounded downloads into the cache.

One call of :func:`download` takes the per-file lock, returns the cached file if it verifies (else
deletes it), then fetches from each URL in turn (mirrors) into ``<file>.part``: an interrupted transfer
resumes with an HTTP ``Range`` request (or restarts when the server ignores it), transient failures are
retried with exponential back-off. The ``.part`` file becomes the cached file only after it passes
:func:`~.cache.inspect_file` in full: size and SHA-256 when known, and always the structure of a
SAM-Med3D checkpoint (every record's CRC-32 when no hash is known). Only then is its hash recorded.

Bounds: ``max_time`` seconds for the whole call; the registry's size, else ``max_size`` bytes; a minimum
pace per read time-out (see :mod:`.http`). Any failure, a cancel from the progress callback and Ctrl-C
delete the ``.part`` file, so the cache never holds a partial download after an error. Only a process
killed outright leaves one behind; the next download of the same file resumes from it.
"""

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

from ..errors import DownloadError
from .cache import PART_SUFFIX, ensure_dir, file_lock, inspect_file, record_hash, remove_quietly, sibling, verify_file
from .http import (
    CHUNK,
    Deadline,
    DownloadCancelledError,
    HttpTransfer,
    Meter,
    SourceError,
    StalledError,
    TransientError,
    open_part,
    size_of,
    write_block,
)
from .options import DownloadOptions, with_settings
from .urls import expand_url, file_url_path, is_valid_url, url_filename

__all__ = ["DownloadCancelledError", "download"]

MAX_BACKOFF = 30.0  # seconds, upper bound of a single wait
MAX_RESUMES = 50  # resumes after progress allowed per URL, so a server that always drops cannot loop forever


def download(
    url_or_urls: Union[str, Sequence[str]],
    dest_dir: Union["os.PathLike[str]", str],
    *,
    sha256: Optional[str] = None,
    size: Optional[int] = None,
    filename: Optional[str] = None,
    options: Optional[DownloadOptions] = None,
    **settings,
) -> Path:
    """Download to ``dest_dir/filename`` (default: the URL's last segment) and return the path.

    ``url_or_urls``: one URL or mirrors tried in order (``http(s)://``, ``file://``, ``gdrive:<id>``).
    ``sha256``/``size`` (bytes): checked before the file appears. ``options`` (or its fields as keywords:
    ``timeout``, ``retries``, ``backoff``, ``max_time``, ``max_size``, ``progress``) bound the transfer.
    An existing file that verifies is returned without touching the network; one that does not is
    deleted and fetched again.
    """
    opts = with_settings(options, **settings)
    urls = [url_or_urls] if isinstance(url_or_urls, str) else list(url_or_urls)
    _check_urls(urls)
    folder = Path(dest_dir)
    ensure_dir(folder)
    target = folder / (filename or url_filename(urls[0]))
    with locked(target):
        note = _drop_if_damaged(target, sha256, size)
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
def locked(target: Path) -> Iterator[None]:
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


def _drop_if_damaged(target: Path, sha256: Optional[str], size: Optional[int]) -> str:
    """Delete a cached ``target`` that fails verification; return a note saying so ('' if none was dropped)."""
    if not target.is_file():
        return ""
    try:
        problem = verify_file(target, sha256, size)
    except OSError as exc:
        problem = f"it cannot be read ({exc.strerror or exc})"
    if problem is None:
        return ""
    remove_quietly(target, sibling(target, ".sha256"))
    return f"the cached {target} was corrupted ({problem}) and has been deleted"


def _download_locked(
    urls: List[str], target: Path, sha256: Optional[str], size: Optional[int], opts: DownloadOptions
) -> Path:
    """Try each URL in turn; the verified ``.part`` file becomes ``target``. Cleans up on every failure."""
    if target.is_file():
        return target
    part = sibling(target, PART_SUFFIX)
    deadline = Deadline(opts.max_time, target.name)
    failures: List[str] = []
    try:
        for url in urls:
            deadline.check()
            try:
                _fetch_with_retries(url, part, size, opts, deadline)
                digest = _verify_part(part, sha256, size)
            except SourceError as exc:
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
    """The SHA-256 of a complete ``.part`` file that passed every check (see :func:`~.cache.inspect_file`)."""
    problem, digest = inspect_file(part, sha256, size, deep=True)
    if problem is not None or digest is None:
        raise SourceError(f"{problem}; file discarded")
    return digest


def _install(part: Path, target: Path, digest: str) -> None:
    """Atomically move the verified file into the cache and record its hash."""
    try:
        os.replace(part, target)
        record_hash(target, digest)
    except OSError as exc:
        remove_quietly(part)
        raise DownloadError(f"cannot write {target} into the cache: {exc.strerror or exc}") from exc


def _fetch_with_retries(url: str, part: Path, size: Optional[int], opts: DownloadOptions, deadline: Deadline) -> None:
    """Fill ``part`` from one URL, resuming after drops and retrying transient failures with back-off."""
    local = file_url_path(url)
    if local is not None:
        _copy_local(local, part, size, opts, deadline)
        return
    transfer = HttpTransfer(expand_url(url), part, size, opts, deadline)
    try:
        _retry_loop(transfer, part, opts, deadline)
    finally:
        transfer.session.close()


def _retry_loop(transfer: HttpTransfer, part: Path, opts: DownloadOptions, deadline: Deadline) -> None:
    """Run attempts until one completes; waits ``backoff * 2**n`` seconds after the n-th fruitless one."""
    failures = resumes = tries = 0
    high = size_of(part)
    while True:
        tries += 1
        deadline.check()
        try:
            transfer.run()
            return
        except TransientError as exc:
            now = size_of(part)
            if now > high and resumes < MAX_RESUMES and not isinstance(exc, StalledError):
                high, resumes = now, resumes + 1  # progress was made: resume at once, not a failure
                continue
            high = max(high, now)
            failures += 1
            if failures > opts.retries:
                raise SourceError(f"{exc} ({tries} attempt{'s' if tries > 1 else ''})") from exc
            time.sleep(max(0.0, min(opts.backoff * 2 ** (failures - 1), MAX_BACKOFF, deadline.remaining())))


def _copy_local(source: Path, part: Path, size: Optional[int], opts: DownloadOptions, deadline: Deadline) -> None:
    """Copy a ``file://`` mirror into ``part`` with progress, under the same size cap and deadline."""
    try:
        total = source.stat().st_size
        src = open(source, "rb")  # noqa: SIM115 - closed by the with-block below; open errors are the source's
    except OSError as exc:
        raise SourceError(f"cannot read {source}: {exc.strerror or exc}") from exc
    if size is None and total > opts.max_size:
        src.close()
        raise SourceError(
            f"{source} has {total} bytes, more than the {opts.max_size} allowed (max_size: the registry entry's or "
            "--max-size)"
        )
    meter = Meter(opts.progress)
    with src, open_part(part, append=False) as out:
        done = 0
        for block in iter(lambda: src.read(CHUNK), b""):
            write_block(out, block, part)
            done += len(block)
            meter.update(done, total, len(block))
            deadline.check()

"""The checkpoint cache: where files live, the lock that serialises writers, and integrity checks.

Layout: ``<cache dir>/checkpoints/<file name>`` with ``<file name>.sha256`` beside it (the hash of the
file as it was admitted, in ``sha256sum`` format; written only for a file that passed :func:`verify_file`);
locks sit in ``checkpoints/.locks/``. Files appear only by ``os.replace`` of a verified ``.part`` file,
so a reader never sees a half-written checkpoint.
"""

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Optional, Tuple, Union

from filelock import FileLock
from platformdirs import user_cache_dir

from ..errors import DownloadError
from .registry import ModelEntry
from .structure import checkpoint_problem
from .urls import url_filename

APP_NAME = "SAMMed3D"
SUBDIR = "checkpoints"
PART_SUFFIX = ".part"
HASH_SUFFIX = ".sha256"
LOCK_SUFFIX = ".lock"
LOCKS_DIR = ".locks"
HASH_CHUNK = 4 << 20  # bytes read per step while hashing

PathLike = Union["os.PathLike[str]", str]


def default_cache_dir() -> Path:
    """``$SAMMED3D_CACHE_DIR``, else the per-user cache folder (e.g. ``~/.cache/SAMMed3D``)."""
    env = os.environ.get("SAMMED3D_CACHE_DIR")
    return Path(env) if env else Path(user_cache_dir(APP_NAME, appauthor=False))


def checkpoints_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """The folder holding checkpoints inside ``cache_dir`` (default :func:`default_cache_dir`)."""
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / SUBDIR


def cached_path(entry: ModelEntry, cache_dir: Optional[PathLike] = None) -> Path:
    """Where ``entry``'s checkpoint is (or will be) cached; the file may not exist yet."""
    return checkpoints_dir(cache_dir) / entry.filename


def url_cache_dir(url: str, cache_dir: Optional[PathLike] = None) -> Path:
    """The folder a plain URL's download is cached in: one per URL, so two URLs ending in the same
    file name never collide."""
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return checkpoints_dir(cache_dir) / "urls" / key


def url_cached_path(url: str, cache_dir: Optional[PathLike] = None) -> Path:
    """Where a plain URL's checkpoint is (or will be) cached; the file may not exist yet."""
    return url_cache_dir(url, cache_dir) / url_filename(url)


def sibling(path: Path, suffix: str) -> Path:
    """``path`` with ``suffix`` appended to its full name (``a.pth`` → ``a.pth.part``)."""
    return path.with_name(path.name + suffix)


def file_lock(path: Path) -> FileLock:
    """A lock serialising every process and thread that reads or writes ``path`` in the cache.

    Lock files live in a hidden ``.locks`` folder beside ``path`` so that listings show only checkpoints.
    """
    folder = path.parent / LOCKS_DIR
    folder.mkdir(exist_ok=True)
    return FileLock(str(folder / (path.name + LOCK_SUFFIX)))


def ensure_dir(folder: Path) -> None:
    """Create ``folder`` (and parents), or one DownloadError saying why the cache cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create cache directory {folder}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DownloadError(f"cache directory {folder} is not writable; set SAMMED3D_CACHE_DIR or --cache-dir")


def sha256_file(path: Path) -> str:
    """Lower-case hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_recorded_hash(path: Path) -> Optional[str]:
    """The hash recorded beside ``path`` at its first download, or None if there is none (or unreadable)."""
    try:
        text = sibling(path, HASH_SUFFIX).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0].lower() if text and len(text[0]) == 64 else None


def record_hash(path: Path, digest: str) -> None:
    """Write ``<path>.sha256`` atomically (write-then-rename)."""
    target = sibling(path, HASH_SUFFIX)
    tmp = sibling(path, HASH_SUFFIX + ".tmp")
    tmp.write_text(f"{digest}  {path.name}\n", encoding="ascii")
    os.replace(tmp, target)


def remove_quietly(*paths: Path) -> None:
    """Delete files that may not exist; failures to delete are ignored (nothing better to do)."""
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def inspect_file(
    path: Path, sha256: Optional[str] = None, size: Optional[int] = None, deep: bool = True
) -> Tuple[Optional[str], Optional[str]]:
    """The one check of a checkpoint file: (why it is bad or None, its SHA-256 if it was hashed). No side effects.

    In order: the size (``size`` bytes, when known); the hash (``sha256`` when known, else the one
    recorded when the file was admitted; ``deep`` only, it reads the whole file); the structure (a
    complete SAM-Med3D checkpoint, see :mod:`.structure`). The structure is checked even when a
    recorded hash matches, because caches written before this check existed recorded the hash of
    whatever arrived. With no hash to compare, ``deep`` checks every record's CRC-32 instead.
    """
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"wrong size: {actual_size} bytes, expected {size}", None
    expected = (sha256 or "").lower() or read_recorded_hash(path)
    actual = sha256_file(path) if deep else None
    if expected and actual is not None and actual != expected:
        return f"checksum mismatch: expected SHA-256 {expected}, got {actual}", actual
    return checkpoint_problem(path, full=deep and not expected), actual


def verify_file(
    path: Path, sha256: Optional[str] = None, size: Optional[int] = None, deep: bool = True
) -> Optional[str]:
    """:func:`inspect_file` for a file in the cache; a good file that was hashed gets its hash recorded
    (a file copied in by hand is checked in full once, then by its hash). Never deletes."""
    problem, actual = inspect_file(path, sha256, size, deep)
    if problem is None and actual is not None and read_recorded_hash(path) != actual:
        record_hash(path, actual)
    return problem

"""Checkpoints a user can get and trust: the registry, the cache and verified, resumable downloads.

Public API: :func:`resolve_checkpoint` (registry id, path or URL → local file), :func:`download`,
:func:`load_registry`, :func:`default_registry_path`, :func:`default_cache_dir`, :func:`cached_path`.
This package never imports torch, so listing models stays fast.
"""

import os
from pathlib import Path
from typing import Optional, Tuple, Union

from ..errors import CheckpointError, RegistryError
from .cache import cached_path as cached_path
from .cache import checkpoints_dir, default_cache_dir, sha256_file, url_cache_dir
from .cache import url_cached_path as url_cached_path
from .download import (
    DEFAULT_BACKOFF,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    DownloadCancelledError,
    ProgressCallback,
    download,
)
from .registry import ModelEntry, Registry, as_registry, default_registry_path, load_registry
from .urls import file_url_path, is_remote, url_filename

__all__ = [
    "DownloadCancelledError",
    "ModelEntry",
    "ProgressCallback",
    "cached_path",
    "default_cache_dir",
    "default_registry_path",
    "download",
    "load_registry",
    "resolve_checkpoint",
]

PathLike = Union["os.PathLike[str]", str]


def resolve_checkpoint(
    spec: PathLike,
    *,
    registry: Union[Registry, PathLike, None] = None,
    cache_dir: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    timeout: Union[float, Tuple[float, float]] = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    sha256: Optional[str] = None,
) -> Path:
    """A verified local file for ``spec``: a registry id, a local path, a ``file://`` or ``http(s)://`` URL.

    Registry ids and URLs are downloaded once into ``cache_dir`` (default :func:`default_cache_dir`);
    a cached file that verifies is returned without network access. ``sha256``, if given, must match
    (it overrides the registry's). ``timeout`` in seconds (connect, read); ``backoff`` in seconds.
    """
    text = os.fspath(spec)
    options = dict(progress=progress, timeout=timeout, retries=retries, backoff=backoff)
    local = file_url_path(text)
    if local is not None:
        return _checked_local(local, sha256)
    if is_remote(text):
        return download(text, url_cache_dir(text, cache_dir), sha256=sha256, filename=url_filename(text), **options)
    if os.path.isfile(text):
        return _checked_local(Path(text), sha256)
    entries = as_registry(registry)
    if text in entries:
        entry = entries[text]
        folder = checkpoints_dir(cache_dir)
        return download(
            entry.urls, folder, sha256=sha256 or entry.sha256, size=entry.size, filename=entry.filename, **options
        )
    if _looks_like_path(text):
        raise CheckpointError(f"checkpoint not found: {text}")
    known = ", ".join(entries) or "none"
    raise RegistryError(f"unknown model id '{text}' (known: {known}); or give a checkpoint file or URL")


def _checked_local(path: Path, sha256: Optional[str]) -> Path:
    """``path`` if it exists (and matches ``sha256`` when given); local files are never copied."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if sha256:
        actual = sha256_file(path)
        if actual != sha256.lower():
            raise CheckpointError(
                f"{path} does not match its checksum: expected SHA-256 {sha256.lower()}, got {actual}"
            )
    return path


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith((".pth", ".pt", ".ckpt", ".bin"))

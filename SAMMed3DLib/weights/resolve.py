"""One way to find weights: what a spec names (:func:`locate`), its state in the cache (:func:`cache_status`,
used by the ``models`` command, the Slicer panel and loading) and the verified local file
(:func:`resolve_checkpoint`, with or without the network).

A spec is a registry id, a local path, a ``file://`` URL (both used in place, never copied) or an
``http(s)://`` / ``gdrive:`` URL (cached once per URL).
"""

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Tuple

from ..errors import CheckpointError, RegistryError
from .cache import PART_SUFFIX, cached_path, sha256_file, sibling, url_cached_path, verify_file
from .download import download as fetch
from .download import locked
from .http import size_of
from .options import DownloadOptions, PathLike, with_settings
from .registry import ModelEntry, as_registry
from .urls import file_url_path, is_remote

MISSING, PARTIAL, CACHED, VERIFIED, DAMAGED, LOCAL = "missing", "partial", "cached", "verified", "damaged", "local"
"""States of :class:`Status`. ``cached``: present and structurally sound, not hashed by this call."""


@dataclass(frozen=True)
class Slot:
    """Where a spec's checkpoint lives and what it must match. ``urls`` is empty for a local file."""

    path: Path
    name: str  # for messages: the registry entry's name, the URL or the path
    urls: Tuple[str, ...] = ()
    sha256: Optional[str] = None
    size: Optional[int] = None  # bytes
    max_size: Optional[int] = None  # bytes: the registry's bound while ``size`` is unknown

    @property
    def in_cache(self) -> bool:
        return bool(self.urls)


@dataclass(frozen=True)
class Status:
    """A checkpoint's state: ``missing``, ``partial`` (an interrupted download), ``cached``, ``verified``,
    ``damaged`` (``problem`` says why) or ``local`` (a file outside the cache, used in place).
    ``size``: bytes on disk (of the ``.part`` file when partial), None when missing."""

    state: str
    path: Path
    size: Optional[int]
    name: str
    problem: Optional[str] = None

    @property
    def usable(self) -> bool:
        return self.state in (CACHED, VERIFIED, LOCAL)


def locate(spec: "os.PathLike[str] | str", options: Optional[DownloadOptions] = None, **settings) -> Slot:
    """The :class:`Slot` of ``spec``; RegistryError for an unknown id, CheckpointError for a missing path.
    ``sha256`` (a keyword) overrides the registry's hash."""
    sha256 = settings.pop("sha256", None)
    opts = with_settings(options, **settings)
    text = os.fspath(spec)
    local = file_url_path(text)
    if local is not None:
        return Slot(local, str(local), sha256=sha256)
    if is_remote(text):
        return Slot(url_cached_path(text, opts.cache_dir), text, (text,), sha256)
    if os.path.isfile(text):
        return Slot(Path(text), text, sha256=sha256)
    entries = as_registry(opts.registry)
    if text in entries:
        return entry_slot(entries[text], opts.cache_dir, sha256)
    if _looks_like_path(text):
        raise CheckpointError(f"checkpoint not found: {text}")
    known = ", ".join(entries) or "none"
    raise RegistryError(f"unknown model id '{text}' (known: {known}); or give a checkpoint file or URL")


def entry_slot(entry: ModelEntry, cache_dir: Optional[PathLike] = None, sha256: Optional[str] = None) -> Slot:
    """The :class:`Slot` of a registry entry in ``cache_dir`` (default :func:`~.cache.default_cache_dir`)."""
    return Slot(
        cached_path(entry, cache_dir), entry.name, entry.urls, sha256 or entry.sha256, entry.size, entry.max_size
    )


def cache_status(
    spec: "os.PathLike[str] | str", options: Optional[DownloadOptions] = None, *, deep: bool = False, **settings
) -> Status:
    """The state of ``spec``'s checkpoint, without network access. ``deep`` hashes the file (and records
    the hash of a good file that had none); otherwise only its size and structure are checked (milliseconds)."""
    return slot_status(locate(spec, options, **settings), deep)


def slot_status(slot: Slot, deep: bool = False) -> Status:
    """:func:`cache_status` of an already located slot."""
    path = slot.path
    if not path.is_file():
        part = sibling(path, PART_SUFFIX)
        if slot.in_cache and part.is_file():
            return Status(PARTIAL, path, size_of(part), slot.name)
        return Status(MISSING, path, None, slot.name)
    try:
        problem = _local_problem(slot, deep) if not slot.in_cache else _cached_problem(slot, deep)
    except OSError as exc:
        problem = f"it cannot be read ({exc.strerror or exc})"
    if problem is not None:
        return Status(DAMAGED, path, size_of(path), slot.name, problem)
    state = LOCAL if not slot.in_cache else VERIFIED if deep else CACHED
    return Status(state, path, size_of(path), slot.name)


def _cached_problem(slot: Slot, deep: bool) -> Optional[str]:
    if not deep:
        return verify_file(slot.path, slot.sha256, slot.size, deep=False)
    with locked(slot.path):  # a download may be replacing the file; a deep check also records the hash
        return verify_file(slot.path, slot.sha256, slot.size, deep=True)


def _local_problem(slot: Slot, deep: bool) -> Optional[str]:
    """A local file is the user's own: only an explicit ``sha256`` is checked (loading checks the rest)."""
    if not (deep and slot.sha256):
        return None
    actual = sha256_file(slot.path)
    if actual != slot.sha256.lower():
        return f"checksum mismatch: expected SHA-256 {slot.sha256.lower()}, got {actual}"
    return None


def resolve_checkpoint(
    spec: "os.PathLike[str] | str",
    options: Optional[DownloadOptions] = None,
    *,
    download: bool = True,
    sha256: Optional[str] = None,
    **settings,
) -> Path:
    """A verified local file for ``spec`` (a registry id, a path, a ``file://``, ``http(s)://`` or ``gdrive:`` URL).

    ``options`` or its fields as keywords (``cache_dir``, ``registry``, ``timeout``, ``retries``, ``backoff``,
    ``max_time``, ``max_size``, ``progress``) say where and how. ``sha256``, if given, must match (it overrides
    the registry's). With ``download`` (the default) a missing or damaged cached file is fetched (again);
    with ``download=False`` the network is never touched and nothing is deleted: a checkpoint that is not
    in the cache, or is damaged there, is one CheckpointError saying so.
    """
    opts = with_settings(options, **settings)
    slot = locate(spec, opts, sha256=sha256)
    if slot.in_cache and download:
        if slot.size is None and slot.max_size is not None and slot.max_size < opts.max_size:
            opts = replace(opts, max_size=slot.max_size)  # the entry's bound, while the size is unknown
        name = slot.path.name
        return fetch(slot.urls, slot.path.parent, sha256=slot.sha256, size=slot.size, filename=name, options=opts)
    status = slot_status(slot, deep=True)
    if status.state in (MISSING, PARTIAL):
        if not slot.in_cache:
            raise CheckpointError(f"checkpoint not found: {slot.path}")
        raise CheckpointError(f"checkpoint {slot.name} is not downloaded yet ({slot.path}); download it first")
    if status.state == DAMAGED:
        what = f"the cached checkpoint {slot.name} ({slot.path})" if slot.in_cache else str(slot.path)
        advice = "; download it again" if slot.in_cache else ""
        raise CheckpointError(f"{what} is damaged: {status.problem}{advice}")
    return slot.path


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith((".pth", ".pt", ".ckpt", ".bin"))

"""Checkpoints a user can get and trust: the registry, the cache and verified, bounded, resumable downloads.

Public API: :func:`resolve_checkpoint` (registry id, path or URL → verified local file; ``download=False``
never touches the network), :func:`cache_status` (one answer to "is it there and good?"),
:class:`DownloadOptions` (cache folder, registry, time-outs, retries, size cap, progress), :func:`download`,
:func:`load_registry`, :func:`default_registry_path`, :func:`default_cache_dir`, :func:`cached_path`.
May import the engine's errors only. Never imports torch, so listing models stays fast: a checkpoint's
structure is checked from its zip directory and pickle opcodes (see :mod:`.structure`).
"""

from .cache import cached_path as cached_path
from .cache import default_cache_dir, url_cached_path
from .download import DownloadCancelledError, download
from .options import DEFAULT_MAX_SIZE, DEFAULT_MAX_TIME, DEFAULT_RETRIES, DEFAULT_TIMEOUT, DownloadOptions
from .options import ProgressCallback as ProgressCallback
from .registry import ModelEntry, Registry, as_registry, default_registry_path, load_registry
from .resolve import Slot, Status, cache_status, entry_slot, locate, resolve_checkpoint, slot_status

__all__ = [
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MAX_TIME",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "DownloadCancelledError",
    "DownloadOptions",
    "ModelEntry",
    "ProgressCallback",
    "Registry",
    "Slot",
    "Status",
    "as_registry",
    "cache_status",
    "cached_path",
    "default_cache_dir",
    "default_registry_path",
    "download",
    "entry_slot",
    "load_registry",
    "locate",
    "resolve_checkpoint",
    "slot_status",
    "url_cached_path",
]

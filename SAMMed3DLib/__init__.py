"""SAM-Med3D interactive 3-D segmentation engine (pure Python: no Qt, no Slicer).

Public API: :func:`load_model`, :class:`InteractiveSession`, the errors in :mod:`SAMMed3DLib.errors`.
Heavy modules (torch) load on first use, so ``import SAMMed3DLib`` stays cheap.
"""

from importlib import import_module

from .errors import CheckpointError, DownloadError, InputError, RegistryError, SAMMed3DError

__version__ = "0.1.0"

_LAZY = {
    "load_model": ".model",
    "InteractiveSession": ".session",
}

__all__ = ["CheckpointError", "DownloadError", "InputError", "RegistryError", "SAMMed3DError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

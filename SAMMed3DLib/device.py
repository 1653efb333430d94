"""Choice of compute device and precision. Importing it does not import torch (the Slicer panel and the
command line's argument parser read :data:`DEVICES` before PyTorch may be installed)."""

from typing import TYPE_CHECKING, Optional

from .errors import InputError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cuda", "mps", "cpu")
"""The devices a user may ask for: ``auto`` picks CUDA, else Apple MPS, else the CPU."""
_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
PRECISIONS = tuple(_DTYPE_NAMES)
"""Precisions of the image encoder; the prompt encoder and mask decoder always run in fp32."""


def precision_dtype(precision: str) -> "torch.dtype":
    """The torch dtype of a name in :data:`PRECISIONS`."""
    import torch

    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    return getattr(torch, _DTYPE_NAMES[precision])


def mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(requested: Optional[str] = "auto") -> "torch.device":
    """``auto`` → CUDA, else Apple MPS, else CPU. An explicit device that is absent falls back to CPU.

    Callers that must tell the user about a fallback compare the result with what they asked for.
    """
    import torch

    name = (requested or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if name.startswith("cuda"):
        return torch.device(name) if torch.cuda.is_available() else torch.device("cpu")
    if name == "mps":
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {requested!r}; use {', '.join(DEVICES)}")


def resolve_precision(precision: str, device: "torch.device") -> "torch.dtype":
    """fp32 everywhere; bf16/fp16 are opt-in and only on a GPU (on a CPU they are slower, not faster)."""
    dtype = precision_dtype(precision)
    if precision != "fp32" and device.type == "cpu":
        raise InputError(f"{precision} is a GPU option; on a CPU the encoder runs in fp32")
    return dtype

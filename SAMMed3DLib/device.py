"""Choice of compute device and precision."""

from typing import Optional

import torch

from .errors import InputError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Precisions of the image encoder; the prompt encoder and mask decoder always run in fp32."""


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(requested: Optional[str] = "auto") -> torch.device:
    """``auto`` → CUDA, else Apple MPS, else CPU. An explicit device that is absent falls back to CPU.

    Callers that must tell the user about a fallback compare the result with what they asked for.
    """
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
    raise InputError(f"unknown device {requested!r}; use auto, cuda, mps or cpu")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """fp32 everywhere; bf16/fp16 are opt-in and only on a GPU (on a CPU they are slower, not faster)."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision != "fp32" and device.type == "cpu":
        raise InputError(f"{precision} is a GPU option; on a CPU the encoder runs in fp32")
    return PRECISIONS[precision]

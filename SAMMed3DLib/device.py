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


def cpu_has_bf16_products() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), which make bf16 matrix
    products ~2.5x faster than fp32 (measured on an AMD EPYC with AVX512-BF16); without them bf16 is
    emulated and slower."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe is not None and probe() for probe in probes)


def resolve_precision(precision: str, device: "torch.device") -> "torch.dtype":
    """fp32 by default. bf16/fp16 are opt-in on a GPU. On a CPU, bf16 is offered where the CPU has bf16
    dot-product instructions (the encoder's matrix products then run in bf16, the rest in fp32); fp16 never."""
    dtype = precision_dtype(precision)
    if precision == "fp32" or device.type != "cpu":
        return dtype
    if precision == "bf16" and cpu_has_bf16_products():
        return dtype
    raise InputError(
        f"{precision} is a GPU option on this CPU (bf16 needs a CPU with AVX512-BF16 or AMX instructions, "
        "where only the encoder's matrix products use it); on this CPU the encoder runs in fp32"
    )

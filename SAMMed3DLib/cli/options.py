"""Options several commands share: where the network runs and in which precision."""

import argparse
from typing import TYPE_CHECKING

from ..device import DEVICES, PRECISIONS

if TYPE_CHECKING:
    import torch


def add_device_arguments(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--device`` (auto, cuda, mps, cpu) and ``--precision`` of the image encoder (fp32 by default)."""
    parser.add_argument("--device", default=default, choices=DEVICES)
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="image encoder precision (default fp32): bf16 runs the encoder's matrix products in bfloat16 on a GPU or "
        "on a CPU with AVX512-BF16 or AMX instructions (the first click in a region 1.4x faster on such a CPU), with "
        "masks that differ slightly from fp32",
    )


def checked_device(args: argparse.Namespace) -> "torch.device":
    """The device ``args.device`` resolves to, after the one precision rule every command follows (bf16 on a
    CPU only with bf16 instructions, fp16 only on a GPU), so that a refused precision is one message before
    any work."""
    from ..device import resolve_device, resolve_precision

    device = resolve_device(args.device)
    if getattr(args, "precision", None):
        resolve_precision(args.precision, device)
    return device

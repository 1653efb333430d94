"""Options several commands share: where the network runs and in which precision."""

import argparse

from ..device import DEVICES, PRECISIONS


def add_device_arguments(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--device`` (auto, cuda, mps, cpu) and ``--precision`` of the image encoder (fp32 by default)."""
    parser.add_argument("--device", default=default, choices=DEVICES)
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="image encoder precision (default fp32): bf16 is about twice as fast on a GPU or on a CPU with "
        "AVX512-BF16 or AMX instructions, with masks that differ slightly from fp32",
    )

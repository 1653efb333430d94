"""``models``: list the registry's checkpoints and which of them are in the cache (never imports torch)."""

import argparse
from pathlib import Path
from typing import Optional

from ..weights import (
    ModelEntry,
    Status,
    default_cache_dir,
    default_registry_path,
    entry_slot,
    load_registry,
    slot_status,
)
from ..weights.cache import checkpoints_dir

HELP = "list the checkpoints of the model registry and which are cached"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_location_arguments(parser)
    parser.add_argument("--verify", action="store_true", help="hash cached files to check them in full (slower)")


def add_location_arguments(parser: argparse.ArgumentParser) -> None:
    """``--registry`` and ``--cache-dir``, shared with the ``download`` command."""
    parser.add_argument("--registry", type=Path, help="registry file (default: $SAMMED3D_REGISTRY, model_weights.json)")
    parser.add_argument("--cache-dir", type=Path, help="cache folder (default: $SAMMED3D_CACHE_DIR or the user cache)")


def human_size(size: Optional[int]) -> str:
    """``size`` in bytes as e.g. ``1.2 GB``; ``?`` when unknown."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def cache_state(entry: ModelEntry, cache_dir: Path, verify: bool = False) -> str:
    """``-``, ``partial``, ``cached (size)``, ``verified`` or ``DAMAGED (why)`` for ``entry`` in ``cache_dir``.
    Without ``verify`` a file's size and structure are checked (fast); with it, also its SHA-256."""
    return describe(slot_status(entry_slot(entry, cache_dir), deep=verify))


def describe(status: Status) -> str:
    """A :class:`Status` as one cell of the listing."""
    if status.state == "missing":
        return "-"
    if status.state == "damaged":
        return f"DAMAGED ({status.problem})"
    return f"{status.state} ({human_size(status.size)})"


def run(args: argparse.Namespace) -> int:
    registry_path = args.registry or default_registry_path()
    entries = load_registry(registry_path)
    cache_dir = args.cache_dir or default_cache_dir()
    rows = [("ID", "SIZE", "CACHE", "DESCRIPTION")]
    for entry in entries.values():
        marker = "*" if entry.recommended else " "
        state = cache_state(entry, cache_dir, args.verify)
        rows.append((marker + entry.id, human_size(entry.size), state, entry.description))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    print(f"\n* recommended. Registry: {registry_path}. Cache: {checkpoints_dir(cache_dir)}")
    return 0

"""Counts in words for messages: "1 click", "2 clicks", "18,234 voxels"."""

from typing import Optional


def count(number: int, noun: str, plural: Optional[str] = None) -> str:
    """``number`` (with thousands separators) and ``noun``, in the plural unless ``number`` is 1."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"

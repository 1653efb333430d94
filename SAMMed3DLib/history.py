"""A bounded undo/redo history: the steps behind a cursor can be undone, those ahead of it redone.

An immutable value (every change returns a new history), so that a caller can keep the history it
started from and put it back if its step fails halfway. Steps are opaque to the history.
"""

import numbers
from dataclasses import dataclass
from typing import Generic, Optional, Tuple, TypeVar

from .errors import InputError

HISTORY_LIMIT = 100
"""Undo steps kept by default."""

S = TypeVar("S")


@dataclass(frozen=True)
class History(Generic[S]):
    """At most ``limit`` steps, oldest first; ``cursor`` steps are done (undoable), the rest undone (redoable)."""

    limit: int = HISTORY_LIMIT
    steps: Tuple[S, ...] = ()
    cursor: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, numbers.Integral) or self.limit < 1:
            raise InputError(f"the undo history limit must be a whole number of steps ≥ 1, got {self.limit!r}")
        object.__setattr__(self, "limit", int(self.limit))  # numpy integers too, stored as a plain int

    @property
    def can_undo(self) -> bool:
        return self.cursor > 0

    @property
    def can_redo(self) -> bool:
        return self.cursor < len(self.steps)

    def push(self, step: S) -> Tuple["History[S]", Tuple[S, ...]]:
        """Add ``step`` after the cursor; undone steps are forgotten. Returns the new history and the oldest
        steps that no longer fit within ``limit`` (they can no longer be undone)."""
        steps = (*self.steps[: self.cursor], step)
        overflow = max(0, len(steps) - self.limit)
        return History(self.limit, steps[overflow:], len(steps) - overflow), steps[:overflow]

    def undo(self) -> Tuple["History[S]", Optional[S]]:
        """The history with its last done step undone, and that step (None, unchanged, if there is none)."""
        if not self.can_undo:
            return self, None
        return History(self.limit, self.steps, self.cursor - 1), self.steps[self.cursor - 1]

    def redo(self) -> Tuple["History[S]", Optional[S]]:
        """The history with its next undone step redone, and that step (None, unchanged, if there is none)."""
        if not self.can_redo:
            return self, None
        return History(self.limit, self.steps, self.cursor + 1), self.steps[self.cursor]

    def drop_undone(self) -> "History[S]":
        """The history without its undone steps (nothing left to redo)."""
        return History(self.limit, self.steps[: self.cursor], self.cursor)

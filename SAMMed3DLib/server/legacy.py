"""Bridge for an engine whose steps still return the bare mask (before the StepResult API of BOARD.md).

:func:`make_session` returns the engine's session when its steps already return StepResults, else this wrapper,
which gives the same results (changed region, timings, encoded, payload, dropped) from the old attributes.
Delete this module once every engine the server runs on has the StepResult API.
"""

import inspect
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

import SimpleITK as sitk


@dataclass(frozen=True)
class _Result:
    mask: sitk.Image
    changed: Optional[tuple]
    timings: Mapping[str, float]
    encoded: bool
    clicks: tuple
    payload: Any = None
    dropped: Tuple[Any, ...] = ()


def has_step_results(session_class: type) -> bool:
    """Whether the engine's steps take payloads (and so return StepResults)."""
    return "payload" in inspect.signature(session_class.add_click).parameters


def make_session(session_class: type, model: Any, image: sitk.Image, **options: Any) -> Any:
    """A session with the StepResult API on ``model`` and ``image``."""
    if has_step_results(session_class):
        return session_class(model, image, **options)
    limit = options.pop("history_limit", None)
    return _Bridge(session_class(model, image, **options), limit)


class _Bridge:
    """The old session with StepResult-style steps; payloads mirror the engine's undo history."""

    def __init__(self, session: Any, history_limit: Optional[int]) -> None:
        from ..session import HISTORY_LIMIT

        self._session = session
        self._limit = history_limit or HISTORY_LIMIT
        self._payloads: List[Any] = []
        self._cursor = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    @property
    def auto_extend(self) -> bool:
        return self._session.auto_extend

    @auto_extend.setter
    def auto_extend(self, value: bool) -> None:
        self._session.auto_extend = value

    def _result(self, payload: Any = None, dropped: tuple = (), changed: Any = "last") -> _Result:
        s = self._session
        return _Result(s.mask, s.last_changed_region if changed == "last" else changed, dict(s.last_timings),
                       bool(s.last_encoded), tuple(s.clicks), payload, dropped)

    def _added(self, payload: Any) -> tuple:
        del self._payloads[self._cursor :]
        self._payloads.append(payload)
        dropped = tuple(self._payloads[: max(0, len(self._payloads) - self._limit)])
        del self._payloads[: len(dropped)]
        self._cursor = len(self._payloads)
        return dropped

    def add_click(self, point_ras: Any, positive: bool = True, *, payload: Any = None) -> _Result:
        self._session.add_click(point_ras, positive)
        return self._result(payload, self._added(payload))

    def reset(self, *, payload: Any = None) -> _Result:
        before = self._last_step()
        self._session.reset()
        if self._last_step() is before:  # an already reset session adds no step
            return self._result(payload, changed=None)
        return self._result(payload, self._added(payload))

    def _last_step(self) -> Any:
        history = self._session._history
        return history[self._session._cursor - 1] if self._session._cursor else None

    def undo(self) -> _Result:
        if not self._session.can_undo:
            return self._result(changed=None)
        self._session.undo()
        self._cursor -= 1
        return self._result(self._payloads[self._cursor])

    def redo(self) -> _Result:
        if not self._session.can_redo:
            return self._result(changed=None)
        self._session.redo()
        self._cursor += 1
        return self._result(self._payloads[self._cursor - 1])

    def discard_last_step(self) -> _Result:
        if not self._session.can_undo:
            return self._result(changed=None)
        self._session.discard_last_step()
        self._cursor -= 1
        payload = self._payloads[self._cursor]
        del self._payloads[self._cursor :]
        return self._result(payload)

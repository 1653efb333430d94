"""What the module tells the user: the one-line messages, the status line after a step, and :class:`Reporter`,
the controller's message list (no MRML). Nothing here calls the controller."""

from typing import Any, Callable, List, Optional, Tuple

from ..errors import SAMMed3DError
from ..wording import count

TORCH_NEEDED = "SAM-Med3D needs PyTorch: the point was removed. Place it again to be asked to install PyTorch."
DELETED_POINT = "A click's point cannot be deleted on its own; it was put back. Use Undo (Ctrl+Z) or Reset."
MOVED_POINT = "A click's point cannot be moved; it was put back where it was. Use Undo (Ctrl+Z) and click again."


def error_text(error: BaseException) -> str:
    """A failed action's message: our own errors say what is wrong; anything else is unexpected."""
    return str(error) if isinstance(error, SAMMed3DError) else f"Unexpected error: {error!r}"


def download_error_text(error: BaseException) -> str:
    """A failed download's message (a cancelled or refused download is one of our errors)."""
    return str(error) if isinstance(error, SAMMed3DError) else repr(error)


LOADING_MODEL = "loading model\u2026"
MODEL_UNLOADED = "model unloaded"


def model_ready_status(seconds: float, device_type: str) -> str:
    """Status line once the network is loaded ahead of the first click: e.g. ``model ready · CPU · loaded in 2.1 s``."""
    return f"model ready · {device_type.upper()} · loaded in {seconds:.1f} s"


def model_not_loaded_status(reason: str) -> str:
    """Status line when the network could not be loaded ahead of the first click (the click says it again)."""
    return f"model not loaded: {reason}"


def click_status(result: Any, device_type: str) -> str:
    """Status line after a click: e.g. ``encoded 0.9 s · refined 60 ms · CPU``. ``result``: the engine's
    StepResult (``timings`` in seconds); ``device_type``: 'cpu' / 'cuda' / 'mps' / 'server'."""
    parts = []
    if result.encoded:
        parts.append(f"encoded {result.timings.get('encode', 0.0):.1f} s")
    parts.append(f"refined {1000 * result.timings.get('total', 0.0):.0f} ms")
    parts.append(device_type.upper())
    return " · ".join(parts)


def travel_status(result: Any, undo: bool) -> str:
    """Status line after an undo (``undo``) or redo: e.g. ``undone (2 clicks)``."""
    return f"{'undone' if undo else 'redone'} ({count(len(result.clicks), 'click')})"


class Reporter:
    """Messages, mixed into the controller: each one is appended to ``messages`` ((text, is_error), oldest first)
    and handed to the GUI's ``on_message(text, is_error)`` hook; the newest error stays in ``last_error`` until
    the controller writes a later step to the scene (it sets ``_last_error`` back to None)."""

    def __init__(self) -> None:
        self.messages: List[Tuple[str, bool]] = []
        self.on_message: Optional[Callable[[str, bool], None]] = None
        self._last_error: Optional[str] = None

    @property
    def last_error(self) -> Optional[str]:
        """The newest error message, None once a later step was written to the scene successfully."""
        return self._last_error

    def _report(self, text: str, is_error: bool) -> None:
        self.messages.append((text, is_error))
        if is_error:
            self._last_error = text
        if self.on_message is not None:
            self.on_message(text, is_error)

    def _tell_replayed(self, result: Any) -> None:
        """A server lost the session and replayed it into a new one (``result.message`` of a RemoteStepResult;
        a local StepResult has none): say so."""
        message = getattr(result, "message", "")
        if message:
            self._report(message, False)

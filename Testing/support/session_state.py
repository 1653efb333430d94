"""Everything an InteractiveSession step may change, as one comparable value (for all-or-nothing checks)."""

import SimpleITK as sitk

from SAMMed3DLib import InteractiveSession


def snapshot(session: InteractiveSession) -> dict:
    """The session's mask (as bytes), clicks, history, model state, known region and focus, comparable with ``==``."""
    return {
        "mask": sitk.GetArrayFromImage(session.mask).tobytes(),
        "clicks": session.clicks,
        "can_undo": session.can_undo,
        "can_redo": session.can_redo,
        "roi": session.roi,
        "state": session._state,
        "known": session._known,
        "history": session._history,
        "focus": session._focus,
    }

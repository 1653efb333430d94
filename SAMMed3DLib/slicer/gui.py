"""What the controller needs from a GUI, as one small interface that the Slicer module's Widget and the browser
page both implement; :func:`connect` hands a GUI's methods to the controller's hooks. Nothing here calls the
controller: the GUI calls it, the controller calls back only through these four methods."""

from typing import Any, Protocol


class Gui(Protocol):
    """A front end of :class:`~SAMMed3DLib.slicer.controller.SegmentationController`."""

    def show_message(self, text: str, is_error: bool) -> None:
        """One line for the user (an error, or a warning / notice when ``is_error`` is False)."""

    def place_mode_changed(self) -> None:
        """Place mode started or ended (also from the views: a right-click ends it); update the +/− buttons."""

    def work_queued(self) -> None:
        """Work was handed to the worker: poll the controller (``poll``) until it is no longer busy."""

    def dependencies_ready(self) -> bool:
        """Before a target's first click: True when the engine can run (may ask to install PyTorch)."""


def connect(controller: Any, gui: Gui) -> None:
    """Make ``gui`` the front end of ``controller``: its messages, place-mode changes, polls and questions."""
    controller.on_message = gui.show_message
    controller.on_place_mode = gui.place_mode_changed
    controller.on_work = gui.work_queued
    controller.dependencies_ready = gui.dependencies_ready

"""Slicer's place mode for the two point lists, and the observers that exist only while the module is shown.

While the module is entered, the two lists are observed (a Defined or removed point calls ``on_points``) and so is
the interaction node (``on_place_mode`` follows place mode, which a right-click or double-click in a view leaves,
as Slicer's own ``qSlicerMarkupsPlaceWidget`` follows it). Leaving the module removes every observer, ends place
mode in our lists and gives Slicer back the active place list it had, so that points placed later from Slicer's
toolbar in another module are not clicks. MRML only.
"""

from typing import Any, Callable, List, Optional, Tuple

import vtk

SELECTION_NODE = "vtkMRMLSelectionNodeSingleton"
INTERACTION_NODE = "vtkMRMLInteractionNodeSingleton"
POINT_EVENTS = ("PointPositionDefinedEvent", "PointRemovedEvent")


class PlaceMode:
    """Observers and place mode on ``scene``'s selection and interaction nodes for the lists of ``lists()``."""

    def __init__(self, on_points: Callable[[], None], on_place_mode: Callable[[], None]) -> None:
        self.on_points = on_points
        self.on_place_mode = on_place_mode
        self.scene: Any = None
        self._observations: List[Tuple[Any, int]] = []
        self._lists: Tuple[Any, ...] = ()
        self._previous_place_node: Optional[str] = None
        self._saved = False

    @property
    def entered(self) -> bool:
        return self.scene is not None

    def enter(self, scene, lists: Tuple[Any, ...]) -> None:
        """Observe ``lists`` (positive, negative) and the interaction node of ``scene``."""
        self.exit()
        self.scene = scene
        self._saved = False
        self.watch(lists)
        interaction = scene.GetNodeByID(INTERACTION_NODE)
        if interaction is not None:
            event = interaction.InteractionModeChangedEvent
            self._observations.append((interaction, interaction.AddObserver(event, self._mode_changed)))
        selection = scene.GetNodeByID(SELECTION_NODE)
        if selection is not None:  # another module may make another list the active one
            event = selection.ActivePlaceNodeIDChangedEvent
            self._observations.append((selection, selection.AddObserver(event, self._mode_changed)))

    def watch(self, lists: Tuple[Any, ...]) -> None:
        """Observe these point lists instead of the previous ones (a new selection while entered)."""
        if not self.entered or tuple(lists) == self._lists:
            return
        self._forget(self._lists)
        self._lists = tuple(lists)
        for node in self._lists:
            if node is None:
                continue
            for name in POINT_EVENTS:
                tag = node.AddObserver(getattr(node, name), lambda caller, event: self.on_points())
                self._observations.append((node, tag))

    def exit(self) -> None:
        """Remove every observer, end place mode in our lists, restore Slicer's previous active place list."""
        if not self.entered:
            return
        self.stop()
        selection = self.scene.GetNodeByID(SELECTION_NODE)
        if self._saved and selection is not None:
            selection.SetActivePlaceNodeID(self._previous_place_node)
        for node, tag in self._observations:
            node.RemoveObserver(tag)
        self._observations, self._lists, self.scene = [], (), None

    def start(self, node) -> None:
        """Persistent place mode into ``node`` (one of our lists): every click in a view places a point."""
        selection = self.scene.GetNodeByID(SELECTION_NODE)
        if not self._saved:
            self._previous_place_node, self._saved = selection.GetActivePlaceNodeID(), True
        selection.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsFiducialNode")
        selection.SetActivePlaceNodeID(node.GetID())
        interaction = self.scene.GetNodeByID(INTERACTION_NODE)
        interaction.SetPlaceModePersistence(1)
        interaction.SetCurrentInteractionMode(interaction.Place)

    def stop(self) -> None:
        """Leave place mode if it places into one of our lists."""
        if self.placing_into() is not None:
            interaction = self.scene.GetNodeByID(INTERACTION_NODE)
            interaction.SetCurrentInteractionMode(interaction.ViewTransform)

    def placing_into(self) -> Optional[Any]:
        """The list of ours that place mode puts points into, or None."""
        if not self.entered:
            return None
        interaction = self.scene.GetNodeByID(INTERACTION_NODE)
        selection = self.scene.GetNodeByID(SELECTION_NODE)
        if interaction is None or selection is None or interaction.GetCurrentInteractionMode() != interaction.Place:
            return None
        active = selection.GetActivePlaceNodeID()
        return next((node for node in self._lists if node is not None and node.GetID() == active), None)

    def _forget(self, nodes: Tuple[Any, ...]) -> None:
        keep = []
        for node, tag in self._observations:
            if any(node is n for n in nodes if n is not None):
                node.RemoveObserver(tag)
            else:
                keep.append((node, tag))
        self._observations = keep

    def _mode_changed(self, caller: vtk.vtkObject, event: str) -> None:
        self.on_place_mode()

"""Slicer's place mode for the two point lists, and which events matter while the module is shown.

While the module is entered, the controller observes (with its own methods) the events :meth:`PlaceMode.events`
names: a Defined or removed point in one of our two lists, and what starts, ends or moves place mode (a
right-click or double-click in a view leaves it, as Slicer's own ``qSlicerMarkupsPlaceWidget`` follows it).
Leaving the module ends place mode in our lists and gives Slicer back the active place list and the "place
multiple" (persistence) setting it had, so that points placed later from Slicer's toolbar in another module are
not clicks and are placed as the user set it. MRML only; nothing here calls the
controller.
"""

from typing import Any, List, Optional, Tuple

SELECTION_NODE = "vtkMRMLSelectionNodeSingleton"
INTERACTION_NODE = "vtkMRMLInteractionNodeSingleton"
POINT_EVENTS = ("PointPositionDefinedEvent", "PointRemovedEvent", "PointEndInteractionEvent")
"""A point placed, removed, or let go after a drag (an unlocked click point moved in a view)."""


class PlaceMode:
    """Place mode on ``scene``'s selection and interaction nodes for our point lists ``lists`` (positive,
    negative; either may be None)."""

    def __init__(self) -> None:
        self.scene: Any = None
        self.lists: Tuple[Any, ...] = ()
        self._previous_place_node: Optional[str] = None
        self._previous_persistence = 0
        self._saved = False

    @property
    def entered(self) -> bool:
        return self.scene is not None

    def enter(self, scene, lists: Tuple[Any, ...]) -> None:
        """The module is shown: place mode in ``scene`` for ``lists`` (positive, negative)."""
        self.exit()
        self.scene = scene
        self._saved = False
        self.lists = tuple(lists)

    def watch(self, lists: Tuple[Any, ...]) -> None:
        """These point lists are ours instead of the previous ones (a new selection while entered)."""
        if self.entered:
            self.lists = tuple(lists)

    def events(self) -> List[Tuple[Any, int, bool]]:
        """(node, event id, is a point event) of everything to observe while entered (nothing otherwise): each
        of our lists' Defined and removed points, then the interaction node's mode and the selection node's
        active place list (another module may make another list the active one)."""
        if not self.entered:
            return []
        points = [(node, getattr(node, name), True) for node in self.lists if node is not None for name in POINT_EVENTS]
        interaction = self.scene.GetNodeByID(INTERACTION_NODE)
        selection = self.scene.GetNodeByID(SELECTION_NODE)
        modes = [(interaction, interaction.InteractionModeChangedEvent, False)] if interaction is not None else []
        if selection is not None:
            modes.append((selection, selection.ActivePlaceNodeIDChangedEvent, False))
        return points + modes

    def exit(self) -> None:
        """End place mode in our lists, restore Slicer's previous active place list."""
        if not self.entered:
            return
        self.stop()
        selection = self.scene.GetNodeByID(SELECTION_NODE)
        interaction = self.scene.GetNodeByID(INTERACTION_NODE)
        if self._saved and selection is not None:
            selection.SetActivePlaceNodeID(self._previous_place_node)
        if self._saved and interaction is not None:
            interaction.SetPlaceModePersistence(self._previous_persistence)
        self.lists, self.scene = (), None

    def start(self, positive: bool) -> None:
        """Persistent place mode into our positive (green) or negative (red) list: every click in a view places
        a point (nothing while not entered or without that list)."""
        node = self.lists[0 if positive else 1] if self.entered else None
        if node is None:
            return
        selection = self.scene.GetNodeByID(SELECTION_NODE)
        interaction = self.scene.GetNodeByID(INTERACTION_NODE)
        if not self._saved:
            self._previous_place_node, self._saved = selection.GetActivePlaceNodeID(), True
            self._previous_persistence = interaction.GetPlaceModePersistence()
        selection.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsFiducialNode")
        selection.SetActivePlaceNodeID(node.GetID())
        interaction.SetPlaceModePersistence(1)
        interaction.SetCurrentInteractionMode(interaction.Place)

    def stop(self) -> None:
        """Leave place mode if it places into one of our lists."""
        if self.placing_into() is not None:
            interaction = self.scene.GetNodeByID(INTERACTION_NODE)
            interaction.SetCurrentInteractionMode(interaction.ViewTransform)

    def placing(self) -> Optional[bool]:
        """True / False while place mode puts points into our positive / negative list, None otherwise."""
        node = self.placing_into()
        return None if node is None else node is self.lists[0]

    def placing_into(self) -> Optional[Any]:
        """The list of ours that place mode puts points into, or None."""
        if not self.entered:
            return None
        interaction = self.scene.GetNodeByID(INTERACTION_NODE)
        selection = self.scene.GetNodeByID(SELECTION_NODE)
        if interaction is None or selection is None or interaction.GetCurrentInteractionMode() != interaction.Place:
            return None
        active = selection.GetActivePlaceNodeID()
        return next((node for node in self.lists if node is not None and node.GetID() == active), None)

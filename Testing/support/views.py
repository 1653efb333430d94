"""Real Slicer views, off screen, on the ``slicer-core`` wheel: slice views (and a 3-D view) built the way
Slicer's ``qMRMLSliceView``/``qMRMLThreeDView`` build theirs, driven by mouse and key events sent through
the VTK interactor.

Rendering goes through EGL and Mesa's llvmpipe (no display, no GPU): ``VTK_DEFAULT_OPENGL_WINDOW`` is set to
``vtkEGLRenderWindow`` before the first render window exists. A view is

- a ``vtkMRMLDisplayableManagerGroup`` instantiated by the view type's displayable-manager factory (which is
  given the scene's application logic), on the renderer of an off-screen ``vtkRenderWindow``;
- for a slice view, a ``vtkMRMLSliceLogic`` with its slice node, and the slice logic's RGBA slice image shown
  by a background 2-D image actor (what CTK's light-box renderer manager does in Slicer);
- a ``vtkMRMLSliceViewInteractorStyle`` (``vtkMRMLThreeDViewInteractorStyle``) on the window's interactor,
  which hands every event to the displayable managers, so the markups widget creates its *Preview* point on
  a mouse move in place mode, turns it *Defined* on a click and removes it when the mouse leaves.

Coordinates: mouse positions are VTK display pixels, x to the right and y **up** from the bottom-left
corner; :meth:`View.pixels` is indexed ``[y, x]`` in the same frame (row 0 is the bottom row). World
positions are RAS (mm).

Qt is not here: a keyboard shortcut such as the module's Ctrl+Z is a ``QShortcut`` that Qt takes before the
view sees the key, so a test calls what the shortcut calls; :meth:`View.key` sends keys the view itself gets.
"""

import ctypes.util
import os
import sys
import time
from typing import Optional, Sequence, Tuple

if sys.platform.startswith("linux"):  # before VTK creates its first render window; a caller's choice wins
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

SLICE_MANAGERS = (
    "vtkMRMLVolumeGlyphSliceDisplayableManager",
    "vtkMRMLModelSliceDisplayableManager",
    "vtkMRMLCrosshairDisplayableManager",
    "vtkMRMLOrientationMarkerDisplayableManager",
    "vtkMRMLRulerDisplayableManager",
    "vtkMRMLScalarBarDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager2D",
    "vtkMRMLMarkupsDisplayableManager",
    "vtkMRMLTransformsDisplayableManager2D",
)
"""Slice-view displayable managers: Slicer's own (qMRMLSliceView) and those its modules register."""

THREED_MANAGERS = (
    "vtkMRMLCameraDisplayableManager",
    "vtkMRMLViewDisplayableManager",
    "vtkMRMLModelDisplayableManager",
    "vtkMRMLThreeDReformatDisplayableManager",
    "vtkMRMLCrosshairDisplayableManager3D",
    "vtkMRMLOrientationMarkerDisplayableManager",
    "vtkMRMLRulerDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager3D",
    "vtkMRMLMarkupsDisplayableManager",
    "vtkMRMLTransformsDisplayableManager3D",
)
"""3-D-view displayable managers (qMRMLThreeDView's and the modules')."""

SLICE_ORIENTATIONS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
"""Slicer's default slice views: layout name → orientation."""

EGL_MISSING = (
    "Off-screen Slicer views need EGL and Mesa (libEGL.so.1, the Mesa EGL vendor library and the llvmpipe "
    "driver). On Debian/Ubuntu: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri (.ci/install does it)."
)


def check_egl() -> None:
    """Raise RuntimeError with the packages to install when libEGL cannot be found."""
    egl = os.environ.get("VTK_DEFAULT_OPENGL_WINDOW") == "vtkEGLRenderWindow"
    if egl and ctypes.util.find_library("EGL") is None:
        raise RuntimeError(EGL_MISSING)


def prepare_views(app) -> None:
    """What Slicer's application adds to its scene before it creates views (idempotent): the default
    crosshair node, the application logic's slice- and view-logic collections, the slice orientation presets.
    ``app`` is a ``support.slicer_scene.AppScene``."""
    scene, app_logic = app.scene, app.app_logic
    if scene.GetFirstNodeByClass("vtkMRMLCrosshairNode") is None:
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetCrosshairName("default")
        scene.AddNode(crosshair)
    if app_logic.GetSliceLogics() is None:
        app_logic.SetSliceLogics(vtk.vtkCollection())
    if app_logic.GetViewLogics() is None:
        app_logic.SetViewLogics(vtk.vtkCollection())
    default = scene.GetDefaultNodeByClass("vtkMRMLSliceNode")
    if default is None or not default.HasSliceOrientationPreset("Axial"):
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)  # patient right on screen left


class View:
    """An off-screen render window with a displayable-manager group and an MRML interactor style.

    Subclasses build the group (:meth:`_build`) and the view logic. Call :meth:`close` before the scene is
    closed (views observe it)."""

    factory_class = None  # the displayable-manager factory of the view type
    managers: Sequence[str] = ()

    def __init__(self, app, size: Tuple[int, int] = (400, 400)) -> None:
        check_egl()
        prepare_views(app)
        self.app = app
        self.size = tuple(size)
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetMultiSamples(0)  # llvmpipe: no MSAA, and pixels stay exact for the colour checks
        self.window.SetSize(*self.size)
        self.renderer = vtk.vtkRenderer()
        self.window.AddRenderer(self.renderer)
        self._add_first_props()
        # A generic interactor: the platform one would want an X display to initialise.
        self.interactor = vtk.vtkGenericRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        self.interactor.SetSize(*self.size)
        self.interactor.Initialize()
        self.interactor.SetInteractorStyle(vtk.vtkInteractorStyleUser())  # the MRML style below does the work
        factory = self.factory_class.GetInstance()
        factory.SetMRMLApplicationLogic(app.app_logic)  # a process-wide singleton: point it at this scene
        for name in self.managers:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.managers_group = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers_group.Initialize(factory, self.renderer)
        self.style = self._build()
        self.style.SetDisplayableManagers(self.managers_group)
        self.style.SetInteractor(self.interactor)

    def _add_first_props(self) -> None:
        """Add the props drawn under everything the displayable managers draw (before they add theirs)."""

    def _build(self):
        """Create the view logic and node; return the MRML interactor style (not yet attached)."""
        raise NotImplementedError

    # --- rendering --------------------------------------------------------------------------------------

    def render(self) -> float:
        """Render now; returns the wall time in seconds."""
        start = time.perf_counter()
        self.window.Render()
        return time.perf_counter() - start

    def pixels(self) -> np.ndarray:
        """The rendered RGB pixels, uint8 (height, width, 3), indexed ``[y, x]`` in display coordinates
        (row 0 at the bottom). Renders first."""
        self.render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.ReadFrontBufferOff()
        grab.ShouldRerenderOff()
        grab.Update()
        image = grab.GetOutput()
        width, height, _ = image.GetDimensions()
        array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
        return array.reshape(height, width, -1)[..., :3].copy()

    def move(self, x: float, y: float) -> None:
        """Move the mouse to display pixel (x, y)."""
        self.interactor.SetEventInformation(int(round(x)), int(round(y)), 0, 0, "\0", 0)
        self.interactor.InvokeEvent(vtk.vtkCommand.MouseMoveEvent)

    def click(self, x: float, y: float, button: str = "Left") -> None:
        """Move to (x, y), press and release ``button`` (Left, Right or Middle) there."""
        self.move(x, y)
        self.interactor.InvokeEvent(getattr(vtk.vtkCommand, f"{button}ButtonPressEvent"))
        self.interactor.InvokeEvent(getattr(vtk.vtkCommand, f"{button}ButtonReleaseEvent"))

    def double_click(self, x: float, y: float) -> None:
        """A left double-click at (x, y), as Qt reports it: press, release, double-click event, release."""
        self.click(x, y)
        self.interactor.InvokeEvent(vtk.vtkCommand.LeftButtonDoubleClickEvent)
        self.interactor.InvokeEvent(vtk.vtkCommand.LeftButtonReleaseEvent)

    def leave(self) -> None:
        """The mouse leaves the view."""
        self.interactor.InvokeEvent(vtk.vtkCommand.LeaveEvent)

    def key(self, keysym: str, ctrl: bool = False, shift: bool = False) -> None:
        """Press and release a key over the view (``keysym`` as VTK names it: "z", "Delete", "Escape")."""
        code = keysym if len(keysym) == 1 else "\0"
        self.interactor.SetKeyEventInformation(int(ctrl), int(shift), code, 0, keysym)
        for event in ("KeyPressEvent", "CharEvent", "KeyReleaseEvent"):
            self.interactor.InvokeEvent(getattr(vtk.vtkCommand, event))

    def close(self) -> None:
        """Detach from the scene and release the window (call before the scene is closed)."""
        self.style.SetInteractor(None)
        self.managers_group.SetMRMLDisplayableNode(None)
        self.renderer.RemoveAllViewProps()
        self.window.Finalize()


class SliceView(View):
    """A slice view: ``name`` is the layout name (Red, Yellow, Green), its orientation Slicer's default."""

    factory_class = slicer.vtkMRMLSliceViewDisplayableManagerFactory
    managers = SLICE_MANAGERS

    def __init__(self, app, name: str = "Red", size: Tuple[int, int] = (400, 400), orientation: str = "") -> None:
        self.name = name
        self.orientation = orientation or SLICE_ORIENTATIONS.get(name, "Axial")
        super().__init__(app, size)

    def _add_first_props(self) -> None:
        # The slice logic blends the layers into one RGBA image in display pixels; a background 2-D image actor
        # shows it unchanged (window 255, level 127.5), as CTK's light-box renderer manager does in Slicer. It
        # must be the renderer's first prop: a segment fill added before it would blend with the clear colour.
        self._image_mapper = vtk.vtkImageMapper()
        self._image_mapper.SetColorWindow(255)
        self._image_mapper.SetColorLevel(127.5)
        self._image_actor = vtk.vtkActor2D()
        self._image_actor.SetMapper(self._image_mapper)
        self._image_actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self._image_actor)

    def _build(self):
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(self.app.app_logic)
        self.logic.SetMRMLScene(self.app.scene)
        self.app.app_logic.GetSliceLogics().AddItem(self.logic)
        self.node = self.logic.AddSliceNode(self.name)
        self.node.SetOrientation(self.orientation)
        self.logic.ResizeSliceNode(*self.size)
        self.managers_group.SetMRMLDisplayableNode(self.node)
        self._connection = None
        self._observer = self.logic.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *_: self._update_image())
        self._update_image()
        style = slicer.vtkMRMLSliceViewInteractorStyle()
        style.SetSliceLogic(self.logic)
        return style

    def _update_image(self) -> None:
        """Follow the slice logic's image connection (it changes when layers are added or removed)."""
        connection = self.logic.GetImageDataConnection()
        if connection is not self._connection:
            self._connection = connection
            self._image_mapper.SetInputConnection(connection)
            self._image_actor.SetVisibility(connection is not None)

    def show_volume(self, volume, fit: bool = True) -> None:
        """Show ``volume`` as the background layer; ``fit`` fits the field of view to it and centres it."""
        self.logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID() if volume is not None else None)
        if fit:
            self.logic.FitSliceToBackground()
            self.logic.SnapSliceOffsetToIJK()

    def jump_to(self, ras: Sequence[float]) -> None:
        """Move the slice (not its centre) so that it contains the RAS point (mm)."""
        self.node.JumpSliceByOffsetting(*(float(v) for v in ras))

    def xy_to_ras(self, x: float, y: float) -> np.ndarray:
        """RAS (mm) of display pixel (x, y) on the current slice."""
        return np.array(self.node.GetXYToRAS().MultiplyPoint((float(x), float(y), 0.0, 1.0))[:3])

    def ras_to_xy(self, ras: Sequence[float]) -> Tuple[float, float]:
        """Display pixel (x, y) of an RAS point (mm) projected onto the slice plane."""
        inverse = vtk.vtkMatrix4x4()
        vtk.vtkMatrix4x4.Invert(self.node.GetXYToRAS(), inverse)
        x, y, _, _ = inverse.MultiplyPoint((*(float(v) for v in ras), 1.0))
        return x, y

    def close(self) -> None:
        self.logic.RemoveObserver(self._observer)
        super().close()
        self.app.app_logic.GetSliceLogics().RemoveItem(self.logic)
        self._image_mapper.SetInputConnection(None)
        self.logic.SetMRMLScene(None)


class ThreeDView(View):
    """The 3-D view ("1"): models, segment surfaces, markups; camera and box as Slicer shows them."""

    factory_class = slicer.vtkMRMLThreeDViewDisplayableManagerFactory
    managers = THREED_MANAGERS

    def _build(self):
        self.logic = slicer.vtkMRMLViewLogic()
        self.logic.SetMRMLApplicationLogic(self.app.app_logic)
        self.logic.SetMRMLScene(self.app.scene)
        self.app.app_logic.GetViewLogics().AddItem(self.logic)
        self.node = self.logic.AddViewNode("1")
        self.managers_group.SetMRMLDisplayableNode(self.node)
        return slicer.vtkMRMLThreeDViewInteractorStyle()

    def look_at(self, centre_ras: Sequence[float], direction: Sequence[float], distance: float) -> None:
        """Point the camera at ``centre_ras`` from ``distance`` mm along ``direction`` (RAS), superior up."""
        camera = self.managers_group.GetDisplayableManagerByClassName("vtkMRMLCameraDisplayableManager").GetCameraNode()
        camera.SetFocalPoint(*(float(v) for v in centre_ras))
        offset = np.asarray(direction, float) / np.linalg.norm(direction) * distance
        camera.SetPosition(*(np.asarray(centre_ras, float) + offset))
        camera.SetViewUp(0.0, 0.0, 1.0)
        camera.ResetClippingRange()

    def close(self) -> None:
        super().close()
        self.app.app_logic.GetViewLogics().RemoveItem(self.logic)
        self.logic.SetMRMLScene(None)


def tinted(pixels: np.ndarray, rgb: Sequence[float], strength: float = 0.25) -> np.ndarray:
    """Bool mask of the pixels that show the colour ``rgb`` (0..1): their colour minus its grey part points
    the way the colour's does (cosine > 0.9) with at least ``strength`` of its length. This finds a
    segment's opaque outline and its half-transparent fill over any grey image alike."""
    colour = np.asarray(rgb, float) * 255.0
    chroma = colour - colour.mean()
    values = pixels.astype(float)
    pixel_chroma = values - values.mean(axis=-1, keepdims=True)
    along = pixel_chroma @ chroma / (chroma @ chroma)
    norm = np.linalg.norm(pixel_chroma, axis=-1) * np.linalg.norm(chroma)
    cosine = np.divide(pixel_chroma @ chroma, norm, out=np.zeros_like(along), where=norm > 0)
    return (along >= strength) & (cosine > 0.9)


def preview_points(markups_node) -> int:
    """How many control points of ``markups_node`` are *Preview* points (the one under the mouse)."""
    return sum(
        markups_node.GetNthControlPointPositionStatus(i) == markups_node.PositionPreview
        for i in range(markups_node.GetNumberOfControlPoints())
    )


def defined_points(markups_node) -> list:
    """World RAS (mm) of the *Defined* control points of ``markups_node``, in list order."""
    points = []
    for i in range(markups_node.GetNumberOfControlPoints()):
        if markups_node.GetNthControlPointPositionStatus(i) == markups_node.PositionDefined:
            position = [0.0, 0.0, 0.0]
            markups_node.GetNthControlPointPositionWorld(i, position)
            points.append(tuple(position))
    return points


def place_mode(app, markups_node: Optional[object]) -> None:
    """Put the scene in persistent place mode on ``markups_node`` (None: back to view transform), as Slicer's
    place widget does: the selection node's active place node, then the interaction node's mode."""
    interaction = app.app_logic.GetInteractionNode()
    if markups_node is None:
        interaction.SetCurrentInteractionMode(interaction.ViewTransform)
        return
    selection = app.app_logic.GetSelectionNode()
    selection.SetReferenceActivePlaceNodeClassName(markups_node.GetClassName())
    selection.SetActivePlaceNodeID(markups_node.GetID())
    interaction.SetPlaceModePersistence(1)
    interaction.SetCurrentInteractionMode(interaction.Place)


def module_in_red_view(app, model):
    """The module's scenario (controller entered) with ``model`` and the axial view on its phantom's centre:
    yields (scenario, view) and closes both afterwards (a fixture's body)."""
    from SAMMed3DLib.slicer.scenario import SPHERE_CENTER_RAS, Scenario

    scenario = Scenario(app.scene, model=model)
    view = SliceView(app, "Red")
    view.show_volume(scenario.volume)
    view.jump_to(SPHERE_CENTER_RAS)
    yield scenario, view
    view.close()
    scenario.controller.cleanup()

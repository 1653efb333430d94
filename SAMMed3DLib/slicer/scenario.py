"""The module's end-to-end scenario on a real MRML scene, shared by the headless pytest suite and the
``SAMMed3DTest`` self-test that runs inside Slicer (both call the same functions on their scene).

Phantoms are built with MRML/VTK only: a bright sphere in a volume with an oblique IJK-to-RAS matrix and
anisotropic spacing, a segmentation holding a finished neighbour segment that overlaps the sphere, and the
green/red point lists. :class:`PhantomModel` is a deterministic stand-in for the network (same
``encode``/``decode`` interface as :class:`~SAMMed3DLib.modeling.SAMMed3D`) whose answer is "the bright voxels
near the positive clicks", so geometry can be checked exactly; the real network runs in :func:`tiny_checkpoint`.
"""

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..coordinates import RAS_TO_LPS
from ..metrics import dice
from . import markups, mrml
from .controller import Inputs, SegmentationController

SPHERE_CENTER_RAS = (12.0, -20.0, 30.0)  # mm
SPHERE_RADIUS = 24.0  # mm
NEIGHBOUR_OFFSET_RAS = (18.0, 0.0, 0.0)  # mm from the sphere centre; overlaps the sphere's right side
NEIGHBOUR_RADIUS = 12.0  # mm


# --- a scene as the application sets it up ---------------------------------------------------------------

MODULE_LOGICS = (
    ("Colors", "vtkSlicerColorLogic"),
    ("SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
    ("Volumes", "vtkSlicerVolumesLogic"),
    ("Transforms", "vtkSlicerTransformLogic"),
    ("Segmentations", "vtkSlicerSegmentationsModuleLogic"),
    ("Markups", "vtkSlicerMarkupsLogic"),
)
"""(module name, logic class) in the order Slicer loads them (dependencies first)."""


@dataclass
class AppScene:
    scene: "slicer.vtkMRMLScene"
    app_logic: "slicer.vtkSlicerApplicationLogic"
    logics: Dict[str, object] = field(default_factory=dict)

    def close(self) -> None:
        for logic in reversed(list(self.logics.values())):
            logic.SetMRMLScene(None)
        self.app_logic.SetMRMLScene(None)
        self.scene.Clear(True)


def build_app_scene() -> AppScene:
    """A scene with the application logic and the module logics the SAM-Med3D module relies on, for headless runs
    on the ``slicer-core`` wheel (the tests, ``bench-mainloop``); inside Slicer the application's scene is used.

    Slicer's core application creates one ``vtkSlicerApplicationLogic`` for the scene and, for every module, gives
    the module logic the application logic first and the scene second (that order matters: the colour logic looks
    its default tables up through the application logic). Without the Segmentations logic on the scene, for
    instance, the binary-labelmap converter rules are never registered and segments cannot even be created."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app = AppScene(scene, app_logic)
    for module, class_name in MODULE_LOGICS:
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(module, logic)
        app.logics[module] = logic
    # Singletons the application creates on start-up (selection and interaction nodes).
    assert scene.GetNodeByID("vtkMRMLSelectionNodeSingleton") is not None
    assert scene.GetSubjectHierarchyNode() is not None
    return app


# --- phantoms -------------------------------------------------------------------------------------------


def oblique_ijk_to_ras(spacing: Sequence[float], angle_deg: float, origin_ras: Sequence[float]) -> np.ndarray:
    """A 4×4 IJK-to-RAS matrix: LPS-like axis flips, a rotation about an oblique axis, anisotropic spacing."""
    axis = np.array([1.0, 2.0, 3.0]) / math.sqrt(14.0)
    a = math.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ RAS_TO_LPS @ np.diag(spacing)
    matrix[:3, 3] = origin_ras
    return matrix


def _set_matrix(node, matrix: np.ndarray) -> None:
    vtk_matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vtk_matrix.SetElement(r, c, float(matrix[r, c]))
    node.SetIJKToRASMatrix(vtk_matrix)


def _voxel_centres_ras(ijk_to_ras: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """RAS of every voxel centre, array (z, y, x, 3)."""
    k, j, i = np.meshgrid(*(np.arange(d) for d in dims[::-1]), indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    return (ijk @ ijk_to_ras.T)[..., :3]


def sphere_voxels(ijk_to_ras: np.ndarray, dims: Sequence[int], centre, radius: float) -> np.ndarray:
    """Bool (z, y, x): voxel centres within ``radius`` mm of ``centre`` (RAS)."""
    return np.linalg.norm(_voxel_centres_ras(ijk_to_ras, dims) - np.asarray(centre), axis=-1) <= radius


def add_volume(scene, name: str, voxels: np.ndarray, ijk_to_ras: np.ndarray, components: int = 1):
    """A scalar (or, with ``components`` 3, an RGB vector) volume node holding ``voxels`` (z, y, x[, c])."""
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode" if components > 1 else "vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    image.SetDimensions(voxels.shape[2], voxels.shape[1], voxels.shape[0])
    image.AllocateScalars(vtk.VTK_SHORT if components == 1 else vtk.VTK_UNSIGNED_CHAR, components)
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    flat[:] = voxels.reshape(flat.shape)
    node.SetAndObserveImageData(image)
    _set_matrix(node, ijk_to_ras)
    node.CreateDefaultDisplayNodes()
    return node


def sphere_volume(scene, name="Phantom", dims=(72, 64, 36), spacing=(0.9, 1.1, 2.2), angle=25.0, origin=None):
    """The phantom volume: background 100 with a faint ramp, a sphere of 1000 around ``SPHERE_CENTER_RAS``."""
    dims = tuple(dims)
    half = np.array(dims) / 2.0 * np.array(spacing)
    matrix = oblique_ijk_to_ras(spacing, angle, (0, 0, 0))
    centre_offset = matrix[:3, :3] @ (np.array(dims) / 2.0)
    matrix[:3, 3] = np.asarray(origin) if origin is not None else np.asarray(SPHERE_CENTER_RAS) - centre_offset
    voxels = 100 + (np.arange(dims[0])[None, None, :] % 7) * 3 + np.zeros(dims[::-1], dtype=np.int16)
    voxels[sphere_voxels(matrix, dims, SPHERE_CENTER_RAS, SPHERE_RADIUS)] = 1000
    assert half.min() > 0
    return add_volume(scene, name, voxels.astype(np.int16), matrix)


def segmentation_with_neighbour(scene, volume, name="Segmentation"):
    """A segmentation on ``volume``'s grid: a finished 'Neighbour' sphere overlapping the phantom, an empty
    'Target'. Returns (node, target_id, neighbour_id)."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    geometry = mrml.volume_geometry(volume)
    mrml.prepare_segmentation(node, geometry, volume.GetName())
    segmentation = node.GetSegmentation()
    neighbour = segmentation.AddEmptySegment("Neighbour", "Neighbour", [0.9, 0.8, 0.1])
    target = segmentation.AddEmptySegment("Target", "Target", [0.2, 0.5, 1.0])
    centre = np.add(SPHERE_CENTER_RAS, NEIGHBOUR_OFFSET_RAS)
    ball = sphere_voxels(geometry.ijk_to_ras, geometry.dims, centre, NEIGHBOUR_RADIUS)
    mrml.write_segment(node, neighbour, geometry, geometry.full_region(), ball)
    return node, target, neighbour


def point_lists(scene):
    """The positive (green) and negative (red) point lists the panel creates."""
    return tuple(markups.new_point_list(scene, name, colour) for name, colour in markups.POINT_LISTS)


# --- a network stand-in with a known answer --------------------------------------------------------------


class PhantomModel:
    """``encode`` keeps the crop; ``decode`` answers "bright voxels that were inside before or lie within 40 mm of
    a positive click, and not within 8 mm of a negative one" as 32³ logits (±8). Coordinates are ROI voxels
    (i, j, k), 1.5 mm each; the previous logits come back as ``mask_logits``, as with the real decoder. torch is
    imported on first use, so that this module (and Slicer's self-test) loads before PyTorch is installed."""

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def encode(self, crop):
        return crop.float()

    def decode(self, embedding, coords, labels, mask_logits=None):
        import torch

        bright = torch.nn.functional.avg_pool3d(embedding, 4)[0, 0] > 0.5  # 32³, 6 mm voxels
        grid = torch.stack(torch.meshgrid(*(torch.arange(32.0),) * 3, indexing="ij"), dim=-1) * 4 + 1.5
        inside = torch.zeros_like(bright) if mask_logits is None else mask_logits[0, 0] > 0  # previous answer
        for point, label in zip(coords[0], labels[0]):
            distance = (grid - point.float()).norm(dim=-1) * 1.5  # mm
            if int(label) == 1:
                inside |= distance <= 40.0
            else:
                inside &= distance > 8.0
        logits = torch.where(bright & inside, 8.0, -8.0)[None, None]
        return logits, torch.ones(1, 1)


def tiny_checkpoint(path: Path) -> Path:
    """A few-MB random-weight network in the official layout (the real architecture, tiny widths)."""
    import torch

    from ..modeling import TINY_CONFIG, build_sam_med3d

    torch.manual_seed(0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": build_sam_med3d(TINY_CONFIG).state_dict()}, path)
    return path


# --- checks ----------------------------------------------------------------------------------------------


def segment_digest(segmentation_node, segment_id: str, geometry: mrml.VolumeGeometry) -> str:
    """SHA-256 of the segment's voxels on ``geometry``: equal digests mean bit-identical segments."""
    voxels = mrml.whole_segment(segmentation_node, segment_id, geometry)
    return hashlib.sha256(np.packbits(voxels).tobytes()).hexdigest()


def _segmentation_fingerprint(segmentation_node) -> Tuple:
    """Source representation, conversion parameters, and per segment: layer, label value, extent and voxels
    (in its own layer's grid), so that preparing the segmentation or separating a layer shows up too."""
    segmentation = segmentation_node.GetSegmentation()
    entry: Tuple = (segmentation.GetSourceRepresentationName(), segmentation.SerializeAllConversionParameters())
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        layer = segment.GetRepresentation(mrml._BINARY)
        empty = mrml._is_empty(layer)
        voxels = b"" if empty else np.packbits(mrml._voxels(layer) == segment.GetLabelValue())
        layout = (segmentation.GetLayerIndex(segment_id), segment.GetLabelValue())
        extent = () if layer is None else tuple(layer.GetExtent())
        entry += ((segment_id, *layout, extent, hashlib.sha256(bytes(voxels)).hexdigest()),)
    return entry + (segmentation.GetNumberOfLayers(),)


def scene_fingerprint(scene) -> Dict[str, Tuple]:
    """Node ids/classes, every control point, and every segmentation's layout and voxels."""
    fingerprint: Dict[str, Tuple] = {}
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        entry: Tuple = (node.GetClassName(),)
        if node.IsA("vtkMRMLMarkupsNode"):
            entry += tuple(tuple(p) for p in markups.control_points_ras(node))
        if node.IsA("vtkMRMLSegmentationNode"):
            entry += _segmentation_fingerprint(node)
        fingerprint[node.GetID()] = entry
    return fingerprint


class Scenario:
    """The phantom scene plus a controller wired to it; each ``check_*`` raises AssertionError on failure."""

    def __init__(self, scene, model=None, checkpoint: Optional[Path] = None) -> None:
        self.scene = scene
        self.volume = sphere_volume(scene)
        self.geometry = mrml.volume_geometry(self.volume)
        self.segmentation, self.target, self.neighbour = segmentation_with_neighbour(scene, self.volume)
        self.positive, self.negative = point_lists(scene)
        self.controller = SegmentationController()
        self.controller.set_options(device="cpu")
        if model is not None:
            self.controller.set_model("phantom", model)
        elif checkpoint is not None:
            self.controller.set_options(model=str(checkpoint))
        self.select(self.volume, self.segmentation, self.target)
        self.controller.enter(scene)  # as when the module is shown: a Defined point in a list is a click

    def select(self, volume, segmentation, segment_id: str) -> None:
        self.controller.set_inputs(Inputs(volume, segmentation, segment_id, self.positive, self.negative))
        self.controller.wait()

    def click(self, point_ras, positive: bool = True) -> None:
        """What a click in a view does: a control point appears, the module picks it up, the worker runs."""
        (self.positive if positive else self.negative).AddControlPointWorld(*point_ras)  # fires the observer
        self.controller.wait()

    def target_voxels(self) -> np.ndarray:
        return mrml.whole_segment(self.segmentation, self.target, self.geometry)

    def neighbour_digest(self) -> str:
        return segment_digest(self.segmentation, self.neighbour, self.geometry)

    def check_clicks_land_and_neighbour_is_untouched(self) -> None:
        neighbour_before = self.neighbour_digest()
        self.click(SPHERE_CENTER_RAS)
        assert self.controller.last_error is None, self.controller.last_error
        sphere = sphere_voxels(self.geometry.ijk_to_ras, self.geometry.dims, SPHERE_CENTER_RAS, SPHERE_RADIUS)
        neighbour = mrml.whole_segment(self.segmentation, self.neighbour, self.geometry)
        target = self.target_voxels()
        expected = sphere & ~neighbour
        overlap = dice(target, expected)
        assert overlap > 0.8, f"mask does not match the clicked sphere (Dice {overlap:.2f})"
        assert not (target & neighbour).any(), "the new mask overlaps the protected neighbour"
        assert self.neighbour_digest() == neighbour_before, "the neighbour segment changed"
        centre = np.argwhere(target).mean(axis=0)[::-1]  # (i, j, k)
        centre_ras = (self.geometry.ijk_to_ras @ [*centre, 1.0])[:3]
        assert np.linalg.norm(centre_ras - SPHERE_CENTER_RAS) < 8.0, f"mask centred at {centre_ras}, not the click"

    def check_negative_click_and_undo_redo(self) -> None:
        neighbour_before = self.neighbour_digest()
        after_first = self.target_voxels()
        negative = np.add(SPHERE_CENTER_RAS, (0.0, 0.0, -16.0))
        self.click(negative, positive=False)
        after_second = self.target_voxels()
        assert after_second.sum() < after_first.sum(), "a negative click did not remove voxels"
        self.controller.undo()
        self.controller.wait()
        assert np.array_equal(self.target_voxels(), after_first), "undo did not restore the segment exactly"
        assert self.negative.GetNumberOfControlPoints() == 0, "undo left the negative point in place"
        self.controller.redo()
        self.controller.wait()
        assert np.array_equal(self.target_voxels(), after_second), "redo did not restore the segment exactly"
        assert self.negative.GetNumberOfControlPoints() == 1
        self.controller.reset()
        self.controller.wait()
        assert not self.target_voxels().any(), "reset did not restore the empty segment"
        assert self.neighbour_digest() == neighbour_before, "the neighbour segment changed"

    def check_second_volume(self) -> None:
        volume = sphere_volume(self.scene, "Phantom 2", dims=(60, 60, 48), spacing=(1.3, 1.3, 1.0), angle=-10.0)
        segmentation = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation 2")
        segment_id = segmentation.GetSegmentation().AddEmptySegment("Sphere")
        self.select(volume, segmentation, segment_id)
        self.click(SPHERE_CENTER_RAS)
        assert self.controller.last_error is None, self.controller.last_error
        geometry = mrml.volume_geometry(volume)
        voxels = mrml.whole_segment(segmentation, segment_id, geometry)
        sphere = sphere_voxels(geometry.ijk_to_ras, geometry.dims, SPHERE_CENTER_RAS, SPHERE_RADIUS)
        overlap = dice(voxels, sphere)
        assert overlap > 0.8, f"second volume: Dice {overlap:.2f}"
        self.select(self.volume, self.segmentation, self.target)

    def run_all(self) -> None:
        """The self-test: every check in order (Slicer's ``SAMMed3DTest`` runs exactly this)."""
        self.check_clicks_land_and_neighbour_is_untouched()
        self.check_negative_click_and_undo_redo()
        self.check_second_volume()

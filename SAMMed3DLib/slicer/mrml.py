"""Adapter between MRML nodes (volume, segmentation, markups) and the engine's SimpleITK images.

Only MRML / VTK classes are used here (no Qt, no ``slicer.util`` GUI helpers, no ``slicer.app``), so the
module runs in real Slicer and on the ``slicer-core`` wheel alike. Call it from the main thread only.

Coordinate systems: MRML and markups are RAS (mm); SimpleITK physical space is LPS (mm). The engine image
built here has voxel index (x, y, z) == the volume's IJK, so a *region* ``(index_start, size)`` in SimpleITK
index order is also an IJK box of the volume and of the segmentation's reference geometry.
"""

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from .. import regions
from ..coordinates import RAS_TO_LPS
from ..errors import InputError
from ..regions import Region, read_region

"""(index_start, size), both in SimpleITK / IJK order (x, y, z)."""

_MATRIX_TOLERANCE = 1e-4


@dataclass(frozen=True, eq=False)
class VolumeGeometry:
    """A voxel grid in world RAS: ``ijk_to_ras`` (4×4, mm, read-only) and ``dims`` (nx, ny, nz).

    Compared by value (exact matrix and dims): the controller keeps a session only while its volume's grid is
    the same, and a dataclass's generated ``==`` on an ndarray field raises instead of answering."""

    ijk_to_ras: np.ndarray
    dims: Tuple[int, int, int]

    def __post_init__(self) -> None:
        matrix = np.array(self.ijk_to_ras, dtype=float)
        matrix.flags.writeable = False
        object.__setattr__(self, "ijk_to_ras", matrix)
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VolumeGeometry):
            return NotImplemented
        return self.dims == other.dims and np.array_equal(self.ijk_to_ras, other.ijk_to_ras)

    def __hash__(self) -> int:
        return hash((self.dims, self.ijk_to_ras.tobytes()))

    def vtk_matrix(self) -> vtk.vtkMatrix4x4:
        m = vtk.vtkMatrix4x4()
        for r in range(4):
            for c in range(4):
                m.SetElement(r, c, float(self.ijk_to_ras[r, c]))
        return m

    def full_region(self) -> Region:
        return (0, 0, 0), tuple(self.dims)

    def oriented_image(self, region: Region, values: Optional[np.ndarray] = None) -> "slicer.vtkOrientedImageData":
        """A uint8 ``vtkOrientedImageData`` on this grid covering ``region``, filled with ``values`` (z, y, x)."""
        image = slicer.vtkOrientedImageData()
        image.SetImageToWorldMatrix(self.vtk_matrix())
        image.SetExtent(*region_to_extent(region))
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        array = _voxels(image)
        array[:] = 0 if values is None else values
        return image


def _vtk_to_numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _voxels(image: vtk.vtkImageData) -> np.ndarray:
    """Writable (z, y, x) view of a single-component image's scalars."""
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return flat.reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)


def region_to_extent(region: Region) -> Tuple[int, int, int, int, int, int]:
    (x, y, z), (sx, sy, sz) = region
    return x, x + sx - 1, y, y + sy - 1, z, z + sz - 1


# --- volumes ----------------------------------------------------------------------------------------------


def volume_geometry(volume_node, *, harden: bool = False) -> VolumeGeometry:
    """The volume's voxel grid in world RAS. A parent transform is an error unless ``harden`` is set; then a
    linear one is folded into the matrix (the scene is not changed) and a non-linear one is still an error."""
    image = _image_data(volume_node)
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = _vtk_to_numpy_matrix(matrix)
    transform = volume_node.GetParentTransformNode()
    if transform is not None:
        name = volume_node.GetName()
        if not transform.IsTransformToWorldLinear():
            raise InputError(
                f"Volume '{name}' is under the non-linear transform '{transform.GetName()}'. "
                "Harden it (Transforms module) before segmenting."
            )
        if not harden:
            raise InputError(
                f"Volume '{name}' is under the transform '{transform.GetName()}'. "
                "Harden the transform, or enable hardening, before segmenting."
            )
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = _vtk_to_numpy_matrix(to_world) @ ijk_to_ras
    return VolumeGeometry(ijk_to_ras, tuple(int(d) for d in image.GetDimensions()))


def _image_data(volume_node) -> vtk.vtkImageData:
    if volume_node is None:
        raise InputError("Select an input volume first.")
    image = volume_node.GetImageData()
    if image is None:
        raise InputError(f"Volume '{volume_node.GetName()}' holds no image data.")
    return image


def check_scalar_volume(volume_node) -> None:
    """Raise ``InputError`` for anything but a 3-D single-component scalar volume."""
    image = _image_data(volume_node)
    name = volume_node.GetName()
    if volume_node.IsA("vtkMRMLVectorVolumeNode") or image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"Volume '{name}' is a colour (RGB) or vector volume; SAM-Med3D needs a single-channel scalar volume "
            "(convert it with the Vector to Scalar Volume module)."
        )
    dims = image.GetDimensions()
    if min(dims) < 2:
        raise InputError(
            f"Volume '{name}' is 2-D ({dims[0]}×{dims[1]}×{dims[2]} voxels); SAM-Med3D needs a 3-D volume."
        )


def read_volume(volume_node, *, harden: bool = False) -> Tuple[sitk.Image, VolumeGeometry]:
    """The volume checked once (scalar, 3-D, transform) and read once: a SimpleITK image (LPS physical space,
    index (x, y, z) == IJK, voxel values copied) and its grid in world RAS."""
    check_scalar_volume(volume_node)
    geometry = volume_geometry(volume_node, harden=harden)
    return volume_to_sitk(volume_node, geometry), geometry


def volume_to_sitk(volume_node, geometry: VolumeGeometry) -> sitk.Image:
    """The checked volume on ``geometry`` (its :func:`volume_geometry`) as a SimpleITK image, voxels copied."""
    voxels = np.array(_voxels(volume_node.GetImageData()), copy=True)
    image = sitk.GetImageFromArray(voxels)
    axes = geometry.ijk_to_ras[:3, :3]
    # Spacing is the node's own; only a hardened transform (which may scale) makes us measure the matrix.
    spacing = np.linalg.norm(axes, axis=0) if volume_node.GetParentTransformNode() else volume_node.GetSpacing()
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection((RAS_TO_LPS @ (axes / np.asarray(spacing))).flatten().tolist())
    image.SetOrigin((RAS_TO_LPS @ geometry.ijk_to_ras[:3, 3]).tolist())
    return image


def volume_cache_key(volume_node, harden: bool) -> Tuple:
    """Changes whenever the voxels, the geometry or (with ``harden``) the parent transform change."""
    transform = volume_node.GetParentTransformNode()
    transform_time = transform.GetTransformToWorldMTime() if transform is not None else 0
    return volume_node.GetID(), volume_node.GetImageData().GetMTime(), volume_node.GetMTime(), harden, transform_time


def image_stamp(volume_node) -> Tuple:
    """Changes whenever the volume's image data is replaced or modified (its voxels or its grid)."""
    image = volume_node.GetImageData() if volume_node is not None else None
    return (image.__this__, image.GetMTime()) if image is not None else (None,)  # the C++ object, not the wrapper


def node_name(node) -> str:
    return node.GetName() if node is not None else ""


def has_segment(segmentation_node, segment_id: str) -> bool:
    return bool(segment_id) and segmentation_node.GetSegmentation().GetSegment(segment_id) is not None


# --- segmentations ----------------------------------------------------------------------------------------

_BINARY = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
_GEOMETRY_PARAMETER = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()


def _segment(segmentation_node, segment_id: str):
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id) if segment_id else None
    if segment is None:
        raise InputError(f"Segmentation '{segmentation_node.GetName()}' has no segment '{segment_id}'.")
    return segment


def _geometry_of(image: "slicer.vtkOrientedImageData") -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return _vtk_to_numpy_matrix(matrix)


def _is_empty(image) -> bool:
    if image is None or image.GetPointData().GetScalars() is None:
        return True
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    return x1 < x0 or y1 < y0 or z1 < z0


def segment_stamp(segmentation_node, segment_id: str) -> Tuple:
    """Changes whenever the segment's voxels may have changed: the labelmap they are stored in (object and
    modification time, which counts up across all VTK objects and includes the voxel array's), the segment's label
    value and layer."""
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segment_id) if segment_id else None
    if segment is None:
        return (None,)
    layer = segment.GetRepresentation(_BINARY)
    if layer is None:
        return (None, segment.GetLabelValue())
    return layer.__this__, layer.GetMTime(), segment.GetLabelValue(), segmentation.GetLayerIndex(segment_id)


def read_segment(segmentation_node, segment_id: str, geometry: VolumeGeometry, region: Region) -> np.ndarray:
    """The segment's voxels over ``region`` of ``geometry`` as a bool array (z, y, x)."""
    segment = _segment(segmentation_node, segment_id)
    out = np.zeros(region[1][::-1], dtype=bool)
    layer = segment.GetRepresentation(_BINARY)
    if _is_empty(layer):
        return out
    if not np.allclose(_geometry_of(layer), geometry.ijk_to_ras, atol=_MATRIX_TOLERANCE):
        # A labelmap imported on another grid: nearest-neighbour resample onto ours, as Slicer does.
        resampled = slicer.vtkOrientedImageData()
        reference = geometry.oriented_image(region)
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(layer, reference, resampled)
        layer = resampled
    x0, x1, y0, y1, z0, z1 = layer.GetExtent()
    lo = np.maximum(region[0], (x0, y0, z0))
    hi = np.minimum(np.add(region[0], region[1]), (x1 + 1, y1 + 1, z1 + 1))
    if np.any(hi <= lo):
        return out
    src = _voxels(layer)[lo[2] - z0 : hi[2] - z0, lo[1] - y0 : hi[1] - y0, lo[0] - x0 : hi[0] - x0]
    r = region[0]
    dst = out[lo[2] - r[2] : hi[2] - r[2], lo[1] - r[1] : hi[1] - r[1], lo[0] - r[0] : hi[0] - r[0]]
    dst[:] = src == segment.GetLabelValue()
    return out


def other_segments_mask(segmentation_node, segment_id: str, geometry: VolumeGeometry, region: Region) -> np.ndarray:
    """Union (bool, z, y, x) over ``region`` of every segment except ``segment_id``."""
    union = np.zeros(region[1][::-1], dtype=bool)
    for other in segmentation_node.GetSegmentation().GetSegmentIDs():
        if other != segment_id:
            union |= read_segment(segmentation_node, other, geometry, region)
    return union


def write_segment(segmentation_node, segment_id: str, geometry: VolumeGeometry, region: Region, mask) -> None:
    """Set the segment to ``mask`` (z, y, x) inside ``region``; voxels outside it and other segments stay as
    they are. The segment gets a labelmap layer of its own first: writes into a shared layer would move or
    relabel the neighbours' voxels, which we must never touch."""
    segmentation = segmentation_node.GetSegmentation()
    _segment(segmentation_node, segment_id)
    layer = segmentation.GetLayerIndex(segment_id)
    if len(segmentation.GetSegmentIDsForLayer(layer)) > 1:
        segmentation.SeparateSegmentLabelmap(segment_id)
    segment = _segment(segmentation_node, segment_id)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    whole = _whole_layer_with(segment, geometry, region, mask)
    if whole is not None:  # one replace of the whole layer: Slicer's min mode alone took ~40 ms for 128³ voxels
        logic.SetBinaryLabelmapToSegment(whole[0], segmentation_node, segment_id, logic.MODE_REPLACE, whole[1])
        return
    # The merge writes the modifier's values as they are, so they must be the segment's label value.
    modifier = geometry.oriented_image(region, np.asarray(mask, dtype=np.uint8) * np.uint8(segment.GetLabelValue()))
    extent = region_to_extent(region)
    # MODE_REPLACE would clear the segment outside the extent; min then max changes exactly the region.
    was_modifying = segmentation_node.StartModify()
    try:
        logic.SetBinaryLabelmapToSegment(modifier, segmentation_node, segment_id, logic.MODE_MERGE_MIN, extent)
        logic.SetBinaryLabelmapToSegment(modifier, segmentation_node, segment_id, logic.MODE_MERGE_MAX, extent)
    finally:
        segmentation_node.EndModify(was_modifying)


def _whole_layer_with(segment, geometry: VolumeGeometry, region: Region, mask) -> Optional[Tuple[Any, Tuple]]:
    """The segment's own labelmap layer with ``region`` set to ``mask`` (z, y, x), as a new image on
    ``geometry``'s grid covering the layer and the region, and its extent; None where the layer is on another
    grid or its label value does not fit the image's bytes (then Slicer's merge writes the region)."""
    label = segment.GetLabelValue()
    layer = segment.GetRepresentation(_BINARY)
    if not 0 < label < 256:
        return None
    empty = _is_empty(layer)
    if not empty and not np.allclose(_geometry_of(layer), geometry.ijk_to_ras, atol=_MATRIX_TOLERANCE):
        return None
    lo, hi = np.array(region[0]), np.add(region[0], region[1])
    if not empty:
        x0, x1, y0, y1, z0, z1 = layer.GetExtent()
        lo, hi = np.minimum(lo, (x0, y0, z0)), np.maximum(hi, (x1 + 1, y1 + 1, z1 + 1))
    covering = (tuple(int(v) for v in lo), tuple(int(v) for v in hi - lo))
    image = geometry.oriented_image(covering)
    voxels = _voxels(image)
    if not empty:
        kept = voxels[z0 - lo[2] : z1 + 1 - lo[2], y0 - lo[1] : y1 + 1 - lo[1], x0 - lo[0] : x1 + 1 - lo[0]]
        np.multiply(_voxels(layer) == label, np.uint8(label), out=kept)
    r = np.subtract(region[0], lo)
    size = region[1]
    inside = voxels[r[2] : r[2] + size[2], r[1] : r[1] + size[1], r[0] : r[0] + size[0]]
    np.multiply(np.asarray(mask, dtype=bool), np.uint8(label), out=inside)
    return image, region_to_extent(covering)


def whole_segment(segmentation_node, segment_id: str, geometry: VolumeGeometry) -> np.ndarray:
    """The segment's voxels on all of ``geometry`` (bool, z, y, x)."""
    return read_segment(segmentation_node, segment_id, geometry, geometry.full_region())


def voxels_region(voxels: np.ndarray) -> Optional[Region]:
    """Bounding region (SimpleITK index order) of the true voxels of a (z, y, x) array; ``None`` when empty."""
    if not voxels.any():
        return None
    nz = np.nonzero(voxels)
    start = [int(nz[axis].min()) for axis in (2, 1, 0)]
    size = [int(nz[axis].max()) - s + 1 for axis, s in zip((2, 1, 0), start)]
    return tuple(start), tuple(size)


def voxels_to_sitk(voxels: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A (z, y, x) bool array as a uint8 0/1 SimpleITK mask on ``reference``'s grid (the volume image)."""
    mask = sitk.GetImageFromArray(voxels.astype(np.uint8))
    mask.CopyInformation(reference)
    return mask


def _has_content(segmentation_node) -> bool:
    segmentation = segmentation_node.GetSegmentation()
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        layer = segment.GetRepresentation(_BINARY)
        if not _is_empty(layer) and np.any(_voxels(layer) == segment.GetLabelValue()):
            return True
    return False


def check_segmentation(segmentation_node, geometry: VolumeGeometry, volume_name: str = "the volume") -> None:
    """Raise ``InputError`` unless :func:`prepare_segmentation` can make the segmentation usable on
    ``geometry``. Changes nothing: bad input is reported before the scene is touched."""
    if segmentation_node is None:
        raise InputError("Select or create a segmentation first.")
    name = segmentation_node.GetName()
    if segmentation_node.GetParentTransformNode() is not None:
        raise InputError(f"Segmentation '{name}' is under a transform; harden it before segmenting.")
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetNumberOfSegments() and segmentation.GetSourceRepresentationName() != _BINARY:
        raise InputError(f"Segmentation '{name}' is stored as surfaces; convert it to a binary labelmap first.")
    current = segmentation.GetConversionParameter(_GEOMETRY_PARAMETER)
    if current and not _same_geometry(current, geometry) and _has_content(segmentation_node):
        raise InputError(
            f"Segmentation '{name}' was made on a different image grid than '{volume_name}'. "
            "Choose or create a segmentation for this volume."
        )


def prepare_segmentation(segmentation_node, geometry: VolumeGeometry, volume_name: str = "the volume") -> None:
    """Make the segmentation usable on ``geometry``: binary labelmap source, not transformed, and reference
    geometry set from the volume when it has none (or only empty segments). A segmentation with content on
    another grid is an error (see :func:`check_segmentation`) rather than a silent resample of the user's work."""
    check_segmentation(segmentation_node, geometry, volume_name)
    segmentation = segmentation_node.GetSegmentation()
    current = segmentation.GetConversionParameter(_GEOMETRY_PARAMETER)
    if current and _same_geometry(current, geometry):
        return
    wanted = slicer.vtkSegmentationConverter.SerializeImageGeometry(
        geometry.vtk_matrix(), region_to_extent(geometry.full_region())
    )
    segmentation.SetSourceRepresentationName(_BINARY)
    segmentation.SetConversionParameter(_GEOMETRY_PARAMETER, wanted)


def _same_geometry(serialized: str, geometry: VolumeGeometry) -> bool:
    matrix = vtk.vtkMatrix4x4()
    extent = [0, -1, 0, -1, 0, -1]
    if not slicer.vtkSegmentationConverter.DeserializeImageGeometry(serialized, matrix, extent):
        return False
    same_matrix = np.allclose(_vtk_to_numpy_matrix(matrix), geometry.ijk_to_ras, atol=_MATRIX_TOLERANCE)
    return same_matrix and tuple(extent) == region_to_extent(geometry.full_region())


# --- one interactive step ---------------------------------------------------------------------------------


@dataclass
class SegmentEdit:
    """What one step did to one segment inside ``region``: voxels ``before`` and ``after`` (bool, z, y, x).
    ``covered`` (bool, z, y, x) marks the voxels the edit owns; None: all of ``region``."""

    region: Region
    before: np.ndarray
    after: np.ndarray
    covered: Optional[np.ndarray] = None


def _embed(values: np.ndarray, region: Region, into: Region, fill: np.ndarray) -> np.ndarray:
    """``fill`` (shaped like ``into``) with ``values`` of ``region`` (inside ``into``) written over it."""
    (x, y, z), (sx, sy, sz) = region
    (ox, oy, oz), _ = into
    out = fill.copy()
    out[z - oz : z - oz + sz, y - oy : y - oy + sy, x - ox : x - ox + sx] = values
    return out


def _covered(edit: SegmentEdit) -> np.ndarray:
    return np.ones(edit.before.shape, dtype=bool) if edit.covered is None else edit.covered


def merge_edits(older: Optional[SegmentEdit], newer: Optional[SegmentEdit]) -> Optional[SegmentEdit]:
    """One edit that does what ``older`` and then ``newer`` did (undoing it restores what was there before
    ``older``). Used to keep the net effect of steps that fall off the end of the undo history."""
    if older is None or newer is None:
        return older if newer is None else newer
    region = regions.union(older.region, newer.region)
    empty = np.zeros(region[1][::-1], dtype=bool)
    old_cover, new_cover = (_embed(_covered(e), e.region, region, empty) for e in (older, newer))
    before = _embed(newer.before, newer.region, region, empty)
    before = np.where(old_cover, _embed(older.before, older.region, region, empty), before)
    after = _embed(older.after, older.region, region, empty)
    after = np.where(new_cover, _embed(newer.after, newer.region, region, empty), after)
    return SegmentEdit(region, before, after, old_cover | new_cover)


def mask_region(mask: sitk.Image, region: Region) -> np.ndarray:
    """``mask`` (engine output on the volume grid) cropped to ``region`` as a bool array (z, y, x); reads the
    region only (:func:`SAMMed3DLib.paste.read_region`: a step's mask shares its buffer with the session's)."""
    return read_region(mask, region) != 0


def apply_mask(
    segmentation_node,
    segment_id: str,
    geometry: VolumeGeometry,
    mask: sitk.Image,
    region: Optional[Region],
    *,
    protect_others: bool = True,
) -> Optional[SegmentEdit]:
    """Write ``mask`` into the segment within ``region`` only. With ``protect_others`` the voxels that belong
    to any other segment are not added (voxels the segment already shares with another, e.g. painted there by
    hand, stay), so every other segment is unchanged either way."""
    region = regions.clip(region, geometry.dims) if region else None
    if region is None:
        return None
    after = mask_region(mask, region)
    before = read_segment(segmentation_node, segment_id, geometry, region)
    if protect_others:
        after &= before | ~other_segments_mask(segmentation_node, segment_id, geometry, region)
    if not np.array_equal(before, after):
        write_segment(segmentation_node, segment_id, geometry, region, after)
    return SegmentEdit(region, before, after)


def revert_edit(
    segmentation_node, segment_id: str, geometry: VolumeGeometry, edit: SegmentEdit, *, undo: bool = True
) -> None:
    """Undo (restore ``before``) or redo (restore ``after``) an edit exactly; voxels it does not cover stay."""
    values = edit.before if undo else edit.after
    if edit.covered is not None:
        values = np.where(edit.covered, values, read_segment(segmentation_node, segment_id, geometry, edit.region))
    write_segment(segmentation_node, segment_id, geometry, edit.region, values)


# --- what the panel creates -------------------------------------------------------------------------------


def first_scalar_volume(scene):
    """The scene's first scalar volume node, or None."""
    return scene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")


def new_segmentation(scene, volume_node=None):
    """A segmentation node (with display), its reference geometry taken from ``volume_node`` when given."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    node.CreateDefaultDisplayNodes()
    if volume_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return node


def add_empty_segment(segmentation_node) -> str:
    """Add an empty segment (Slicer picks name and colour); returns its id."""
    return segmentation_node.GetSegmentation().AddEmptySegment()

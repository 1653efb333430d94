"""Image and text files for the command line: reading volumes (any ITK-readable file or a DICOM series
folder), refusing files that are not what their header claims, and writing files that are verified on disk.
(:mod:`.outputs` puts written files into place all or nothing.)

SimpleITK's readers and writers (the NIfTI library in particular) print their own error lines to the
process's standard error besides raising; those are held back on failure, so the user sees one message.
The helpers redirect file descriptor 2 for the length of a call, one thread at a time (the server's worker
reads uploads from several threads): the descriptor is the whole process's.
"""

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..inputs import GRID_TOLERANCE
from ..rawfiles import check_nifti_data, is_nifti
from ..staging import write_text  # noqa: F401  (the command line's text writer is the staged outputs' one)

PathLike = Union["os.PathLike[str]", str]
_STDERR_HELD = threading.RLock()
"""Held while file descriptor 2 is redirected (re-entrant: a verified write reads back inside its own hold)."""
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".hdr", ".img", ".h5", ".hdf5", ".mnc")
"""File name endings of the formats a 3-D volume is written in (each keeps it, geometry included; .png, .jpg,
.tif, .dcm and the like hold 2-D pictures or lose the geometry)."""


def check_volume_path(path: PathLike, option: str) -> None:
    """Before any work: InputError unless ``path`` ends like a 3-D volume format (:data:`VOLUME_SUFFIXES`)."""
    name = Path(path).name.lower()
    if not name.endswith(VOLUME_SUFFIXES):
        suffix = "".join(Path(name).suffixes[-2:]) if name.endswith(".gz") else Path(name).suffix
        what = f"a {suffix} file" if suffix else "a name without an extension"
        raise InputError(
            f"{option} {path}: {what} cannot hold a 3-D volume; name it .nii.gz, .nii, .nrrd, .mha or .mhd"
        )


def read_image(path: PathLike, image_io: Optional[str] = None) -> sitk.Image:
    """The volume at ``path``: a file SimpleITK reads (NIfTI, NRRD, MHA, ...) or a folder of one DICOM series.

    A folder with several series gives the one with the most files. ``image_io``: read a file with this ITK
    reader only (e.g. "NrrdImageIO"), not the one ITK picks from the bytes. Raises InputError when nothing
    usable is there.
    """
    path = Path(path)
    if path.is_dir():
        return _read_dicom_series(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if not path.is_file():
        raise InputError(f"{path} is not a regular file or a folder")
    if is_nifti(path):  # ITK reads a short NIfTI as zeros and its NaN/Inf as 0: the raw bytes decide, first
        check_nifti_data(path)  # (so that a header promising terabytes never reaches ITK's allocation)
    try:
        with native_stderr_held():
            image = sitk.ReadImage(str(path), imageIO=image_io or "")
    except RuntimeError as exc:
        raise InputError(f"{path} is not an image SimpleITK can read ({_itk_message(exc)})") from exc
    return _three_dimensional(image, path)


def _three_dimensional(image: sitk.Image, path: Path) -> sitk.Image:
    """``image`` if it is 3-D, else InputError (a 2-D slice or a 4-D series, e.g. fMRI or a multi-echo NIfTI)."""
    if image.GetDimension() != 3:
        size = "x".join(str(n) for n in image.GetSize())
        raise InputError(f"{path} is a {image.GetDimension()}-D image ({size} voxels); a 3-D volume is needed")
    return image


def _read_dicom_series(folder: Path) -> sitk.Image:
    with native_stderr_held():
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        if not series:
            raise InputError(f"{folder} holds no DICOM series")
        files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), s) for s in series), key=len)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        with native_stderr_held():
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"the DICOM series in {folder} cannot be read ({_itk_message(exc)})") from exc
    return _three_dimensional(image, folder)


def write_image(image: sitk.Image, path: PathLike) -> None:
    """Write ``image`` to exactly ``path`` (compressed where the format allows; the folder must exist), then
    verify the file on disk: every voxel present and the geometry kept.

    InputError if it cannot be written, comes out short (a full disk or a file-size limit: ITK's NIfTI
    writer does not raise then) or cannot hold the image's geometry. The command line writes through
    :class:`.outputs.StagedOutputs`, so that a failure leaves nothing behind.
    """
    path = Path(path)
    try:
        with native_stderr_held():  # a failed check drops what the writer printed (its "** ERROR: NWAD ...")
            sitk.WriteImage(image, str(path), useCompression=True)
            _verify_image_file(image, path)
    except RuntimeError as exc:
        raise InputError(f"cannot write {path} ({_itk_message(exc)})") from exc


def _verify_image_file(image: sitk.Image, path: Path) -> None:
    """InputError unless ``path`` reads back with ``image``'s size, pixel type and geometry, all data present."""
    try:
        with native_stderr_held():
            if is_nifti(path):
                check_nifti_data(path)
                written = sitk.ImageFileReader()
                written.SetFileName(str(path))
                written.ReadImageInformation()
            else:  # ITK's other readers raise on short data
                written = sitk.ReadImage(str(path))
    except (RuntimeError, InputError) as exc:
        message = exc if isinstance(exc, InputError) else _itk_message(exc)
        raise InputError(f"cannot write {path}: the file on disk is incomplete (disk full?) ({message})") from exc
    if tuple(written.GetSize()) != tuple(image.GetSize()):
        raise InputError(f"cannot write {path}: the file on disk has size {written.GetSize()}, not {image.GetSize()}")
    check_geometry_kept(image, written, path)


def check_geometry_kept(image: sitk.Image, written, path: PathLike) -> None:
    """InputError unless ``written`` (an image or an ImageFileReader after ReadImageInformation) has
    ``image``'s spacing, origin and direction within GRID_TOLERANCE: e.g. NIfTI cannot hold a sheared
    (gantry-tilt) direction and silently makes it orthogonal, which would move the mask."""
    for name, getter in (("spacing", "GetSpacing"), ("origin", "GetOrigin"), ("direction", "GetDirection")):
        mine, kept = getattr(image, getter)(), getattr(written, getter)()
        if len(mine) != len(kept):
            raise InputError(f"{path}: this format does not keep a 3-D volume; write .nii.gz, .nrrd or .mha instead")
        if not np.allclose(mine, kept, rtol=0.0, atol=GRID_TOLERANCE):
            raise InputError(
                f"{path} cannot hold the image's geometry (its {name} would change from "
                f"{_rounded(mine)} to {_rounded(kept)}, moving the mask); write .nrrd or .mha instead"
            )


def check_format_holds(image: sitk.Image, path: PathLike, option: str) -> None:
    """Before any work: InputError unless a file like ``path`` (same format) keeps ``image``'s geometry.

    Probed by writing a 2x2x2 image with the same geometry to a temporary folder and reading its header.
    """
    probe = sitk.Image([2, 2, 2], sitk.sitkUInt8)
    probe.SetSpacing(image.GetSpacing())
    probe.SetOrigin(image.GetOrigin())
    probe.SetDirection(image.GetDirection())
    with tempfile.TemporaryDirectory(prefix=".sammed3d-probe-") as folder:
        target = Path(folder) / Path(path).name
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(target))
        try:
            # Its warnings (NIfTI: "coerced to orthogonal") are dropped: the comparison below says it once.
            with native_stderr_held(pass_on=False):
                sitk.WriteImage(probe, str(target))
                reader.ReadImageInformation()
        except RuntimeError as exc:
            reason = _itk_message(exc).replace(str(target), str(path))
            raise InputError(f"{option} {path}: cannot write this format ({reason})") from exc
        try:
            check_geometry_kept(probe, reader, path)
        except InputError as exc:
            raise InputError(f"{option} {exc}") from exc


def _rounded(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


@contextmanager
def native_stderr_held(pass_on: bool = True) -> Iterator[None]:
    """Hold back what native code (ITK, the NIfTI and GDCM libraries) prints to file descriptor 2 in the block.

    When the block succeeds the held text is passed on to ``sys.stderr`` (warnings stay visible) unless
    ``pass_on`` is false; when it raises, the text is dropped, since the exception's own message says what
    went wrong, once. One thread at a time: another thread's block waits (the descriptor is the process's).
    """
    with _STDERR_HELD:
        yield from _stderr_held(pass_on)


def _stderr_held(pass_on: bool) -> Iterator[None]:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable standard error: nothing to hold back
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        text = held.read().decode("utf-8", errors="replace")
    if text and pass_on:
        sys.stderr.write(text)


_ITK_PREFIX = re.compile(r"^(?:ITK ERROR: \w+\(0x[0-9a-fA-F]+\): |sitk::ERROR: )(?:ERROR: )?")
_ITK_NOISE = re.compile(r"^Exception thrown in SimpleITK|\.(?:cxx|h|hxx|cpp):\d+:?$")


def _itk_message(exc: Exception) -> str:
    """What a SimpleITK exception says, on one line, without ITK's source locations and object addresses."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [_ITK_PREFIX.sub("", line) for line in lines if not _ITK_NOISE.search(line)]
    return (" ".join(telling) or "unknown error")[:300]

"""Reading and writing volumes for the command line: any ITK-readable file or a DICOM series folder."""

import os
from pathlib import Path

import SimpleITK as sitk

from .errors import InputError


def read_image(path: "os.PathLike[str] | str") -> sitk.Image:
    """The volume at ``path``: a file SimpleITK reads (NIfTI, NRRD, MHA, ...) or a folder of one DICOM series.

    A folder with several series gives the one with the most files. Raises InputError when nothing
    usable is there.
    """
    path = Path(path)
    if path.is_dir():
        return _read_dicom_series(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path} is not an image SimpleITK can read ({_first_line(exc)})") from exc


def _read_dicom_series(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder} holds no DICOM series")
    files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), s) for s in series), key=len)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"the DICOM series in {folder} cannot be read ({_first_line(exc)})") from exc


def write_image(image: sitk.Image, path: "os.PathLike[str] | str") -> None:
    """Write ``image`` (compressed where the format allows); InputError if the path is not writable."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as exc:
        raise InputError(f"cannot write {path} ({_first_line(exc)})") from exc


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "ERROR" in line or "error" in line]
    return (useful or lines or ["unknown error"])[-1][:200]

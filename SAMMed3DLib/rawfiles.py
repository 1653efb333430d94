"""What an image file's own header promises, checked against its bytes, without trusting ITK's reader.

ITK's NIfTI reader accepts a file shorter than its header says (the missing voxels read as zeros and a
few bytes of uninitialised memory) and turns NaN/Inf voxels into 0. Both are caught here from the raw
bytes: the header (NIfTI-1 or NIfTI-2, either byte order) gives the voxel count, type and data offset;
the data (decompressed when gzipped, in chunks) must be at least that long, and float data finite.
Other formats need no help: ITK's NRRD and MetaImage readers raise on short data and keep NaN/Inf.
"""

import gzip
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, NamedTuple, Optional

import numpy as np

from .errors import InputError

CHUNK = 1 << 22
"""Bytes read at a time (4 MiB)."""

_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes of real floating-point voxels → numpy kind+size


class NiftiLayout(NamedTuple):
    """Where a single-file NIfTI's voxel data lies and how much of it there must be."""

    offset: int  # bytes from the start of the (decompressed) file to the first voxel
    data_bytes: int  # bytes of voxel data the header promises
    float_dtype: Optional[str]  # numpy dtype of float voxels ("<f4", ">f8", ...), None for other types
    voxels: int = 0  # voxel count (product of the dimensions)
    datatype: int = 0  # the header's datatype code


def is_nifti(path: Path) -> bool:
    """A single-file NIfTI by its name (``.nii`` or ``.nii.gz``)."""
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def check_nifti_data(path: Path) -> None:
    """InputError unless the NIfTI file at ``path`` holds all the voxel data its header promises, all finite.

    Reads the whole file (decompressing it if gzipped). Files that are not single-file NIfTI-1/2 by
    their header are left to ITK.
    """
    try:
        with _open(path) as stream:
            layout = nifti_layout(stream.read(540))
            if layout is None:
                return
            stream.seek(layout.offset)
            present = _scan_data(stream, layout, path)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path} is damaged: its data cannot be read to the end ({exc})") from exc
    if present < layout.data_bytes:
        raise InputError(
            f"{path} is truncated: its header promises {layout.data_bytes} bytes of voxel data but only "
            f"{present} are there (a half-copied or cut-off file?)"
        )


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def nifti_layout(header: bytes) -> Optional[NiftiLayout]:
    """The data layout from a single-file NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header; None if it is neither
    (or its data offset is not a finite number)."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348 and header[344:347] == b"n+1":
            dims = struct.unpack(order + "8h", header[40:56])
            code, bitpix = struct.unpack(order + "2h", header[70:74])
            offset = struct.unpack(order + "f", header[108:112])[0]
            if not np.isfinite(offset):
                return None
            return _make_layout(order, dims, code, bitpix, max(int(offset), 352))
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540 and header[4:7] == b"n+2":
            code, bitpix = struct.unpack(order + "2h", header[12:16])
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            return _make_layout(order, dims, code, bitpix, max(offset, 544))
    return None


def _make_layout(order: str, dims, code: int, bitpix: int, offset: int) -> Optional[NiftiLayout]:
    rank = dims[0]
    if not 1 <= rank <= 7 or bitpix <= 0 or any(d < 0 for d in dims[1 : rank + 1]):
        return None  # not a header we understand: ITK's reader decides
    voxels = int(np.prod([max(int(d), 1) for d in dims[1 : rank + 1]], dtype=object))
    kind = _FLOAT_TYPES.get(code)
    return NiftiLayout(offset, voxels * bitpix // 8, order + kind if kind else None, voxels, code)


def _scan_data(stream: BinaryIO, layout: NiftiLayout, path: Path) -> int:
    """Bytes of voxel data read (up to the promised count); InputError at the first non-finite float."""
    present = 0
    item = np.dtype(layout.float_dtype).itemsize if layout.float_dtype else 1
    carry = b""
    while present < layout.data_bytes:
        block = stream.read(min(CHUNK, layout.data_bytes - present))
        if not block:
            break
        present += len(block)
        if layout.float_dtype:
            block = carry + block
            usable = len(block) - len(block) % item
            carry = block[usable:]
            if not np.isfinite(np.frombuffer(block[:usable], dtype=layout.float_dtype)).all():
                raise InputError(f"{path} contains NaN or infinite voxel values")
    return present

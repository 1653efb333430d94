"""What an uploaded image file's header says, read here before ITK sees a byte of it.

An upload must be self-contained: its header may not name another file (MetaImage's ``ElementDataFile`` other than
``LOCAL``, NRRD's ``data file``, a NIfTI header whose voxels live in an ``.img`` beside it), since the server's
reader would open that path on the server's disk. And the limit on an upload holds on what it becomes: the voxel
bytes the header promises (size product x bytes per voxel, exact integers) are compared to the limit before
anything is decompressed. Every refusal is an :class:`~SAMMed3DLib.errors.InputError` naming the format; a
promise over the limit is a :class:`~SAMMed3DLib.protocol.TooLargeError`.
"""

import math
import re
import zlib
from typing import Callable, Dict, List

from ..errors import InputError
from ..protocol import TooLargeError
from ..rawfiles import nifti_layout

HEADER_MAX = 1 << 16
"""Longest text header accepted (bytes): real MetaImage and NRRD headers take a few hundred."""

IMAGE_IO = {"nrrd": "NrrdImageIO", "nii": "NiftiImageIO", "nii.gz": "NiftiImageIO", "mha": "MetaImageIO"}
"""The one ITK reader each upload format is read with (never ITK's guess from the bytes, which could pick a
reader that follows references to other files)."""

_TEXT = re.compile(rb"[\t\n\r\x20-\x7e]*")
"""Printable ASCII and white space: a NUL would end a field name early in the C readers and hide it from here."""

_META_TYPES = {"char": 1, "uchar": 1, "short": 2, "ushort": 2, "int": 4, "uint": 4, "long": 8, "ulong": 8,
               "long_long": 8, "ulong_long": 8, "float": 4, "double": 8}
"""MetaImage element types (``MET_<NAME>``, also ``MET_<NAME>_ARRAY``) and their bytes (long taken as 8)."""

_NIFTI_BYTES = {1: 1, 2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                1536: 16, 1792: 16, 2048: 32, 2304: 4}
"""NIfTI data type codes and their bytes per voxel (binary, code 1, rounded up to a byte)."""

_NRRD_TYPES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
        "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
        "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"),
}
_NRRD_SIZES = {name: size for size, names in _NRRD_TYPES.items() for name in names}


def check_upload_header(fmt: str, data: bytes, max_bytes: int) -> None:
    """InputError unless the ``fmt`` file in ``data`` is self-contained with a header this module reads;
    TooLargeError if it decodes to more than ``max_bytes`` bytes of voxels."""
    decoded = _INSPECTORS[fmt](data)
    if decoded > max_bytes:
        raise TooLargeError(
            f"the uploaded {fmt} volume decodes to {decoded / 2**20:,.1f} MiB of voxels, more than the server's "
            f"limit of {max_bytes / 2**20:,.0f} MiB (the server's --max-upload-mb sets it)"
        )


# ----------------------------------------------------------------------------------------------- NIfTI
def _nifti(data: bytes) -> int:
    """Decoded bytes of a single-file NIfTI-1/2 (gzipped or not): data offset plus voxel data."""
    head = _gunzip_head(data, 540) if data[:2] == b"\x1f\x8b" else data[:540]
    if head[344:348] == b"ni1\0" or head[4:8] == b"ni2\0":
        raise InputError("the uploaded NIfTI header keeps its voxels in a separate .img file; upload a single-file "
                         ".nii or .nii.gz")
    layout = nifti_layout(head)
    if layout is None or layout.datatype not in _NIFTI_BYTES:
        raise InputError("the uploaded NIfTI volume has no single-file NIfTI-1/2 header (magic n+1 or n+2) with a "
                         "usable size, data type and data offset")
    # The reader sizes voxels by the data type, whatever the header's bits per voxel say.
    return layout.offset + max(layout.data_bytes, layout.voxels * _NIFTI_BYTES[layout.datatype])


def _gunzip_head(data: bytes, count: int) -> bytes:
    """The first ``count`` bytes of gzip ``data`` (nothing more is inflated)."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, count)
    except zlib.error as exc:
        raise InputError(f"the uploaded NIfTI volume is not valid gzip data ({exc})") from exc


# ----------------------------------------------------------------------------------------------- MetaImage
def _metaimage(data: bytes) -> int:
    """Decoded voxel bytes of a MetaImage whose header ends ``ElementDataFile = LOCAL``."""
    fields: Dict[str, str] = {}
    for line in _meta_lines(data):
        name, separator, value = line.partition("=")
        if not separator:
            raise InputError(f"the uploaded MetaImage header has a line without '=': {line[:60]!r}")
        key, value = _key(name), value.strip()
        if key in fields:
            raise InputError(f"the uploaded MetaImage header sets {name.strip()} twice")
        fields[key] = value
        if key == "elementdatafile":
            if name.strip() != "ElementDataFile" or value not in ("LOCAL", "Local", "local"):
                raise InputError("the uploaded MetaImage volume must hold its voxels itself (ElementDataFile = "
                                 f"LOCAL), but its header names {name.strip()} = {value[:80]}; upload one .mha file")
            return _metaimage_bytes(fields, len(data))
    raise InputError("the uploaded MetaImage header does not end with ElementDataFile = LOCAL")


def _metaimage_bytes(fields: Dict[str, str], size: int) -> int:
    """Decoded voxel bytes of a MetaImage header's fields; ``size``: the upload's bytes, which a stated
    CompressedDataSize may not exceed (the reader allocates that much before reading)."""
    if "compresseddatasize" in fields and _integers(fields["compresseddatasize"], "CompressedDataSize")[0] > size:
        raise InputError("the uploaded MetaImage header's CompressedDataSize is larger than the upload")
    dims = _integers(fields.get("dimsize", ""), "MetaImage DimSize")
    if "ndims" in fields and _integers(fields["ndims"], "MetaImage NDims") != [len(dims)]:
        raise InputError("the uploaded MetaImage header's NDims and DimSize disagree")
    element = fields.get("elementtype", "").strip().lower()
    name = element[4:-6] if element.endswith("_array") else element[4:]
    if not element.startswith("met_") or name not in _META_TYPES:
        raise InputError(f"the uploaded MetaImage header has an unknown ElementType {element[:40]!r}")
    channels = _integers(fields.get("elementnumberofchannels", "1"), "MetaImage ElementNumberOfChannels")
    return math.prod(dims) * math.prod(channels) * _META_TYPES[name]


# ----------------------------------------------------------------------------------------------- NRRD
def _nrrd(data: bytes) -> int:
    """Decoded voxel bytes of an NRRD whose data follows its header (no ``data file``)."""
    if not data.startswith(b"NRRD000"):
        raise InputError("the uploaded nrrd volume does not start with an NRRD magic line (NRRD0001 to NRRD0005)")
    fields: Dict[str, str] = {}
    for line in _nrrd_lines(data)[1:]:
        if line.startswith("#"):
            continue
        name, separator, value = line.partition(":")
        key = _key(name)
        if key in ("datafile", "datafiles"):
            raise InputError("the uploaded nrrd volume must hold its voxels itself, but its header names a data "
                             f"file ({value.strip()[:80]}); upload one .nrrd file with attached data")
        if not separator:
            raise InputError(f"the uploaded NRRD header has a line without ':': {line[:60]!r}")
        if value.startswith("="):  # a key/value pair ("key:=value"), not a field
            continue
        if key in fields:
            raise InputError(f"the uploaded NRRD header sets {name.strip()} twice")
        fields[key] = value.strip()
    sizes = _integers(fields.get("sizes", ""), "NRRD sizes")
    item = _NRRD_SIZES.get(" ".join(fields.get("type", "").lower().split()))
    if item is None:
        raise InputError(f"the uploaded NRRD header has an unknown type {fields.get('type', '')[:40]!r}")
    skip = _integers(fields.get("byteskip", "0"), "NRRD byte skip", allow_negative=True)[0]
    return max(skip, 0) + math.prod(sizes) * item


# ----------------------------------------------------------------------------------------------- text headers
def _nrrd_lines(data: bytes) -> List[str]:
    """An NRRD header's lines, up to the empty line after which its voxels follow (within ``HEADER_MAX`` bytes)."""
    head = data[:HEADER_MAX]
    stop = re.search(rb"\r?\n\r?\n|\r\r", head)
    if stop is None:
        raise InputError(f"the uploaded nrrd volume must hold its voxels itself, but its header has no empty line "
                         f"within {HEADER_MAX // 1024} KiB after which they would follow (a detached .nhdr header?)")
    return [_text(line, "NRRD") for line in head[: stop.start() + 1].splitlines()]


def _meta_lines(data: bytes) -> List[str]:
    """A MetaImage header's lines up to (and with) the first one naming the data file; binary data follows it."""
    kept = []
    for raw in data[:HEADER_MAX].splitlines():
        line = _text(raw, "MetaImage")
        kept.append(line)
        if _key(line.partition("=")[0]) == "elementdatafile":
            break
    return kept


def _text(line: bytes, what: str) -> str:
    if _TEXT.fullmatch(line) is None:
        raise InputError(f"the uploaded {what} header holds bytes that are not printable text")
    return line.decode("ascii")


def _key(name: str) -> str:
    """A field name as the readers may match it: case, white space, ``_`` and ``-`` ignored."""
    return re.sub(r"[\s_\-]", "", name).lower()


def _integers(text: str, what: str, allow_negative: bool = False) -> List[int]:
    """The white-space separated whole numbers of ``text`` (at least one; negative only if allowed)."""
    try:
        values = [int(v) for v in text.split()]
    except ValueError:
        values = []
    if not values or (not allow_negative and min(values) < 0):
        raise InputError(f"the uploaded volume's header has no usable {what} ({text[:60]!r})")
    return values


_INSPECTORS: Dict[str, Callable[[bytes], int]] = {"nii": _nifti, "nii.gz": _nifti, "mha": _metaimage, "nrrd": _nrrd}

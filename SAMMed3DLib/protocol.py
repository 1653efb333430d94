"""The wire format between ``SAMMed3DLib.remote`` (client) and ``SAMMed3DLib.server``: numpy + SimpleITK, no torch.

Every binary message is a *frame*: ``MAGIC`` (zlib-compressed body) or ``MAGIC_RAW`` (body as is), a 4-byte
big-endian header length, a UTF-8 JSON header, then the body. Bodies under ``COMPRESS_MIN`` bytes go as is (zlib
costs more time than the bytes it saves on them). Nothing is ever pickled.

- Session upload (``POST /v1/sessions``): header ``{"volume": {...}, "mask": {...} | null, "options": {...}}``;
  the body is the volume's bytes followed by the mask's. A volume is either ``raw`` (z-y-x voxels, little
  endian, with size/spacing/origin/direction in the header: SimpleITK's LPS physical space, size x-y-z) or
  the bytes of a single-file image (``nrrd``, ``nii``, ``nii.gz``, ``mha``). A mask is raw, bit-packed, with
  its own size/spacing/origin/direction in its header (the server refuses one that is not on the volume's grid).
- Step request (``POST /v1/sessions/<id>/<step>``): the step's JSON arguments in the ``STEP_HEADER`` header and no
  body (behind Ray Serve's proxy, reading a body costs one more round trip to the proxy), or, when longer than
  ``STEP_HEADER_MAX`` characters, as the JSON body.
- Step answer: header ``{"changed": region | null, "flipped": region | null, "seq", "timings", "encoded", "clicks",
  "payload", "dropped", "can_undo", "can_redo"}``. ``changed`` is the engine's region (every voxel the step may
  have changed); ``flipped`` the tight box of the voxels that really flipped since the previous answer, and the
  body those flips (z-y-x, 1 = flipped, bit-packed): the client XORs them into its mask. ``seq`` counts the
  session's answers (1, 2, ...), so a client that missed one (a time-out) knows its mask is stale.

- A hand edit (the ``adopt`` step) goes in the step's JSON: ``{"region": region, "painted": bits, "erased": bits}``,
  each bits the region's z-y-x voxels bit-packed and base64-encoded.

Regions are ``((x0, y0, z0), (sx, sy, sz))`` in SimpleITK index order; clicks are ``((R, A, S) mm, positive)``.
"""

import base64
import binascii
import json
import math
import struct
import zlib
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import InputError, SAMMed3DError

PROTOCOL = 4
"""Bumped on any incompatible change of the endpoints or frames."""
API_PREFIX = "/v1"
PROTOCOL_HEADER = "X-SAMMed3D-Protocol"
VERSION_HEADER = "X-SAMMed3D-Version"
STEP_HEADER = "X-SAMMed3D-Step"
STEP_HEADER_MAX = 4000
"""Step arguments up to this many characters of JSON travel in ``STEP_HEADER``, longer ones as the body (HTTP
servers and proxies limit a header's length, typically to 8 KiB)."""
FRAME_TYPE = "application/x-sammed3d-frame"
MAGIC = b"SM3D"
MAGIC_RAW = b"SM3R"
FILE_FORMATS = {"nrrd": ".nrrd", "nii": ".nii", "nii.gz": ".nii.gz", "mha": ".mha"}
"""Single-file image formats a volume may be uploaded as (format → file suffix)."""
RAW_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
COMPRESS_LEVEL = 1
"""zlib level: masks and CT compress well at 1; higher levels cost far more time than they save bytes."""
COMPRESS_MIN = 4096
"""Bodies shorter than this (bytes) are sent uncompressed."""
WORTH_RATIO = 8.0
"""Bit-packed flips are compressed only when zlib shrinks a sample of them at least this much, i.e. when the time
zlib takes is less than the time the bytes it saves take on a link of up to about 1 Gbit/s. Measured on a
192x192x128 box (590 KB packed, AMD EPYC): a refinement's flips (a 2 mm shell, a small blob) shrink 45-650x for
1-1.5 ms of zlib and 0.3-0.4 ms of inflate; the ragged flips of random test weights shrink 2-3.5x for 8-13 ms of
zlib and 2.5 ms of inflate, to save 300-420 KB: 2.5-3.5 ms at 1 Gbit/s, so they go as they are."""
SAMPLE_CHUNKS, SAMPLE_BYTES = 4, 4096
"""The sample: this many chunks of this many bytes spread evenly over the data."""


class ProtocolError(InputError):
    """A frame or volume upload that does not follow this protocol."""


class TooLargeError(ProtocolError):
    """An upload larger than the server's limit, as sent or once decoded (HTTP 413)."""


class VersionMismatchError(SAMMed3DError):
    """Client and server speak different protocol versions."""


def version_message(client_version: str, client_protocol: Any, server_version: str, server_protocol: Any) -> str:
    """One message naming both sides' versions (shown by the client, sent by the server)."""
    return (
        f"version mismatch: this client is SAMMed3DLib {client_version} (protocol {client_protocol}) but the "
        f"server is SAMMed3DLib {server_version} (protocol {server_protocol}); install the same version on both sides"
    )


# ----------------------------------------------------------------------------------------------- frames
def pack_frame(header: Mapping[str, Any], body: bytes = b"", *, compress: Optional[bool] = None) -> bytes:
    """``header`` (JSON-serialisable) and ``body`` as one frame; ``compress`` None: only from ``COMPRESS_MIN`` bytes."""
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if compress is None:
        compress = len(body) >= COMPRESS_MIN
    if compress:
        return b"".join((MAGIC, struct.pack(">I", len(text)), text, zlib.compress(body, COMPRESS_LEVEL)))
    return b"".join((MAGIC_RAW, struct.pack(">I", len(text)), text, body))


def unpack_frame(data: bytes, *, max_body: Optional[int] = None) -> Tuple[Dict[str, Any], bytes]:
    """(header, decompressed body) of a frame; ``max_body`` bytes at most after decompression (zip bombs)."""
    if len(data) < 8 or data[:4] not in (MAGIC, MAGIC_RAW):
        raise ProtocolError("not a SAM-Med3D frame (the upload must come from SAMMed3DLib.remote or follow its format)")
    (length,) = struct.unpack(">I", data[4:8])
    if 8 + length > len(data):
        raise ProtocolError("truncated frame: the JSON header runs past the end of the data")
    try:
        header = json.loads(data[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the frame's JSON header is invalid: {exc}") from exc
    except RecursionError:  # thousands of nested brackets
        raise ProtocolError("the frame's JSON header is nested too deeply") from None
    if not isinstance(header, dict):
        raise ProtocolError("the frame's JSON header must be an object")
    body = data[8 + length :]
    if data[:4] == MAGIC_RAW:
        if max_body is not None and len(body) > max_body:
            raise TooLargeError(f"the upload is larger than the server's limit of {max_body} bytes")
        return header, body
    return header, _inflate(body, max_body)


def _inflate(data: bytes, max_body: Optional[int]) -> bytes:
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(data, max_body or 0)
    except zlib.error as exc:
        raise ProtocolError(f"the frame's body is not zlib data: {exc}") from exc
    if inflater.unconsumed_tail:
        raise TooLargeError(f"the upload expands to more than the server's limit of {max_body} bytes")
    if not inflater.eof:
        raise ProtocolError("truncated frame: the compressed body ends early")
    return body


# ----------------------------------------------------------------------------------------------- volumes
def geometry_of(image: sitk.Image) -> Dict[str, Any]:
    """Size (x, y, z), spacing (mm), origin (LPS mm) and direction (row-major 3x3) as JSON."""
    return {
        "size": list(image.GetSize()),
        "spacing": list(image.GetSpacing()),
        "origin": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
    }


def raw_volume(image: sitk.Image) -> Tuple[Dict[str, Any], bytes]:
    """(header, uncompressed voxel bytes) of a 3-D scalar image in the ``raw`` format."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("the volume must be a 3-D scalar image")
    voxels = sitk.GetArrayViewFromImage(image)
    dtype = voxels.dtype.newbyteorder("<")
    if dtype.name not in RAW_DTYPES:
        raise InputError(f"the volume's voxel type {voxels.dtype} cannot be sent; use one of {', '.join(RAW_DTYPES)}")
    return {"format": "raw", "dtype": dtype.name, **geometry_of(image)}, np.ascontiguousarray(voxels, dtype).tobytes()


def volume_from_raw(header: Mapping[str, Any], data: bytes) -> sitk.Image:
    """The image a ``raw`` header and its voxel bytes describe (ProtocolError if they disagree)."""
    try:
        dtype = np.dtype(str(header["dtype"])).newbyteorder("<")
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"the raw volume header needs size, dtype, spacing, origin and direction: {exc}") from exc
    if dtype.name not in RAW_DTYPES:
        raise ProtocolError(f"raw volume: dtype must be one of {', '.join(RAW_DTYPES)}")
    size, geometry = _geometry(header, "raw volume")
    if math.prod(size) * dtype.itemsize != len(data):  # exact: numpy's product wraps around at 2**64
        raise ProtocolError(f"raw volume: {len(data)} bytes do not hold {size} voxels of {dtype.name}")
    return _placed(sitk.GetImageFromArray(np.frombuffer(data, dtype).reshape(size[::-1])), geometry, "raw volume")


def mask_from_packed(header: Mapping[str, Any], data: bytes) -> sitk.Image:
    """The uint8 0/1 mask a bit-packed mask's header (its size, spacing, origin, direction) and bytes describe,
    on its own grid: whether that is the volume's grid is the session's check, as for a local initial mask."""
    size, geometry = _geometry(header, "initial mask")
    return _placed(sitk.GetImageFromArray(unpack_bits(data, tuple(size[::-1]))), geometry, "initial mask")


def _geometry(header: Mapping[str, Any], what: str) -> Tuple[list, Tuple[list, list, list]]:
    """(size x-y-z, (spacing, origin, direction)) of a header with ``geometry_of``'s keys; ProtocolError naming
    ``what`` if one is missing or malformed."""
    try:
        size = [int(v) for v in header["size"]]
        spacing = [float(v) for v in header["spacing"]]
        origin = [float(v) for v in header["origin"]]
        direction = [float(v) for v in header["direction"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"the {what} header needs size, spacing, origin and direction: {exc}") from exc
    if len(size) != 3 or min(size) < 1:
        raise ProtocolError(f"{what}: size must be three positive ints")
    if len(spacing) != 3 or len(origin) != 3 or len(direction) != 9:
        raise ProtocolError(f"{what}: spacing and origin need 3 numbers, direction 9 (row-major 3x3)")
    return size, (spacing, origin, direction)


def _placed(image: sitk.Image, geometry: Tuple[list, list, list], what: str) -> sitk.Image:
    """``image`` with the spacing, origin and direction of ``geometry`` (ProtocolError if ITK refuses them)."""
    spacing, origin, direction = geometry
    try:
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection(direction)
    except RuntimeError as exc:
        raise ProtocolError(f"{what}: invalid geometry ({str(exc).strip().splitlines()[-1]})") from exc
    return image


# ----------------------------------------------------------------------------------------------- masks
def pack_bits(values: np.ndarray) -> bytes:
    """0/1 voxels (bool, or uint8 holding only 0 and 1, as masks do; any shape, C order) as packed bits."""
    values = np.ascontiguousarray(values)
    if values.dtype == np.uint8:
        values = values.view(bool)  # same bytes: 2.5x faster than converting (0/1 only)
    return np.packbits(np.asarray(values, dtype=bool), axis=None).tobytes()


def unpack_bits(data: bytes, shape: Tuple[int, ...]) -> np.ndarray:
    """uint8 0/1 array of ``shape`` from packed bits (ProtocolError if the count is wrong)."""
    count = math.prod(shape)  # exact: numpy's product wraps around at 2**64
    if len(data) != (count + 7) // 8:
        raise ProtocolError(f"{len(data)} packed bytes do not hold a {shape} mask")
    return np.unpackbits(np.frombuffer(data, np.uint8), count=count).reshape(shape)


def nonzero_box(flags: np.ndarray) -> Optional[Tuple[slice, slice, slice]]:
    """The tight z-y-x box (slices) of the non-zero voxels of a 3-D 0/1 uint8 or bool array; None if all are 0.
    Planes first, then one OR over the slab of non-empty planes: contiguous reductions, no full pass per axis."""
    flags = flags.view(bool)
    planes = np.flatnonzero(flags.reshape(flags.shape[0], -1).any(axis=1))
    if planes.size == 0:
        return None
    slab = flags[planes[0] : planes[-1] + 1].any(axis=0)  # y-x
    rows, columns = np.flatnonzero(slab.any(axis=1)), np.flatnonzero(slab.any(axis=0))
    return (slice(int(planes[0]), int(planes[-1]) + 1), slice(int(rows[0]), int(rows[-1]) + 1),
            slice(int(columns[0]), int(columns[-1]) + 1))


def take_flips(mirror: np.ndarray, new: np.ndarray) -> Tuple[Optional[Tuple[slice, slice, slice]], bytes]:
    """(tight z-y-x box, bit-packed flips inside it) that turn ``mirror`` into ``new`` (0/1 uint8 arrays of one
    shape); ``mirror`` is updated to ``new`` in place. (None, b"") when nothing flipped."""
    flips = np.bitwise_xor(mirror, new)  # one pass gives both the box and the bits
    box = nonzero_box(flips)
    if box is None:
        return None, b""
    np.copyto(mirror[box], new[box])  # nothing flipped outside the box; a copy is ~2x faster than XOR-ing there
    return box, pack_bits(flips[box])


def worth_compressing(data: bytes) -> bool:
    """Whether zlib pays on ``data``: ``COMPRESS_MIN`` bytes or more, and a sample shrinks ``WORTH_RATIO``-fold."""
    if len(data) < COMPRESS_MIN:
        return False
    step = max(SAMPLE_BYTES, len(data) // SAMPLE_CHUNKS)
    sample = b"".join(data[i : i + SAMPLE_BYTES] for i in range(0, len(data), step))
    return len(zlib.compress(sample, COMPRESS_LEVEL)) * WORTH_RATIO <= len(sample)


def apply_flips(window: np.ndarray, data: bytes) -> None:
    """XOR the bit-packed flips ``data`` into the 0/1 uint8 ``window`` in place (ProtocolError if sizes differ)."""
    np.bitwise_xor(window, unpack_bits(data, window.shape), out=window)


def box_region(origin: Tuple[int, int, int], box: Tuple[slice, slice, slice]):
    """The (x, y, z) region of z-y-x slices ``box`` taken inside a window starting at index ``origin`` (x, y, z)."""
    start = tuple(int(o + b.start) for o, b in zip(origin, box[::-1]))
    return start, tuple(int(b.stop - b.start) for b in box[::-1])


def as_region(value: Any) -> Optional[Tuple[Tuple[int, int, int], Tuple[int, int, int]]]:
    """A region from its JSON form (None stays None)."""
    if value is None:
        return None
    start, size = value
    return tuple(int(v) for v in start), tuple(int(v) for v in size)


def as_clicks(value: Any) -> Tuple[Tuple[Tuple[float, float, float], bool], ...]:
    """Clicks from their JSON form."""
    return tuple((tuple(float(v) for v in point), bool(positive)) for point, positive in value)


def hand_edit_args(region: Any, painted: np.ndarray, erased: np.ndarray) -> Dict[str, Any]:
    """The JSON arguments of an ``adopt`` step: a hand edit's region and its painted and erased voxels (z-y-x)."""
    bits = {name: base64.b64encode(pack_bits(values)).decode("ascii") for name, values in
            (("painted", painted), ("erased", erased))}  # fmt: skip
    return {"region": [list(map(int, region[0])), list(map(int, region[1]))], **bits}


def hand_edit(args: Mapping[str, Any]) -> Tuple[Any, np.ndarray, np.ndarray]:
    """(region, painted, erased) of an ``adopt`` step's arguments (:func:`hand_edit_args`); ProtocolError if malformed
    (the session checks that the region lies in its image)."""
    try:
        region = as_region(args.get("region"))
    except (TypeError, ValueError):
        region = None
    if region is None or len(region[0]) != 3 or len(region[1]) != 3 or min(region[1]) < 1:
        raise ProtocolError(f"an adopt step needs a non-empty 'region', got {args.get('region')!r}")
    values = []
    for name in ("painted", "erased"):
        try:
            data = base64.b64decode(str(args.get(name, "")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"the adopt step's '{name}' is not base64") from exc
        values.append(unpack_bits(data, tuple(region[1][::-1])).astype(bool))
    return region, values[0], values[1]

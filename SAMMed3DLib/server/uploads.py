"""A session upload, decoded and checked: the volume, the initial mask and the session options (no Ray).

Everything in an upload is the client's and checked before use: the frame and its JSON, the options' types, a
raw volume's size against its bytes, a file volume's header (self-contained, within the limit once decoded; see
:mod:`.headers`), which is then read with the one ITK reader of its format.
"""

import math
import numbers
import os
import tempfile
from typing import Any, Dict, Optional, Tuple

import SimpleITK as sitk

from ..cli.images import read_image
from ..errors import InputError
from ..protocol import FILE_FORMATS, ProtocolError, TooLargeError, mask_from_packed, unpack_frame, volume_from_raw
from .headers import IMAGE_IO, check_upload_header

SESSION_OPTIONS = ("auto_extend", "max_extend_steps", "history_limit", "clicks")
"""Session options a client may set (keyword arguments of InteractiveSession)."""
MAX_CLICKS = 10_000
"""Earlier clicks a session may start from (a session continued on new voxels brings its clicks)."""
MAX_EXTEND_STEPS = 64
"""Most auto-extension steps a client may ask for per click (each may encode a new ROI)."""


def decode_upload(upload: bytes, max_bytes: int) -> Tuple[sitk.Image, Optional[sitk.Image], Dict[str, Any]]:
    """(volume, initial mask or None, session options) of a session upload frame; InputError (TooLargeError
    beyond ``max_bytes``, sent or decoded) for anything malformed."""
    header, body = unpack_frame(upload, max_body=max_bytes)
    volume = header.get("volume")
    if not isinstance(volume, dict) or not _is_int(volume.get("length")) or volume["length"] < 0:
        raise InputError("the upload's header needs a 'volume' object with the byte 'length' of the volume")
    options = session_options(header.get("options"))
    length = volume["length"]
    data, rest = body[:length], body[length:]
    fmt = volume.get("format")
    image = volume_from_raw(volume, data) if fmt == "raw" else volume_from_file_bytes(str(fmt), data, max_bytes)
    mask = None
    if header.get("mask") is not None:  # on its own grid: the session refuses one off the volume's, as locally
        _check_mask_size(header["mask"], max_bytes)
        mask = mask_from_packed(header["mask"], rest)
    return image, mask, options


def session_options(options: Any) -> Dict[str, Any]:
    """The upload's session options, each of the type InteractiveSession takes; InputError naming the first
    that is unknown or of the wrong type."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InputError(f"the upload's 'options' must be a JSON object ({', '.join(SESSION_OPTIONS)}), "
                         f"got {type(options).__name__}")
    unknown = set(options) - set(SESSION_OPTIONS)
    if unknown:
        raise InputError(f"unknown session options {sorted(unknown)}; known: {', '.join(SESSION_OPTIONS)}")
    if "auto_extend" in options and not isinstance(options["auto_extend"], bool):
        raise InputError(f"the option auto_extend must be true or false, got {options['auto_extend']!r}")
    steps = options.get("max_extend_steps", 0)
    if not _is_int(steps) or not 0 <= steps <= MAX_EXTEND_STEPS:
        raise InputError(f"the option max_extend_steps must be a whole number from 0 to {MAX_EXTEND_STEPS}, "
                         f"got {steps!r}")
    limit = options.get("history_limit", 1)
    if not _is_int(limit) or limit < 1:
        raise InputError(f"the option history_limit must be a whole number of steps ≥ 1, got {limit!r}")
    clicks = options.get("clicks", [])
    if not isinstance(clicks, list) or len(clicks) > MAX_CLICKS:
        raise InputError(f"the option clicks must be a list of at most {MAX_CLICKS} earlier clicks "
                         "([[R, A, S], positive], ...)")  # each one is checked by the session
    return dict(options)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_mask_size(header: Any, max_bytes: int) -> None:
    """TooLargeError if the initial mask would unpack to more than ``max_bytes`` (one byte per voxel)."""
    size = header.get("size") if isinstance(header, dict) else None
    if isinstance(size, list) and size and all(_is_int(v) and v > 0 for v in size) and math.prod(size) > max_bytes:
        raise TooLargeError(f"the initial mask's size {size} unpacks to more than the server's limit of "
                            f"{max_bytes / 2**20:,.0f} MiB (the server's --max-upload-mb sets it)")


def volume_from_file_bytes(fmt: str, data: bytes, max_bytes: int) -> sitk.Image:
    """Read the bytes of a single-file image (``fmt`` a key of ``FILE_FORMATS``) through a private temp file with
    its format's one ITK reader, after :func:`.headers.check_upload_header` (self-contained, within ``max_bytes``
    once decoded); as for a file given on the command line, a short NIfTI or NaN/Inf voxels are refused too."""
    if fmt not in FILE_FORMATS:
        raise ProtocolError(f"unknown volume format {fmt!r}; use raw or one of {', '.join(FILE_FORMATS)}")
    check_upload_header(fmt, data, max_bytes)
    with tempfile.TemporaryDirectory(prefix="sammed3d-upload-") as folder:
        path = os.path.join(folder, "volume" + FILE_FORMATS[fmt])
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            return read_image(path, image_io=IMAGE_IO[fmt])
        except InputError as exc:  # the message names the private temp file: name the upload instead
            reason = str(exc).replace(f"{path} is not an image SimpleITK can read", "cannot be read").replace(path, "")
            raise InputError(f"the uploaded {fmt} volume {reason.strip()}") from exc

"""Hostile uploads, without Ray: a header naming another file, a volume that decompresses past the limit,
malformed options and sizes; and the worker's native-stderr capture under concurrent uploads."""

import gzip
import os
import struct
import threading
import zlib

import numpy as np
import pytest
import SimpleITK as sitk
from support.phantoms import centre_ras, sphere_phantom

from SAMMed3DLib import InteractiveSession
from SAMMed3DLib.errors import InputError
from SAMMed3DLib.protocol import TooLargeError, pack_frame, raw_volume, unpack_frame
from SAMMed3DLib.remote import _upload
from SAMMed3DLib.server import uploads
from SAMMed3DLib.server.config import Limits
from SAMMed3DLib.server.core import Failure, WorkerCore
from SAMMed3DLib.server.uploads import volume_from_file_bytes

LIMIT = 4 << 20
OUTSIDE = "/etc/hostname"  # a file that exists on the server's disk
MISSING = "/no/such/file"


@pytest.fixture
def itk_never_reads(monkeypatch):
    """The upload must be refused from its header alone: ITK's reader is not reached."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("ITK was handed the upload")

    monkeypatch.setattr(uploads, "read_image", refuse)


def metaimage(data_file: str, key: str = "ElementDataFile", extra: str = "", dims: str = "4 4 4") -> bytes:
    return (f"ObjectType = Image\nNDims = 3\nDimSize = {dims}\nElementType = MET_UCHAR\n{extra}"
            f"{key} = {data_file}\n").encode() + bytes(64)


def nrrd(fields: str, data: bytes = bytes(64)) -> bytes:
    return f"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4 4\n{fields}\n\n".encode() + data


@pytest.mark.parametrize("fmt, data", [
    ("mha", metaimage(OUTSIDE)),
    ("mha", metaimage(MISSING)),
    ("mha", metaimage("/dev/zero", dims="4096 4096 4096")),
    ("mha", metaimage(OUTSIDE, key="elementdatafile")),
    ("mha", metaimage(OUTSIDE, key="  ElementDataFile\t")),
    ("mha", metaimage("LIST\nslice0.raw")),
    ("mha", metaimage("slice%03d.raw 1 4 1")),
    ("mha", metaimage(OUTSIDE, extra="elementdatafile = LOCAL\n")),  # a decoy the C reader would skip
    ("mha", metaimage(OUTSIDE, key="ElementDataFile\0x")),  # a NUL ends the name early in the C reader
    ("mha", b"ObjectType = Image\nNDims = 3\n"),  # no ElementDataFile at all
    ("mha", metaimage("LOCAL", extra=f"CompressedData = True\nCompressedDataSize = {2**40}\n")),  # allocated first
    ("nrrd", nrrd(f"encoding: raw\ndata file: {OUTSIDE}")),
    ("nrrd", nrrd(f"encoding: raw\ndatafile: {MISSING}")),
    ("nrrd", nrrd("encoding: raw\nDATA FILE: LIST\nslice0.raw")),
    ("nrrd", nrrd("encoding: raw\nData File: slice%03d.raw 0 3 1 2")),
    ("nrrd", nrrd(f"encoding: raw\ndata file:= {OUTSIDE}")),
    ("nrrd", nrrd("encoding: raw", data=b"")[:-1]),  # no empty line: a detached header (.nhdr)
])
def test_a_header_naming_another_file_or_lying_is_refused_before_itk_sees_it(itk_never_reads, fmt, data):
    with pytest.raises(InputError) as refused:
        volume_from_file_bytes(fmt, data, LIMIT)
    message = str(refused.value)
    assert message.startswith("the uploaded "), message
    assert "No such file" not in message and "\n" not in message


def test_a_file_that_exists_and_one_that_does_not_get_the_same_answer(itk_never_reads):
    """No existence oracle: the refusal never depends on the named path."""
    answers = set()
    for path in (OUTSIDE, MISSING):
        with pytest.raises(InputError) as refused:
            volume_from_file_bytes("mha", metaimage(path), LIMIT)
        answers.add(str(refused.value).replace(path, "PATH"))
    assert len(answers) == 1


def nifti_header(magic: bytes, dims=(3, 4, 4, 4), bitpix: int = 8, code: int = 2) -> bytes:
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, *dims, *([1] * (8 - len(dims))))
    struct.pack_into("<2h", header, 70, code, bitpix)
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<3f", header, 76, 1.0, 1.0, 1.0)
    header[344:348] = magic
    return bytes(header)


def test_a_nifti_pair_header_is_refused(itk_never_reads):
    with pytest.raises(InputError, match="separate .img file"):
        volume_from_file_bytes("nii", nifti_header(b"ni1\0"), LIMIT)
    with pytest.raises(InputError, match="separate .img file"):
        volume_from_file_bytes("nii.gz", gzip.compress(nifti_header(b"ni1\0")), LIMIT)


def zeros_stream(header: bytes, count: int, wbits: int) -> bytes:
    """``header`` then ``count`` zero bytes, deflated (gzip for wbits 31, zlib for 15) chunk by chunk."""
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    parts = [packer.compress(header)]
    chunk = bytes(1 << 20)
    for _ in range(count >> 20):
        parts.append(packer.compress(chunk))
    return b"".join(parts) + packer.flush()


VOXELS = 512**3  # 128 MiB of uint8 zeros: a few hundred KiB compressed


@pytest.mark.parametrize("fmt, make", [
    ("nii.gz", lambda: zeros_stream(nifti_header(b"n+1\0", (3, 512, 512, 512)), VOXELS, 31)),
    ("mha", lambda: metaimage("LOCAL", dims="512 512 512", extra="CompressedData = True\n")[:-64]
     + zeros_stream(b"", VOXELS, 15)),
    ("nrrd", lambda: nrrd("encoding: gzip", data=zeros_stream(b"", VOXELS, 31)).replace(b"4 4 4", b"512 512 512")),
])
def test_a_compressed_upload_is_measured_by_what_it_decodes_to(itk_never_reads, fmt, make):
    data = make()
    assert len(data) < LIMIT  # it passes the limit as sent
    core = WorkerCore(0, lambda *a, **o: pytest.fail("no session may be made"), Limits(max_upload=LIMIT), {})
    header = {"volume": {"format": fmt, "length": len(data)}, "mask": None, "options": {}}
    refused = core.create(pack_frame(header, data, compress=False))
    assert isinstance(refused, Failure) and (refused.status, refused.code) == (413, "too_large")
    assert "decodes to 128.0 MiB" in refused.message and "limit of 4 MiB" in refused.message


@pytest.mark.parametrize("fmt", ["nii.gz", "nii", "mha", "nrrd"])
def test_self_contained_uploads_still_read(tmp_path, fmt):
    image, _ = sphere_phantom(size=(12, 10, 8))
    path = tmp_path / f"v.{fmt}"
    sitk.WriteImage(image, str(path), useCompression=fmt != "nii")
    read = volume_from_file_bytes(fmt, path.read_bytes(), LIMIT)
    assert np.array_equal(sitk.GetArrayViewFromImage(read), sitk.GetArrayViewFromImage(image))
    with pytest.raises(TooLargeError):
        volume_from_file_bytes(fmt, path.read_bytes(), 12 * 10 * 8 * 2 - 1)


# ---------------------------------------------------------------------------------------------- client mistakes
@pytest.mark.parametrize("options, words", [
    (5, "must be a JSON object"), (["history_limit"], "must be a JSON object"),
    ({"max_extend_steps": "abc"}, "max_extend_steps must be a whole number"),
    ({"max_extend_steps": None}, "max_extend_steps must be a whole number"),
    ({"history_limit": 0}, "history_limit must be a whole number"), ({"auto_extend": "yes"}, "true or false"),
])
def test_bad_session_options_get_400(tiny_model, options, words):
    image, _ = sphere_phantom(size=(24, 24, 24))
    header, body = unpack_frame(_upload(image, None, {}))
    core = WorkerCore(0, lambda im, **o: InteractiveSession(tiny_model, im, **o), Limits(), {})
    refused = core.create(pack_frame({**header, "options": options}, body))
    assert isinstance(refused, Failure) and refused.status == 400 and words in refused.message


def test_a_size_whose_voxel_count_wraps_around_gets_400():
    """2**32 x 2**32 x 1 voxels: numpy's product wraps to 0, which matched an empty body."""
    image, truth = sphere_phantom(size=(24, 24, 24))
    core = WorkerCore(0, lambda *a, **o: pytest.fail("no session may be made"), Limits(), {})
    volume, _ = raw_volume(image)
    huge = {**volume, "size": [2**32, 2**32, 1], "length": 0}
    refused = core.create(pack_frame({"volume": huge, "mask": None, "options": {}}, b""))
    assert isinstance(refused, Failure) and refused.status == 400 and "do not hold" in refused.message
    header, body = unpack_frame(_upload(image, truth, {}))
    header["mask"]["size"] = [2**32, 2**32, 1]
    refused = core.create(pack_frame(header, body))
    assert isinstance(refused, Failure) and refused.status == 413, refused


def test_a_click_beyond_float_range_is_an_input_error_locally(tiny_model):
    image, truth = sphere_phantom()
    session = InteractiveSession(tiny_model, image)
    with pytest.raises(InputError, match="three coordinates"):
        session.add_click([10**400, 0, 0])
    with pytest.raises(InputError, match="three coordinates"):
        session.focus([[0, 10**400, 0]])
    assert session.clicks == [] and not session.can_undo
    session.add_click(centre_ras(truth))  # and the session still works


# ---------------------------------------------------------------------------------------------- stderr
def test_concurrent_uploads_leave_standard_error_where_it_was(tmp_path):
    """The worker reads uploads on several threads; each read redirects fd 2 to hold back ITK's own lines."""
    image, _ = sphere_phantom(size=(16, 16, 16))
    sitk.WriteImage(image, str(tmp_path / "v.nrrd"))
    data = (tmp_path / "v.nrrd").read_bytes()
    before = os.fstat(2)
    errors = []

    def reader() -> None:
        try:
            for _ in range(6):
                volume_from_file_bytes("nrrd", data, LIMIT)
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    after = os.fstat(2)
    assert not errors
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)  # not one of the reads' held files


def test_the_command_line_still_reads_a_users_own_detached_header(tmp_path):
    """The rule is the server's: a local user names files they can read anyway (README: uploads)."""
    from SAMMed3DLib.cli.images import read_image

    image, _ = sphere_phantom(size=(12, 10, 8))
    sitk.WriteImage(image, str(tmp_path / "v.mhd"))  # v.mhd names v.raw (or .zraw) beside it
    assert "ElementDataFile = v." in (tmp_path / "v.mhd").read_text()
    read = read_image(tmp_path / "v.mhd")
    assert np.array_equal(sitk.GetArrayViewFromImage(read), sitk.GetArrayViewFromImage(image))


def test_a_nifti_is_measured_by_its_data_type_not_its_bits_per_voxel(itk_never_reads):
    """The reader sizes voxels by the data type: float64 with bitpix 8 decodes to 8 bytes a voxel."""
    header = nifti_header(b"n+1\0", (3, 128, 128, 128), bitpix=8, code=64)
    with pytest.raises(TooLargeError, match="decodes to 16.0 MiB"):
        volume_from_file_bytes("nii", header, 8 << 20)

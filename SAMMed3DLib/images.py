"""Files for the command line: reading volumes (any ITK-readable file or a DICOM series folder) and
writing outputs all or nothing.

SimpleITK's readers and writers (the NIfTI library in particular) print their own error lines to the
process's standard error besides raising; those are held back on failure, so the user sees one message.
The helpers redirect file descriptor 2 for the length of a call: meant for the command line, not for
use from several threads at once.
"""

import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Tuple, Union

import SimpleITK as sitk

from .errors import InputError

PathLike = Union["os.PathLike[str]", str]
STAGING_PREFIX = ".sammed3d-"
"""Name prefix of the hidden folders outputs are written into before they are moved into place."""


def read_image(path: PathLike) -> sitk.Image:
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
        with native_stderr_held():
            return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path} is not an image SimpleITK can read ({_first_line(exc)})") from exc


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
            return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"the DICOM series in {folder} cannot be read ({_first_line(exc)})") from exc


def write_image(image: sitk.Image, path: PathLike) -> None:
    """Write ``image`` to exactly ``path`` (compressed where the format allows; the folder must exist).

    InputError if it cannot be written. The command line writes through :class:`StagedOutputs` instead,
    so that a failure leaves nothing behind.
    """
    path = Path(path)
    try:
        with native_stderr_held():
            sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as exc:
        raise InputError(f"cannot write {path} ({_first_line(exc)})") from exc


def write_text(text: str, path: PathLike) -> None:
    """Write UTF-8 ``text`` to ``path``; InputError if it cannot be written."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def check_output_path(path: PathLike, option: str) -> Path:
    """``path`` as a Path if a new file can be created there, else InputError naming ``option`` (e.g. "--out").

    Checked before any work is done: the folder must exist (it is never created) and accept a new entry
    (probed by creating and removing an empty hidden folder), and ``path`` must not be a folder.
    """
    path = Path(path)
    folder = path.parent
    if path.name in ("", ".", ".."):
        raise InputError(f"{option} {path} is not a file name")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: the folder {folder} does not exist")
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write in {folder} ({exc.strerror or exc})") from exc
    return path


class StagedOutputs:
    """Output files written all or nothing.

    Each :meth:`stage` call writes one output (with whatever companion files its format has, e.g. the
    ``.zraw`` of an ``.mhd``) into a new hidden folder next to its destination. Leaving the ``with`` block
    normally moves every staged file into place; leaving it with an exception (or a failed move) deletes
    the staging folders, so no output and no temporary file is left behind. Files already in place are
    replaced only at that final move.
    """

    def __init__(self) -> None:
        self._staged: List[Tuple[Path, Path]] = []  # (destination, staging folder)

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def stage(self, path: PathLike, write: Callable[[Path], None]) -> None:
        """Call ``write(staged_path)``: it must write the output for ``path`` to ``staged_path`` (same name)."""
        path = Path(path)
        if any(path.resolve() == staged.resolve() for staged, _ in self._staged):
            raise InputError(f"{path} is given as two different outputs")
        folder = _staging_folder(path.parent)
        self._staged.append((path, folder))
        write(folder / path.name)

    def commit(self) -> None:
        """Move the staged files into place (replacing existing ones) and remove the staging folders."""
        try:
            for path, folder in self._staged:
                for staged in sorted(folder.iterdir()):
                    os.replace(staged, path.parent / staged.name)
                folder.rmdir()
        except OSError as exc:
            raise InputError(f"cannot move the outputs into place: {exc}") from exc
        finally:
            self.discard()

    def discard(self) -> None:
        """Delete whatever is still staged."""
        for _, folder in self._staged:
            shutil.rmtree(folder, ignore_errors=True)
        self._staged.clear()


def _staging_folder(folder: Path) -> Path:
    """A new, empty hidden folder inside ``folder`` (InputError if none can be made there)."""
    try:
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as exc:
        raise InputError(f"cannot write in {folder} ({exc.strerror or exc})") from exc


@contextmanager
def native_stderr_held() -> Iterator[None]:
    """Hold back what native code (ITK, the NIfTI and GDCM libraries) prints to file descriptor 2 in the block.

    When the block succeeds the held text is passed on to ``sys.stderr`` (warnings stay visible); when it
    raises, the text is dropped, since the exception's own message says what went wrong, once.
    """
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
    if text:
        sys.stderr.write(text)


_ITK_PREFIX = re.compile(r"^(?:ITK ERROR: \w+\(0x[0-9a-fA-F]+\): |sitk::ERROR: )(?:ERROR: )?")
_ITK_NOISE = re.compile(r"^Exception thrown in SimpleITK|\.(?:cxx|h|hxx|cpp):\d+:?$")


def _first_line(exc: Exception) -> str:
    """What a SimpleITK exception says, on one line, without ITK's source locations and object addresses."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [_ITK_PREFIX.sub("", line) for line in lines if not _ITK_NOISE.search(line)]
    return (" ".join(telling) or "unknown error")[:300]

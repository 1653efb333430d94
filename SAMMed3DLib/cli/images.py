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
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Dict, Iterator, List, NamedTuple, Tuple, Union

import SimpleITK as sitk

from ..errors import InputError

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


def check_distinct_outputs(outputs: Dict[str, Path]) -> None:
    """InputError if two of ``outputs`` (option, e.g. "--out", → path) name the same file.

    Checked with the paths given, before any work is done.
    """
    options = list(outputs)
    for i, first in enumerate(options):
        for second in options[i + 1 :]:
            if _same_file(outputs[first], outputs[second]):
                raise InputError(f"{first} and {second} name the same file: {outputs[second]}")


def _same_file(first: Path, second: Path) -> bool:
    """Whether ``first`` and ``second`` are one file (the same path once resolved, or one existing file)."""
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # either does not exist yet
        return False


class StagedOutputs:
    """Output files written all or nothing.

    Each :meth:`stage` call writes one output (with whatever companion files its format has, e.g. the
    ``.zraw`` of an ``.mhd``) into a new hidden folder next to its destination. Leaving the ``with`` block
    normally moves every staged file into place; leaving it with an exception (or a failed move) deletes
    the staging folders, so no output and no temporary file is left behind. Files already in place are
    replaced only at that final move, which is itself all or nothing: the old files are first set aside
    (inside the staging folder, so on the same file system), and put back if any new file cannot be moved in.
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
        """Call ``write(staged_path)``: it must write the output for ``path`` to ``staged_path`` (same name).

        An error from ``write`` comes back as one InputError naming ``path``, never the staging folder.
        """
        path = Path(path)
        if any(_same_file(path, earlier) for earlier, _ in self._staged):
            raise InputError(f"{path} is given as two different outputs")
        folder = _staging_folder(path.parent)
        self._staged.append((path, folder))
        staged = folder / path.name
        try:
            write(staged)
        except InputError as exc:
            raise InputError(_unstaged(str(exc), staged, path)) from exc
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def commit(self) -> None:
        """Move the staged files into place, replacing existing ones, all or nothing; remove the staging folders.

        On failure every file already in place is as it was before, and InputError says why.
        """
        try:
            _move_into_place(self._planned_moves())
        except _CommitError as exc:  # originals that could not be put back: their staging folders are kept
            self._staged = [(path, folder) for path, folder in self._staged if folder not in exc.kept]
            raise
        finally:
            self.discard()

    def discard(self) -> None:
        """Delete whatever is still staged."""
        for _, folder in self._staged:
            shutil.rmtree(folder, ignore_errors=True)
        self._staged.clear()

    def _planned_moves(self) -> List["_Move"]:
        """One move per staged file, each with a free place in its staging folder to set the old file aside."""
        moves: List[_Move] = []
        for path, folder in self._staged:
            files = sorted(folder.iterdir())
            try:
                aside = Path(tempfile.mkdtemp(prefix=".previous-", dir=folder))
            except OSError as exc:
                raise InputError(f"cannot move {path} into place ({exc.strerror or exc})") from exc
            moves.extend(_Move(staged, path.parent / staged.name, aside / staged.name, folder) for staged in files)
        destinations = [move.destination for move in moves]
        for i, destination in enumerate(destinations):
            if any(_same_file(destination, other) for other in destinations[:i]):
                raise InputError(f"{destination} would be written by two different outputs")
        return moves


class _Move(NamedTuple):
    staged: Path  # the new file, in its staging folder
    destination: Path  # where it goes
    aside: Path  # where the file already at ``destination`` waits until all new files are in place
    folder: Path  # the staging folder


def _move_into_place(moves: List[_Move]) -> None:
    """Set aside the files at the destinations, then move the new ones in; on failure undo both and raise InputError.

    When an original cannot be put back the error is a :class:`_CommitError` naming where it was left.
    """
    set_aside: List[_Move] = []
    moved_in: List[_Move] = []
    for step, move in [("aside", m) for m in moves] + [("in", m) for m in moves]:
        try:
            if step == "in":
                os.replace(move.staged, move.destination)
                moved_in.append(move)
            elif os.path.lexists(move.destination) and not _is_real_folder(move.destination):
                os.replace(move.destination, move.aside)
                set_aside.append(move)
        except OSError as exc:
            lost = _roll_back(moved_in, set_aside)
            reason = f"cannot move {move.destination} into place ({exc.strerror or exc})"
            if lost:
                kept = ", ".join(f"{m.destination} is left as {m.aside}" for m in lost)
                raise _CommitError(f"{reason}; the previous files could not all be put back: {kept}", lost) from exc
            raise InputError(f"{reason}; no file was changed") from exc


def _is_real_folder(path: Path) -> bool:
    """A folder, not a link to one: never set aside (moving a file onto it fails, and the commit is undone)."""
    return path.is_dir() and not path.is_symlink()


class _CommitError(InputError):
    """A failed commit that could not put every original back; ``kept`` are the staging folders holding them."""

    def __init__(self, message: str, lost: List[_Move]) -> None:
        super().__init__(message)
        self.kept = [move.folder for move in lost]


def _roll_back(moved_in: List[_Move], set_aside: List[_Move]) -> List[_Move]:
    """Remove the new files moved in and put the set-aside originals back; the moves whose original stays aside."""
    for move in moved_in:
        with suppress(OSError):  # replaced below if it had an original; else nothing more can be done
            os.unlink(move.destination)
    lost = []
    for move in reversed(set_aside):
        try:
            os.replace(move.aside, move.destination)
        except OSError:
            lost.append(move)
    return lost


def _unstaged(message: str, staged: Path, path: Path) -> str:
    """``message`` (about writing ``staged``) with the staging folder's paths replaced by the user's ``path``."""
    folder = staged.parent
    for hidden, shown in ((staged, path), (folder, path.parent)):
        for form in sorted({str(hidden.resolve()), str(hidden.absolute()), str(hidden)}, key=len, reverse=True):
            message = message.replace(form, str(shown))
    if STAGING_PREFIX in message or folder.name in message:  # in a form not foreseen: say no more than this
        return f"cannot write {path}"
    return message


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

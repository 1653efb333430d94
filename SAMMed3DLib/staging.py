"""Files written all or nothing: never onto an input, never half-written, never lost to a crash.

The commit, for the outputs of one command (or one save of the worklist's case files):

1. every output is written into a new hidden staging folder (``.sammed3d-XXXX``) next to its destination,
   which its process keeps locked (``flock``) while it lives, and verified there (the writers check the
   bytes on disk: a full disk or a file-size limit is an error, not a short file);
2. for every destination that exists, a hard link (or, where links fail, a copy) is kept in the staging
   folder as ``previous/NAME``: the destination itself never moves, so it is never missing;
3. a journal (``commit.json``, fsynced) listing every move is written into each staging folder: from now
   on the commit is decided;
4. each staged file replaces its destination with one atomic ``os.replace``;
5. the staging folders are removed.

A failure in 4 (a permission, say) puts the kept previous files back and removes the new ones. A run
killed before 3 leaves staging folders without a journal: the next run writing into that folder removes
them (once their lock is free, i.e. their process has ended). A run killed in 4 or 5 leaves a journal:
the next run completes its moves, then removes the folder. (Outputs in two folders killed exactly between
writing their two journals are the one case left half done.)
"""

import json
import os
import shutil
import stat
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Callable, Iterable, List, NamedTuple, Optional, Tuple, Union

from .errors import InputError

try:
    import fcntl
except ImportError:  # Windows: staging folders are recognised as abandoned by age instead
    fcntl = None

PathLike = Union["os.PathLike[str]", str]
STAGING_PREFIX = ".sammed3d-"
"""Name prefix of the hidden folders outputs are written into before they are moved into place."""
JOURNAL = "commit.json"
LOCK = "lock"
NEW = "new"
PREVIOUS = "previous"
ABANDONED_AFTER_S = 600.0
"""Age at which a staging folder that cannot be locked-tested (no lock file, or no flock) counts as abandoned."""

commit_step_hook: Optional[Callable[[str], None]] = None
"""Called with the name of each commit step as it completes; tests stop the process there to check recovery."""


def is_special(path: Path) -> bool:
    """An existing entry that is not a regular file, folder or link (replacing ``/dev/null`` as root would be bad)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def is_read_only(path: Path) -> bool:
    """An existing file without any write permission bit, or one this process may not write (root ignores bits)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return mode & 0o222 == 0 or not os.access(path, os.W_OK)


def overwrites(output: Path, source: Path) -> bool:
    if source.is_dir():
        return output.exists() and same_file(output.parent, source)
    return same_file(output, source)


def same_file(first: Path, second: Path) -> bool:
    """Whether ``first`` and ``second`` are one file (the same path once resolved, or one existing file)."""
    if Path(first).resolve() == Path(second).resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # either does not exist yet
        return False


class _Move(NamedTuple):
    staged: Path  # the new file, in its staging folder
    destination: Path  # where it goes
    previous: Optional[Path]  # a link to (or copy of) the file at ``destination`` before the commit, if any
    folder: Path  # the staging folder


class _CommitError(InputError):
    """A failed commit that could not put every previous file back; ``kept`` are the staging folders holding them."""

    def __init__(self, message: str, kept: List[Path]) -> None:
        super().__init__(message)
        self.kept = kept


class StagedOutputs:
    """Output files written all or nothing (the module docstring gives the protocol).

    ``protected`` are input files: no output, companion files included, may replace one of them.
    """

    def __init__(self, protected: Iterable[PathLike] = ()) -> None:
        self._staged: List[Tuple[Path, Path]] = []  # (destination, staging folder)
        self._locks: List[int] = []
        self._protected = [Path(p) for p in protected]

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def stage(self, path: PathLike, write: Callable[[Path], None]) -> None:
        """Call ``write(staged_path)``: it must write (and verify) the output for ``path`` at ``staged_path``.

        An error from ``write`` comes back as one InputError naming ``path``, never the staging folder.
        """
        path = Path(path)
        if any(same_file(path, earlier) for earlier, _ in self._staged):
            raise InputError(f"{path} is given as two different outputs")
        folder, lock = _staging_folder(path.parent)
        self._staged.append((path, folder))
        self._locks.append(lock)
        staged = folder / NEW / path.name
        staged.parent.mkdir()
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
        decided = False
        try:
            moves = self._planned_moves()
            _step("planned")
            folders = [folder for _, folder in self._staged]
            _write_journals(moves, folders)
            decided = True
            _step("journal")
            _move_into_place(moves, folders)
            _step("moved")
        except _CommitError as exc:  # previous files that could not be put back: their staging folders stay
            self._staged = [(path, folder) for path, folder in self._staged if folder not in exc.kept]
            raise
        except InputError:
            raise
        except BaseException:  # interrupted (Ctrl-C): once decided, finish now, or leave it to the next run
            if decided:
                journal = self._journal()
                self._staged.clear()
                with suppress(InputError, OSError):
                    _roll_forward(journal)
            raise
        finally:
            self.discard()

    def discard(self) -> None:
        """Delete whatever is still staged and release the locks."""
        for _, folder in self._staged:
            shutil.rmtree(folder, ignore_errors=True)
        self._staged.clear()
        for lock in self._locks:
            os.close(lock)
        self._locks.clear()

    def _journal(self) -> Path:
        return self._staged[0][1] / JOURNAL

    def _planned_moves(self) -> List[_Move]:
        """One move per staged file, with the previous file at its destination kept in its staging folder."""
        moves: List[_Move] = []
        for path, folder in self._staged:
            for staged in sorted(p for p in (folder / NEW).iterdir() if p.is_file()):
                destination = path.parent / staged.name
                self._check_destination(destination, path)
                moves.append(_Move(staged, destination, _keep_previous(destination, folder), folder))
        destinations = [move.destination for move in moves]
        for i, destination in enumerate(destinations):
            if any(same_file(destination, other) for other in destinations[:i]):
                raise InputError(f"{destination} would be written by two different outputs")
        return moves

    def _check_destination(self, destination: Path, output: Path) -> None:
        for source in self._protected:
            if overwrites(destination, source):
                raise InputError(f"writing {output} would replace the input {source}; nothing was written")
        if is_special(destination):
            raise InputError(f"{destination} is not a regular file; it is not replaced")
        if is_read_only(destination):
            raise InputError(f"{destination} is read-only; it is not replaced")
        if destination.is_dir() and not destination.is_symlink():
            raise InputError(f"cannot move {output} into place: {destination} is a folder; no file was changed")


def _step(name: str) -> None:
    if commit_step_hook is not None:
        commit_step_hook(name)


def _keep_previous(destination: Path, folder: Path) -> Optional[Path]:
    """A hard link to (or a copy of) the file at ``destination`` inside ``folder``; None if there is none."""
    if not os.path.lexists(destination):
        return None
    keep = folder / PREVIOUS / destination.name
    keep.parent.mkdir(exist_ok=True)
    try:
        try:
            os.link(destination, keep, follow_symlinks=False)
        except OSError:  # a file system without hard links
            shutil.copy2(destination, keep, follow_symlinks=False)
    except OSError as exc:
        raise InputError(f"cannot replace {destination} safely ({exc.strerror or exc}); no file was changed") from exc
    return keep


def _write_journals(moves: List[_Move], folders: List[Path]) -> None:
    """Record every move in every staging folder (fsynced): the commit is decided once this returns."""
    entries = [[str(m.staged), str(m.destination), str(m.previous) if m.previous else None] for m in moves]
    text = json.dumps({"moves": entries, "folders": [str(f) for f in folders]})
    for folder in dict.fromkeys(folders):
        try:
            _write_synced(folder / JOURNAL, text.encode("utf-8"))
        except OSError as exc:
            raise InputError(f"cannot write in {folder.parent} ({exc.strerror or exc}); no file was changed") from exc


def _write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to a new temporary name, fsync it, then rename it to ``path``: never a partial file."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(partial, path)


def _move_into_place(moves: List[_Move], folders: List[Path]) -> None:
    """Replace each destination with its staged file; on failure undo the moves done and raise InputError.

    The journals are removed before undoing, so that a crash while undoing is not completed later.
    """
    done: List[_Move] = []
    for move in moves:
        try:
            os.replace(move.staged, move.destination)
        except OSError as exc:
            for folder in folders:
                with suppress(OSError):
                    os.unlink(folder / JOURNAL)
            kept = _roll_back(done)
            reason = f"cannot move {move.destination} into place ({exc.strerror or exc})"
            if kept:
                where = ", ".join(f"{m.destination} is kept as {m.previous}" for m in kept)
                message = f"{reason}; the previous files could not all be put back: {where}"
                raise _CommitError(message, [m.folder for m in kept]) from exc
            raise InputError(f"{reason}; no file was changed") from exc
        done.append(move)
        _step(f"replaced {move.destination.name}")


def _roll_back(done: List[_Move]) -> List[_Move]:
    """Put back the previous files of the moves done (or remove new files); the moves whose previous file stays."""
    kept = []
    for move in reversed(done):
        try:
            if move.previous is None:
                os.unlink(move.destination)
            else:
                os.replace(move.previous, move.destination)
        except OSError:
            kept.append(move)
    return kept


def recover_staging(folder: Path) -> None:
    """Finish or clean up what killed runs left in ``folder``: complete decided commits, drop undecided ones.

    Prints one note per recovered folder to standard error. Folders still locked by a running process are
    left alone.
    """
    for staging in sorted(Path(folder).glob(STAGING_PREFIX + "*")):
        if not staging.is_dir() or staging.is_symlink() or not _abandoned(staging):
            continue
        journal = staging / JOURNAL
        if journal.is_file():
            _roll_forward(journal)
        else:
            _restore_lost_previous(staging)
            shutil.rmtree(staging, ignore_errors=True)


def _abandoned(staging: Path) -> bool:
    """No live process holds the staging folder's lock (or, without locks, it is older than ABANDONED_AFTER_S)."""
    lock = staging / LOCK
    if fcntl is None or not lock.is_file():
        try:
            return time.time() - staging.stat().st_mtime > ABANDONED_AFTER_S
        except OSError:
            return False
    try:
        handle = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(handle)


def _roll_forward(journal: Path) -> None:
    """Complete the moves a killed run had decided on, then remove its staging folders."""
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
        moves = [(Path(staged), Path(destination)) for staged, destination, _ in record["moves"]]
        folders = [Path(f) for f in record["folders"]]
    except (OSError, ValueError, KeyError, TypeError):
        return  # unreadable: leave it for a person rather than guess
    for staged, destination in moves:
        if staged.is_file():
            try:
                os.replace(staged, destination)
            except OSError as exc:
                raise InputError(
                    f"an earlier run was killed while writing {destination}; its new file is {staged} and cannot "
                    f"be moved into place ({exc.strerror or exc})"
                ) from exc
            print(f"note: completed the interrupted write of {destination}", file=sys.stderr)
    for staging in folders:
        shutil.rmtree(staging, ignore_errors=True)


def _restore_lost_previous(staging: Path) -> None:
    """Put back previous files whose destination is missing (left by earlier versions that moved them aside)."""
    for kept in staging.glob("*/*"):
        destination = staging.parent / kept.name
        keeper = kept.parent.name == PREVIOUS or kept.parent.name.startswith(".previous-")
        if keeper and kept.is_file() and not os.path.lexists(destination):
            os.replace(kept, destination)
            print(f"note: restored {destination}, left aside by an interrupted earlier run", file=sys.stderr)


def _staging_folder(folder: Path) -> Tuple[Path, int]:
    """A new, empty hidden folder inside ``folder`` and the descriptor of its held lock (InputError if impossible)."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
        handle = os.open(staging / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise InputError(f"cannot write in {folder} ({exc.strerror or exc})") from exc
    if fcntl is not None:
        with suppress(OSError):  # a file system without locks: other runs fall back to the folder's age
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return staging, handle


def _unstaged(message: str, staged: Path, path: Path) -> str:
    """``message`` (about writing ``staged``) with the staging folder's paths replaced by the user's ``path``."""
    folder = staged.parent.parent
    for hidden, shown in ((staged, path), (staged.parent, path.parent), (folder, path.parent)):
        for form in sorted({str(hidden.resolve()), str(hidden.absolute()), str(hidden)}, key=len, reverse=True):
            message = message.replace(form, str(shown))
    if STAGING_PREFIX in message or folder.name in message:  # in a form not foreseen: say no more than this
        return f"cannot write {path}"
    return message


def write_text(text: str, path: PathLike) -> None:
    """Write UTF-8 ``text`` to ``path`` and check its size on disk; InputError if it cannot be written."""
    data = text.encode("utf-8")
    try:
        with open(path, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        size = os.path.getsize(path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if size != len(data):
        raise InputError(f"cannot write {path}: {size} of {len(data)} bytes reached the disk")

"""The annotators' worklist: the cases of one data folder, what state each is in, and who has which one open.

Shared by the Slicer module's *Cases* section and the web app (each over :class:`~SAMMed3DLib.slicer.cases.CaseDesk`).
Everything lives in the data folder, so a restart (or a colleague on another machine with the folder mounted)
resumes where the team stopped::

    FOLDER/NAME.nii.gz               the image of case NAME (also .nii, .nrrd, .mha, .mhd; or FOLDER/NAME/, a
                                     folder holding one DICOM series)
    FOLDER/NAME.seg.nrrd             its segmentation (Slicer's format; picked up when present, written by Save)
    FOLDER/NAME.prompts.mrk.json     each segment's clicks (:mod:`SAMMed3DLib.prompts`, written by Save)
    FOLDER/.worklist/NAME.json       its state record: {"state", "by", "at", "segments", "clicks"}
    FOLDER/.worklist/NAME.lock       who has it open: {"owner", "token", "host", "pid"}; its modification time
                                     is the holder's heartbeat

States: *to do* (no record), *in progress* (saved, not finished), *done* (saved with *Save & next* or
:meth:`CaseDesk.save` ``done=True``). A case is *busy* while another session holds its lock; a lock whose
heartbeat is older than :data:`STALE_AFTER_S` (a crashed session, a closed laptop) no longer counts, and the
next claim takes it over; on the holder's own machine a lock whose process has ended is free at once. (Machines
sharing a folder compare file times: their clocks must agree to within seconds, as NTP keeps them.)

Case names come from the folder's own file names; a name a client sends is only ever looked up among them
(:meth:`Worklist.case`), so no request names a path outside the folder.
"""

import contextlib
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from .errors import InputError
from .staging import is_read_only, recover_staging

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
SEGMENTATION_SUFFIX = ".seg.nrrd"
PROMPTS_SUFFIX = ".prompts.mrk.json"
RECORDS = ".worklist"
"""Hidden folder of the data folder holding the state records and the locks."""
TO_DO, IN_PROGRESS, DONE = "to do", "in progress", "done"
STATES = (TO_DO, IN_PROGRESS, DONE)
STALE_AFTER_S = 120.0
"""A lock whose heartbeat is older than this (seconds) no longer holds its case."""
HEARTBEAT_S = 30.0
"""How often (seconds) a GUI calls :meth:`CaseLock.heartbeat` while a case is open."""
NAME = re.compile(r"^[^./\\\x00-\x1f][^/\\\x00-\x1f]{0,199}$")
"""Case names the worklist accepts: a plain file name (no separators or control characters, not hidden)."""

PathLike = Union["os.PathLike[str]", str]


@dataclass(frozen=True)
class Case:
    """One case as last scanned. ``image`` is a file or a DICOM series folder; ``segmentation`` and ``prompts``
    are where Save writes (they may not exist yet); ``holder`` names who has it open ("" if nobody or us)."""

    name: str
    image: Path
    segmentation: Path
    prompts: Path
    state: str = TO_DO
    busy: bool = False
    holder: str = ""
    segments: int = 0
    clicks: int = 0
    saved_by: str = ""
    saved_at: float = 0.0  # seconds since the epoch

    @property
    def has_segmentation(self) -> bool:
        return self.segmentation.is_file()

    def summary(self) -> Dict[str, object]:
        """The case as plain JSON values (what a web page or a list widget shows)."""
        return {"name": self.name, "state": self.state, "busy": self.busy, "holder": self.holder,
                "segments": self.segments, "clicks": self.clicks, "saved_by": self.saved_by,
                "saved_at": self.saved_at}  # fmt: skip


class Worklist:
    """The cases of ``folder`` for one session (``owner``: the annotator's name, shown to the others).

    Each call rescans the folder (cheap: names, small JSON records, NRRD headers of unrecorded segmentations),
    so the list always shows what the team did meanwhile. Each Worklist object is one session: two objects
    with the same owner (two browser tabs) see each other's cases as busy.
    """

    def __init__(self, folder: PathLike, owner: str, stale_after_s: float = STALE_AFTER_S) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder} is not a folder")
        if is_read_only(self.folder):  # no write permission bit, or none for this process
            raise InputError(f"{self.folder} is read-only: the worklist saves segmentations beside the images")
        self.recover()
        owner = " ".join("".join(c for c in str(owner) if c.isprintable() or c.isspace()).split())[:80]
        self.owner = owner or "someone"
        self.token = uuid.uuid4().hex  # this session's identity in the locks it takes
        self.stale_after_s = float(stale_after_s)

    def recover(self) -> None:
        """Finish (or drop) the saves a killed session left half done in the folder (see :mod:`.staging`)."""
        for folder in (self.folder, self.folder / RECORDS):
            if folder.is_dir():
                recover_staging(folder)

    # --- the cases ------------------------------------------------------------------------------------------

    def cases(self) -> List[Case]:
        """Every case of the folder, by name."""
        return [self._case(name, image) for name, image in sorted(self._images().items())]

    def case(self, name: str) -> Case:
        """The case called ``name``; InputError for a name that is not one of the folder's cases."""
        image = self._images().get(check_case_name(name)) if isinstance(name, str) else None
        if image is None:
            raise InputError(f"there is no case {_shown(name)} in {self.folder}")
        return self._case(name, image)

    def next_to_do(self, after: Optional[str] = None) -> Optional[Case]:
        """The first case to do that nobody has open, looking after the case ``after`` first (then from the
        top); None when every case is done, in progress or busy."""
        cases = self.cases()
        start = next((i + 1 for i, c in enumerate(cases) if c.name == after), 0)
        for case in cases[start:] + cases[:start]:
            if case.state == TO_DO and not case.busy:
                return case
        return None

    def _images(self) -> Dict[str, Path]:
        images: Dict[str, Path] = {}
        try:
            entries = sorted(self.folder.iterdir())
        except OSError as exc:
            raise InputError(f"cannot read {self.folder} ({exc.strerror or exc})") from exc
        for path in entries:
            name = image_case_name(path)
            if name is not None and NAME.match(name) and name not in images:
                images[name] = path
        return images

    def _case(self, name: str, image: Path) -> Case:
        record = self._record(name)
        segmentation = self.folder / f"{name}{SEGMENTATION_SUFFIX}"
        segments = record.get("segments")
        if not isinstance(segments, int):
            segments = nrrd_segment_count(segmentation)
        clicks = record.get("clicks") if isinstance(record.get("clicks"), int) else 0
        state = record.get("state") if record.get("state") in STATES else TO_DO
        holder = self._holder(name)
        return Case(name, image, segmentation, self.folder / f"{name}{PROMPTS_SUFFIX}", state, holder is not None,
                    holder or "", segments, clicks, str(record.get("by", "")), _number(record.get("at")))  # fmt: skip

    # --- state records --------------------------------------------------------------------------------------

    def record_path(self, name: str) -> Path:
        """Where the state record of case ``name`` lives (its folder is made when missing)."""
        folder = self.folder / RECORDS
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot write in {self.folder} ({exc.strerror or exc})") from exc
        return folder / f"{check_case_name(name)}.json"

    def record_text(self, state: str, segments: int, clicks: int) -> str:
        """The JSON text of a state record written now by this session's owner."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        record = {"state": state, "by": self.owner, "at": time.time(), "segments": segments, "clicks": clicks}
        return json.dumps(record, indent=2)

    def _record(self, name: str) -> dict:
        try:
            record = json.loads((self.folder / RECORDS / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # none yet (to do), or unreadable: the case shows as to do rather than break the list
        return record if isinstance(record, dict) else {}

    # --- locks ----------------------------------------------------------------------------------------------

    def claim(self, name: str) -> "CaseLock":
        """Take case ``name`` for this session: a lock the others see as busy. InputError if someone else holds
        it (their name in the message). Claiming a case this session already holds returns a fresh handle."""
        case = self.case(name)
        path = self.record_path(case.name).with_suffix(".lock")
        content = json.dumps({"owner": self.owner, "token": self.token, "host": socket.gethostname(),
                              "pid": os.getpid()})  # fmt: skip
        for _ in range(3):
            if _create_exclusive(path, content):
                return CaseLock(self, case.name, path)
            holder = self._lock_holder(path)
            if holder is not None:
                if holder.get("token") == self.token:
                    return CaseLock(self, case.name, path)
                raise InputError(f"{case.name} is open by {holder.get('owner') or 'someone else'}")
            _remove_stale(path, self)
        raise InputError(f"{case.name} could not be claimed (others are claiming it too); try again")

    def _holder(self, name: str) -> Optional[str]:
        """The owner holding case ``name`` for another session, None if free or ours."""
        holder = self._lock_holder(self.folder / RECORDS / f"{name}.lock")
        if holder is None or holder.get("token") == self.token:
            return None
        return str(holder.get("owner") or "someone else")

    def _lock_holder(self, path: Path) -> Optional[dict]:
        """The live lock's content at ``path``; None when there is none or it went stale."""
        holder, age = _read_lock(path)
        if age is None or age > self.stale_after_s or _process_ended(holder):
            return None
        return holder


class CaseLock:
    """This session's hold on one case (from :meth:`Worklist.claim`): keep it alive with :meth:`heartbeat`
    (every :data:`HEARTBEAT_S`), give it back with :meth:`release`."""

    def __init__(self, worklist: Worklist, name: str, path: Path) -> None:
        self.worklist, self.name, self.path = worklist, name, path

    @property
    def held(self) -> bool:
        """The lock on disk is still this session's (not released, not taken over by another session)."""
        return _read_lock(self.path)[0].get("token") == self.worklist.token

    def heartbeat(self) -> bool:
        """Tell the others this session is alive; False if the lock was lost (another session took the case
        over after this one went quiet for longer than the stale time)."""
        if not self.held:
            return False
        try:
            os.utime(self.path)
        except OSError:
            return False
        return True

    def ensure(self) -> None:
        """Make sure this session holds the case before writing it: take the lock again if it lapsed and nobody
        took it; InputError if somebody else has it now."""
        if not self.heartbeat():
            self.worklist.claim(self.name)

    def release(self) -> None:
        """Give the case back (nothing happens if the lock is no longer ours)."""
        if self.held:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def __enter__(self) -> "CaseLock":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def case_line(case: Case) -> str:
    """One line for a list of cases: "liver_01 — in progress · 2 segments · 14 clicks · open by ana"."""
    parts = [case.state]
    if case.segments:
        parts.append(f"{case.segments} segment{'s' if case.segments != 1 else ''}")
    if case.clicks:
        parts.append(f"{case.clicks} click{'s' if case.clicks != 1 else ''}")
    if case.busy:
        parts.append(f"open by {case.holder}")
    return f"{case.name} \u2014 " + " \u00b7 ".join(parts)


def counts_line(cases: List[Case]) -> str:
    """One line summing up the cases: "12 cases: 7 to do, 2 in progress, 3 done (1 open elsewhere)"."""
    counts = {state: sum(c.state == state for c in cases) for state in STATES}
    busy = sum(c.busy for c in cases)
    line = f"{len(cases)} case{'s' if len(cases) != 1 else ''}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    return line + (f" ({busy} open elsewhere)" if busy else "")


def check_case_name(name: str) -> str:
    """``name`` if it is a plain case name (see :data:`NAME`); InputError otherwise."""
    if not isinstance(name, str) or not NAME.match(name):
        raise InputError(f"{_shown(name)} is not a case name")
    return name


def image_case_name(path: Path) -> Optional[str]:
    """The case name of an image in the data folder (``liver_01.nii.gz`` → ``liver_01``; a DICOM series
    folder → its name); None for segmentations, prompts, hidden entries and other files."""
    lower = path.name.lower()
    if lower.startswith(".") or lower.endswith(SEGMENTATION_SUFFIX):
        return None
    if path.is_dir():
        return path.name if is_dicom_folder(path) else None
    suffix = next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), None)
    return path.name[: -len(suffix)] if suffix and path.is_file() else None


def is_dicom_folder(folder: Path) -> bool:
    """Whether ``folder``'s first file (by name) is DICOM (the "DICM" mark after the 128-byte preamble)."""
    try:
        first = next((p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")), None)
        if first is None:
            return False
        with open(first, "rb") as stream:
            return stream.read(132)[128:] == b"DICM"
    except OSError:
        return False


def nrrd_segment_count(path: Path) -> int:
    """Segments named in a ``.seg.nrrd`` header (0 when there is no such file or it cannot be read)."""
    try:
        with open(path, "rb") as stream:
            header = stream.read(1 << 16).split(b"\n\n", 1)[0]
    except OSError:
        return 0
    return len(re.findall(rb"^Segment\d+_ID:=", header, flags=re.MULTILINE))


def _shown(name: object) -> str:
    """A name a client sent, for a message: quoted, at most 80 characters."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _read_lock(path: Path) -> Tuple[dict, Optional[float]]:
    """(content, seconds since its last heartbeat) of the lock at ``path``; ({}, None) when there is none. A lock
    being written right now (or damaged) reads as {} with its age: live while young."""
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}, None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = {}
    return (holder if isinstance(holder, dict) else {}), age


def _create_exclusive(path: Path, content: str) -> bool:
    """Create ``path`` holding ``content`` unless it exists (atomic: one of several racing creators wins)."""
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        raise InputError(f"cannot write in {path.parent} ({exc.strerror or exc})") from exc
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(content)
        stream.flush()
        os.fsync(stream.fileno())
    return True


def _remove_stale(path: Path, worklist: Worklist) -> None:
    """Remove a stale lock so that a claim can take it: moved aside first (atomic, so that of two sessions
    taking it over only one removes it), then checked again in case its holder came back meanwhile."""
    aside = path.with_name(f"{path.name}.{worklist.token}.stale")
    try:
        os.replace(path, aside)
    except OSError:
        return  # another session moved it first
    if worklist._lock_holder(aside) is not None:  # its holder's heartbeat arrived just now: give it back
        with contextlib.suppress(OSError):
            os.link(aside, path)
    with contextlib.suppress(OSError):
        os.unlink(aside)


def _process_ended(holder: dict) -> bool:
    """The lock was taken on this machine by a process that no longer runs (a crashed Slicer or web app)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False

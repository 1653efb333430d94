"""Running one job per case of a dataset: a few at a time, each output written atomically, finished cases
skipped on a re-run, a failing case reported without stopping the others, and a summary table.

Used by ``segment-dataset`` and ``evaluate --dataset``: with ``--server`` the cases go to a SAM-Med3D server,
whose gateway spreads the sessions over its Ray workers (least-loaded first).
"""

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

from ..errors import InputError, SAMMed3DError
from ..wording import count
from ..worklist import IMAGE_SUFFIXES, image_case_name

FILES = threading.Lock()
"""Image reading/writing holds the process's native stderr: one at a time across the batch's threads."""


@dataclass(frozen=True)
class Case:
    """One dataset case: its name (the image file name without suffix), its files, and where its output goes."""

    name: str
    image: Path
    inputs: Dict[str, Path]
    output: Path


@dataclass(frozen=True)
class Outcome:
    case: str
    status: str  # "done", "skipped" or "failed"
    seconds: float = 0.0
    detail: str = ""


def image_cases(folder: Path) -> Dict[str, Path]:
    """Case name → image of every image in ``folder`` (InputError if none or two share a name): the files and
    DICOM series folders the worklist counts as cases (:func:`~SAMMed3DLib.worklist.image_case_name`)."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    cases: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = image_case_name(path)
        if name is None:
            continue
        if name in cases:
            raise InputError(f"two images in {folder} have the case name {name!r}: {cases[name].name}, {path.name}")
        cases[name] = path
    if not cases:
        raise InputError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}, or DICOM series folders)")
    return cases


def write_staged(path: Path, write: Callable[[Path], None], protected: Iterable[Path] = ()) -> None:
    """``write`` one output through the command line's staged outputs: verified on disk, moved into place all or
    nothing, and never onto one of the ``protected`` input files."""
    from .outputs import StagedOutputs

    with StagedOutputs(protected=protected) as staged:
        staged.stage(path, write)


def write_case_output(case: Case, write: Callable[[Path], None]) -> None:
    """``write`` the case's output, never onto one of the case's own inputs (``--out`` may be the images folder)."""
    write_staged(case.output, write, protected=[case.image, *case.inputs.values()])


def run_cases(cases: Sequence[Case], job: Callable[[Case], str], jobs: int, *, redo: bool = False,
              progress=None) -> List[Outcome]:
    """``job(case)`` (returns a short detail) for every case whose output is missing (all with ``redo``),
    ``jobs`` at a time; every case gets an Outcome, in the order given. A line per finished case goes to
    ``progress`` (default: standard error)."""
    progress = progress or sys.stderr
    outcomes: Dict[str, Outcome] = {}
    todo = []
    for case in cases:
        if case.output.exists() and not redo:
            outcomes[case.name] = Outcome(case.name, "skipped", detail="output exists")
        else:
            todo.append(case)
    done = 0

    def one(case: Case) -> Outcome:
        start = time.perf_counter()
        try:
            detail = job(case)
            return Outcome(case.name, "done", time.perf_counter() - start, detail)
        except SAMMed3DError as exc:
            return Outcome(case.name, "failed", time.perf_counter() - start, str(exc))
        except (OSError, RuntimeError, ValueError) as exc:  # one bad case must not stop the batch
            return Outcome(case.name, "failed", time.perf_counter() - start, f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(one, case) for case in todo]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes[outcome.case] = outcome
            done += 1
            print(f"[{done}/{len(todo)}] {outcome.case}: {outcome.status} {outcome.detail}".rstrip(), file=progress,
                  flush=True)
    return [outcomes[case.name] for case in cases]


def summary(outcomes: Sequence[Outcome], seconds: float) -> str:
    """A table of the cases and a totals line."""
    width = max([4, *(len(o.case) for o in outcomes)])
    rows = [f"{'case':<{width}}  {'status':<7}  {'time s':>7}  detail"]
    rows += [f"{o.case:<{width}}  {o.status:<7}  {o.seconds:7.2f}  {o.detail}" for o in outcomes]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    rows.append(f"{count(len(outcomes), 'case')}: {counts['done']} done, {counts['skipped']} skipped (already done), "
                f"{counts['failed']} failed; {seconds:.1f} s")
    return "\n".join(rows)


def session_opener(args: argparse.Namespace, purpose: str, **options: Any) -> Tuple[Callable[[Any], Any], int]:
    """(open_session(image) with ``options``, default job count): sessions on the ``--server`` (as many jobs as
    it has workers), or on the ``--weights`` loaded here (one job); ``purpose`` names the task in the message
    when neither is given."""
    if args.server:
        from ..remote import RemoteSession, ServerConnection
        from ..server.config import read_token

        connection = ServerConnection(args.server, read_token(args.token_file) if args.token_file else None)
        return (lambda image: RemoteSession(connection, image, **options)), len(connection.models())
    if not args.weights:
        raise InputError(f"give --weights (to {purpose} here) or --server URL")
    from ..session import InteractiveSession
    from .options import checked_device
    from .progress import load_model_with_progress

    model = load_model_with_progress(args, checked_device(args))
    return (lambda image: InteractiveSession(model, image, **options)), 1

"""The command line's checks on output paths, before any work is done; the files themselves are written all or
nothing through :class:`~SAMMed3DLib.staging.StagedOutputs` (the engine's staged, verified outputs: its module
docstring gives the protocol), which this module re-exports for the commands.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

from ..errors import InputError
from ..staging import (  # noqa: F401  (re-exported: the commands' one door to the staged outputs)
    JOURNAL,
    NEW,
    PREVIOUS,
    STAGING_PREFIX,
    PathLike,
    StagedOutputs,
    is_read_only,
    is_special,
    overwrites,
    recover_staging,
    same_file,
)


def check_output_path(path: PathLike, option: str) -> Path:
    """``path`` as a Path if a new file can be put there, else InputError naming ``option`` (e.g. "--out").

    Checked before any work is done: the folder must exist (it is never created) and accept a new entry
    (probed by creating and removing an empty hidden folder), and ``path`` must be neither a folder nor a
    read-only file (which is refused, not replaced). Staging folders left there by killed runs are
    recovered first.
    """
    path = Path(path)
    folder = path.parent
    if path.name in ("", ".", ".."):
        raise InputError(f"{option} {path} is not a file name")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: the folder {folder} does not exist")
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")
    if is_special(path):
        raise InputError(f"{option} {path} is not a regular file (a device, pipe or socket); it is not replaced")
    if is_read_only(path):
        raise InputError(f"{option} {path} is read-only; it is not replaced")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write in {folder} ({exc.strerror or exc})") from exc
    recover_staging(folder)
    return path


def check_distinct_outputs(outputs: Dict[str, Path]) -> None:
    """InputError if two of ``outputs`` (option, e.g. "--out", → path) name the same file."""
    options = list(outputs)
    for i, first in enumerate(options):
        for second in options[i + 1 :]:
            if same_file(outputs[first], outputs[second]):
                raise InputError(f"{first} and {second} name the same file: {outputs[second]}")


def check_outputs_spare_inputs(outputs: Dict[str, Path], inputs: Iterable[Tuple[str, PathLike]]) -> None:
    """InputError if an output (option → path) is one of the inputs ((option, path) pairs), however spelt.

    Compares files, not strings: other spellings, ``..``, symbolic and hard links all count as the same
    file. An input folder (a DICOM series) protects every file already in it. Inputs that do not exist
    (a registry id given as --weights) protect nothing.
    """
    inputs = list(inputs)
    for out_option, out in outputs.items():
        for in_option, given in inputs:
            if overwrites(out, Path(given)):
                raise InputError(f"{out_option} {out} is the input {in_option} {given}; an input is never overwritten")


def write_json_report(path: Optional[PathLike], report: object) -> None:
    """A benchmark's ``--json``: ``report`` as indented JSON at ``path`` (nothing when None), staged, verified
    and moved into place like every other output (check the path with :func:`check_output_path` before the run)."""
    if path:
        from .images import write_text

        with StagedOutputs() as outputs:
            outputs.stage(path, lambda staged: write_text(json.dumps(report, indent=2), staged))

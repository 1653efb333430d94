"""Is a file a SAM-Med3D checkpoint? A structural check that needs no torch and never unpickles.

Why not ``torch.load``: this package must not import torch (``models`` and the Slicer panel ask for the
cache's state on the GUI thread), and a full load of a 400 MB file costs memory and about a second that
loading the model pays again right after. The check reads what torch's own format makes cheap to read:

- every ``torch.save`` since PyTorch 1.6 writes a zip archive whose central directory sits at the very
  end, so a file cut short (a server that sends fewer bytes than the file has, an interrupted copy) or
  with bytes appended has no readable directory;
- the archive holds one ``<name>/data.pkl`` (the object's pickle) beside ``<name>/data/<n>`` tensor
  records; the pickle is walked opcode by opcode (``pickletools``, nothing is executed) and must name
  weights of all three SAM-Med3D parts (``image_encoder.``, ``prompt_encoder.``, ``mask_decoder.``);
- ``full=True`` also checks the CRC-32 of every record (reads the whole file once), which catches bytes
  changed inside an otherwise intact archive. Downloads run it before a file is admitted to the cache.

The legacy (pre-1.6, non-zip) format is refused: it cannot be checked without unpickling, and the
official checkpoints are zip archives. A legacy file can still be loaded as a local path.
"""

import io
import os
import pickletools
import zipfile
from typing import Iterator, Optional, Set

PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
"""Key prefixes of the three SAM-Med3D sub-networks; each must appear among the checkpoint's keys."""
MAX_PICKLE_BYTES = 64 << 20  # an official data.pkl (weights, optimizer state, args) is well under 1 MB


def checkpoint_problem(path: "os.PathLike[str] | str", full: bool = False) -> Optional[str]:
    """None when ``path`` looks like a complete SAM-Med3D checkpoint, else why not (a phrase, e.g.
    ``'it is not a complete PyTorch checkpoint (...)'``). ``full``: also verify every record's CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _archive_problem(archive, full)
    except zipfile.BadZipFile as exc:
        return f"it is not a complete PyTorch checkpoint (truncated, or another format: {exc})"
    except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as exc:
        return f"it cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc})"


def _archive_problem(archive: zipfile.ZipFile, full: bool) -> Optional[str]:
    pickles = [info for info in archive.infolist() if info.filename.endswith("/data.pkl")]
    if len(pickles) != 1:
        return f"it is a zip file but not a PyTorch checkpoint ({len(pickles)} data.pkl records)"
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        return f"its data.pkl is implausibly large ({pickles[0].file_size} bytes)"
    keys = _strings(archive.read(pickles[0]))  # reading checks the record's CRC-32
    missing = [p.rstrip(".") for p in PARTS if not any(k.startswith((p, "module." + p)) for k in keys)]
    if missing:
        return f"it is a PyTorch file but holds no SAM-Med3D weights (no {', '.join(missing)} keys)"
    if full:
        bad = archive.testzip()
        if bad is not None:
            return f"its record {bad} is damaged (CRC-32 mismatch)"
    return None


def _strings(pickle_bytes: bytes) -> Set[str]:
    """Every string constant of a pickle, read opcode by opcode without executing anything."""
    return {arg for arg in _arguments(pickle_bytes) if isinstance(arg, str)}


def _arguments(pickle_bytes: bytes) -> Iterator[object]:
    for _opcode, arg, _position in pickletools.genops(io.BytesIO(pickle_bytes)):
        yield arg

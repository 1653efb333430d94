"""Where the page's volumes come from: an upload (checked: size, name, format), the bundled sample, or the data
folder (a case name the worklist resolves; a name from the page never becomes a path outside the folder).

No MRML here: these functions give a checked file path; :mod:`.station` loads it into the scene."""

import importlib.util
import re
from pathlib import Path
from typing import Any, Dict

from ..errors import InputError

UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
"""File name endings the page accepts for an uploaded volume: one-file NIfTI, NRRD and MetaImage (a header with a
separate data file, .nhdr or .mhd, cannot come along in one upload)."""
SAMPLE_NAME = "MNI152 T1 1 mm (sample)"


def safe_upload_name(name: str) -> str:
    """The upload's own file name without any folder part, reduced to safe characters; InputError when it is
    not a volume the page accepts."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .") or "volume"
    if not any(base.lower().endswith(s) for s in UPLOAD_SUFFIXES):
        raise InputError(f"{base}: not a volume this page reads; upload NIfTI (.nii, .nii.gz), NRRD or MHA")
    return base


def save_upload(file: Dict[str, Any], folder: Path, max_bytes: int) -> Path:
    """Write one uploaded file (trame's file dict: ``name``, ``size``, ``content`` bytes or chunks) into
    ``folder``; InputError when it is too large, empty or of another kind. Nothing is written on refusal."""
    if not isinstance(file, dict):
        raise InputError("the upload was not a file")
    name = safe_upload_name(file.get("name", ""))
    content = file.get("content")
    if isinstance(content, (list, tuple)):
        content = b"".join(bytes(part) for part in content)
    if not isinstance(content, (bytes, bytearray)) or not content:
        raise InputError(f"{name}: the upload is empty")
    if len(content) > max_bytes:
        raise InputError(f"{name}: {len(content) / 2**20:.0f} MiB is more than this station's upload limit "
                         f"({max_bytes / 2**20:.0f} MiB)")  # fmt: skip
    path = Path(folder) / name
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(bytes(content))
    partial.replace(path)
    return path


def sample_volume() -> Path:
    """The MNI152 T1 template (ICBM 2009a, 1 mm; real MRI) shipped in nilearn's package; InputError without it."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the sample volume comes with nilearn: pip install nilearn, or upload a volume")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    path = folder / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if not path.is_file():
        raise InputError(f"no MNI152 T1 template in {folder}: upload a volume instead")
    return path

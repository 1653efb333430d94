"""Run the command line in a child process under a real file-size limit (RLIMIT_FSIZE), or stopped mid-commit."""

import json
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parents[2]

_LIMITED = """
import resource, sys
from SAMMed3DLib.cli import main
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(main(sys.argv[2:]))
"""

_STOPPED = """
import json, os, sys
from SAMMed3DLib import staging as outputs
from SAMMed3DLib.cli.images import write_text
stop_at, files = sys.argv[1], json.loads(sys.argv[2])
outputs.commit_step_hook = lambda step: os._exit(9) if step == stop_at else None
with outputs.StagedOutputs() as staged:
    for path, text in files.items():
        staged.stage(path, lambda p, text=text: write_text(text, p))
"""


def run_with_file_size_limit(argv: List[str], limit_bytes: int) -> Tuple[int, List[str]]:
    """(exit status, standard error lines) of ``python -m SAMMed3DLib ARGV`` with files capped at ``limit_bytes``."""
    done = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(limit_bytes), *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stderr.strip().splitlines()


def commit_killed_at(step: str, files: dict) -> int:
    """Write ``files`` (path → text) through StagedOutputs in a child process that dies (os._exit) at ``step``."""
    done = subprocess.run(
        [sys.executable, "-c", _STOPPED, step, json.dumps({str(k): v for k, v in files.items()})],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode

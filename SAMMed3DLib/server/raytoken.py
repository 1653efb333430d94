"""Ray's cluster token file (``~/.ray/auth_token``): readable by its owner only, or the server does not start.

Whoever reads Ray's token can join the server's Ray and run code in it. Ray writes the file with the process's
umask (usually mode 0644: every user of the machine may read it); the server creates it private instead, and
makes an existing one private.
"""

import os
import secrets
import stat
from pathlib import Path
from typing import Optional

from ..errors import InputError

AUTH_MODE, TOKEN, TOKEN_PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
"""Ray's environment variables: token authentication on/off, the token itself, the file that holds it."""


def token_file() -> Optional[Path]:
    """The file Ray takes its cluster token from; None when Ray's token authentication is off or the token
    comes from the environment (``RAY_AUTH_TOKEN``)."""
    if os.environ.get(AUTH_MODE, "").strip().lower() == "disabled" or os.environ.get(TOKEN):
        return None
    return Path(os.environ.get(TOKEN_PATH) or Path.home() / ".ray" / "auth_token")


def secure_token_file(create: bool) -> Optional[str]:
    """Make Ray's token file readable by its owner only: created so (mode 0600, its folder 0700 if new) when
    missing and ``create`` (a new local Ray), else narrowed to 0600 if others may read it. A note saying what
    was changed, or None. InputError if the file belongs to another user, which this process cannot fix."""
    path = token_file()
    if path is None:
        return None
    if create and not path.exists():
        _create(path)
    try:
        status = path.stat()
    except FileNotFoundError:
        return None  # joining a cluster without a token file: Ray says what is missing
    mode = stat.S_IMODE(status.st_mode)
    if not mode & 0o077:
        return None
    if status.st_uid != os.geteuid():
        raise InputError(
            f"Ray's cluster token {path} can be read by other users (mode {mode:04o}) and belongs to another "
            f"user, so this server cannot make it private: anyone who reads it can run code in the server's Ray. "
            f"Have its owner run `chmod 600 {path}`, or set {TOKEN_PATH} to a copy only you can read"
        )
    os.chmod(path, 0o600)
    return (f"note: Ray's cluster token {path} could be read by other users (mode {mode:04o}); it is now "
            "readable by its owner only")


def _create(path: Path) -> None:
    """A new random token at ``path``, never readable by others (not even for a moment)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made meanwhile (another server starting): checked as an existing one
        return
    with os.fdopen(handle, "w") as stream:
        stream.write(secrets.token_hex(32))

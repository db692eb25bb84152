"""Small file helpers shared by the state folder, the shared Slurm snapshots and the pacer."""
from __future__ import annotations

import os


def atomic_write_text(path: str, text: str, mode: int = 0o600) -> None:
    """Write via a temp file in the same folder + fsync + os.replace: readers never see half a file."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.urandom(6).hex()}.json")  # not tempfile: daemon memory
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

"""Files the product writes are private to their owner: the database holds encrypted credentials and a business's
data, the spool and journal the same data on its way in, the key file the keys.

Two layers, because DuckDB creates its files (the database, its WAL) from the process umask and we cannot pass it
a mode: each process sets a private umask at its entry point (`private_umask`), and files we create ourselves get
their mode explicitly (`make_private`). Files left lax by an older version or copied in are tightened at start
(`tighten`), with one INFO line saying which.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PRIVATE_UMASK = 0o077


def private_umask() -> None:
    """Every file this process creates from now on is readable by its owner only (CLI, collector, dashboard)."""
    os.umask(PRIVATE_UMASK)


def make_private(path: Path) -> None:
    """Owner-only mode on a file or folder we just created; a vanished path is fine (a WAL comes and goes)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)


def tighten(paths: Iterable[Path]) -> list[Path]:
    """Remove group and other permissions from those of `paths` that have any; returns the paths changed.

    Only our own files are changed (a file of another owner is left as it is: chmod would fail anyway), and a
    path that cannot be changed (read-only location) is left too: reading must still work there."""
    changed = []
    for path in paths:
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o077 or info.st_uid != os.geteuid():
            continue
        try:
            os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o077)
        except OSError as exc:
            log.debug("could not make %s private: %s", path, exc.strerror)
            continue
        changed.append(path)
    if changed:
        log.info("made private (owner only): %s", ", ".join(str(p) for p in changed))
    return changed

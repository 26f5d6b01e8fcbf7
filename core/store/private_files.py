"""Our own files on disk: created private, written durably, read within bounds, their failures said in words.

Files the product writes are private to their owner: the database holds encrypted credentials and a business's
data, the spool and journal the same data on its way in, the key file the keys. Two layers, because DuckDB creates
its files (the database, its WAL) from the process umask and we cannot pass it a mode: each process sets a private
umask at its entry point (`private_umask`), and files and folders we create ourselves get their mode explicitly
(`private_dir`, `write_private`, `create_private`), whatever the umask. Files left lax by an older version or copied
in are tightened at start (`tighten`), with one INFO line saying which.

What we write must survive a power cut once we say it is written: files are fsynced, and so is the folder after a
file appears in it or is renamed into it (`fsync_dir`), or the rename itself could be lost.

A file we read may not be what we wrote: a named pipe blocks a reader forever (and the collector would hold the
database while it waits), a device such as /dev/zero never ends, a stray file may be gigabytes. So every file is
read with `read_bounded`: opened without blocking, refused unless it is a regular file, and read to at most its
limit plus one byte (`NotAFile`, `TooLarge`: messages in the user's words). `decode_utf8` names the line of the first
byte that is not UTF-8, and `os_error_words` says an `OSError` the way a user would ("the disk is full").
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PRIVATE_UMASK = 0o077

# --- an OSError in the user's words ----------------------------------------------------------------------------

DISK_FULL = "the disk is full"
QUOTA_USED_UP = "the disk quota is used up"
READ_ONLY = "the location is read-only"
DENIED = "permission denied"
NOT_A_FOLDER = "a part of the path is a file, not a folder"
_WORDS = {
    errno.ENOENT: "no such file",
    errno.EACCES: DENIED,
    errno.EPERM: DENIED,
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: NOT_A_FOLDER,
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: QUOTA_USED_UP,
    errno.EROFS: READ_ONLY,
    errno.EIO: "an input/output error (the disk may be failing)",
    errno.ELOOP: "a symbolic link that loops or is not allowed here",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ENXIO: "a named pipe or device that nothing serves",
    errno.EMFILE: "too many files are open",
    errno.ENFILE: "too many files are open",
    errno.EEXIST: "something else already has that name",
    errno.EFBIG: "the file is too large for the file system",
}


def os_error_words(exc: OSError) -> str:
    """What went wrong, as a user says it ("the disk is full", "permission denied"); the system's own text, in
    lower case, for the rarer errors."""
    words = _WORDS.get(exc.errno or 0)
    if words is not None:
        return words
    return (exc.strerror or type(exc).__name__).lower()


# --- creating private files and folders ------------------------------------------------------------------------


def private_umask() -> None:
    """Every file this process creates from now on is readable by its owner only (CLI, collector, dashboard)."""
    os.umask(PRIVATE_UMASK)


def make_private(path: Path) -> None:
    """Owner-only mode on a file or folder we just created; a vanished path is fine (a WAL comes and goes)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) owner-only; an existing folder is left to `tighten`, anything else of
    that name is a `NotADirectoryError`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileExistsError:
        if path.is_dir():
            return
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from None
    make_private(path)  # mkdir's mode is masked by the umask, which may also take the owner's bits


# O_NONBLOCK: a named pipe put where we write fails at once (no reader) instead of blocking the writer forever.
# O_NOFOLLOW: nothing we write is a symbolic link, so one found there is not followed to somewhere else.
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def write_private(path: Path, data: bytes) -> None:
    """Write an owner-only file durably (replacing any file of that name)."""
    _write(os.open(path, _WRITE_FLAGS | os.O_TRUNC, PRIVATE_FILE), data)


def create_private(path: Path, data: bytes) -> bool:
    """Create an owner-only file holding `data`, durably (the file and its folder's entry), unless something of
    that name exists: False then, and nothing is touched (another process created it first: theirs stands)."""
    try:
        fd = os.open(path, _WRITE_FLAGS | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return False
    _write(fd, data)
    fsync_dir(path.parent)
    return True


def _write(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, PRIVATE_FILE)  # an existing file keeps its mode through O_CREAT; the umask masks a new one
        handle.write(data)
        handle.flush()
        os.fsync(fd)


def fsync_dir(path: Path) -> None:
    """Make the folder's entries (a file created, renamed in or out) durable."""
    _fsync(path, os.O_DIRECTORY)


def fsync_file(path: Path) -> None:
    """Make a file another library wrote (a parquet file) durable."""
    _fsync(path, os.O_NONBLOCK)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tighten(paths: Iterable[Path]) -> list[Path]:
    """Remove group and other permissions from those of `paths` that have any; returns the paths changed.

    Only our own files and folders are changed: a file of another owner is left as it is (chmod would fail
    anyway), and so are a symbolic link, a named pipe or a device (not a file we made: changing the mode of a
    device would change it for everyone). A path that cannot be changed (read-only location) is left too: reading
    must still work there."""
    changed = []
    for path in paths:
        try:
            info = path.lstat()
        except OSError:
            continue
        ours = stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)
        if not ours or not info.st_mode & 0o077 or info.st_uid != os.geteuid():
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


# --- reading within bounds ---------------------------------------------------------------------------------------


class Unreadable(Exception):
    """A file that is there but is not one to read; the message is a predicate of the path ("is a device")."""


class NotAFile(Unreadable):
    """A directory, named pipe, device or socket where a regular file was expected."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"is {kind}")
        self.kind = kind


class TooLarge(Unreadable):
    """A regular file larger than the reader's limit (it was not read)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"is larger than {size_in_words(limit)}")
        self.limit = limit


def size_in_words(size: int) -> str:
    """A byte count as a person says it: 64 KB, 1 GB (decimal units, as file managers show them)."""
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"


def file_kind(mode: int) -> str:
    """What a non-regular file is, as a user says it ("a named pipe"); from `os.stat` or `os.lstat`."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a special file"


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path` (a symbolic link to one is fine), at most `limit` of them.

    `NotAFile` for a directory, named pipe, device or socket (never opened in a way that could block, never read),
    `TooLarge` past `limit` (read at most one byte past it, so a file growing while read is caught too); the
    `OSError` of the system otherwise (`os_error_words` says it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except IsADirectoryError:
        raise NotAFile("a directory") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotAFile(file_kind(info.st_mode))
        if info.st_size > limit:
            raise TooLarge(limit)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(limit)
    return data


def unreadable_input(exc: OSError | NotAFile, what: str) -> str:
    """Why a file the user named (to import) cannot be read, and what to do; `what` is what it should be ("a CSV
    file"). A predicate of the path: "is a directory; give the path of a CSV file"."""
    if isinstance(exc, NotAFile):
        return f"{exc}; give the path of {what}"
    if isinstance(exc, PermissionError):
        return f"{DENIED}; make the file readable for this user"
    return os_error_words(exc)


class NotUtf8(ValueError):
    """Bytes that are not UTF-8 text; `line` is the line (from 1) of the first byte that is not."""

    def __init__(self, line: int) -> None:
        super().__init__(f"not UTF-8 text (line {line})")
        self.line = line


_UTF8_BOM = b"\xef\xbb\xbf"


def decode_utf8(data: bytes, *, bom: bool = False) -> str:
    """The text of UTF-8 bytes (after a UTF-8 byte-order mark, with `bom`: spreadsheets write one), or `NotUtf8`
    naming the line a user looks at in an editor."""
    if bom and data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8(data[: exc.start].count(b"\n") + 1) from None

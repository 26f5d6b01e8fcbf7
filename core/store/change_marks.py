"""Change marks: how a page learns that a source has new readings without reading the database (docs/real-time.md,
"Live follows within seconds").

After every commit that stored readings, the writer touches one empty file per source written,
`<db file>.changes/<source id>`; its modification time is the mark. A reader compares the newest mark of the
sources it shows with the one it saw last: a few `stat` calls (microseconds), no lock, no connection, so Live can
ask every second while the collector holds the file. Files per source need no coordination between writers (the
collector, the ingest service, an import): the newest touch wins, and no writer can undo another's.

Marks are hints, never data: a missing or unwritable folder makes `mark` a no-op (logged once) and `newest` report
nothing, and the page then falls back on its timed reload. The files hold nothing: their names are source ids.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from core.store.private_files import private_dir

log = logging.getLogger(__name__)
# Never through a link, never blocking on a pipe someone put there.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class ChangeMarks:
    """The marks beside one database file."""

    SUFFIX = ".changes"  # the folder beside the database file
    UNMARKED = "pages notice new readings at their next reload"  # what a failing folder costs, for the log

    def __init__(self, db_path: Path) -> None:
        self.directory = db_path.with_name(db_path.name + self.SUFFIX)
        self._failing = False

    def mark(self, source_ids: Iterable[int]) -> None:
        """Say that these sources have new readings (after the commit that stored them)."""
        ids = sorted({int(i) for i in source_ids})
        if not ids:
            return
        try:
            private_dir(self.directory)
            for source_id in ids:
                path = self.directory / str(source_id)
                try:
                    os.utime(path, follow_symlinks=False)  # a link planted here is not followed elsewhere
                except FileNotFoundError:
                    os.close(os.open(path, _CREATE, 0o600))
        except OSError as exc:
            if not self._failing:
                log.warning("cannot leave marks in %s (%s); %s", self.directory, exc.strerror or exc, self.UNMARKED)
            self._failing = True
            return
        self._failing = False

    def newest(self, source_ids: Iterable[int]) -> int | None:
        """The newest mark of these sources, in nanoseconds since the epoch; None when none has one."""
        newest: int | None = None
        for source_id in source_ids:
            try:
                stamp = (self.directory / str(int(source_id))).stat().st_mtime_ns
            except OSError:
                continue
            newest = stamp if newest is None else max(newest, stamp)
        return newest


class WatchMarks(ChangeMarks):
    """Marks the other way round: Live touches the marks of the sources it shows while someone watches (each time it
    looks for new readings), and the collector opens the live stream of a watched Enphase source that allows it
    (core.collect.stream_feed). A mark older than a few seconds means nobody is watching any more."""

    SUFFIX = ".watched"
    UNMARKED = "live streams cannot follow who watches Live"

    def watched(self, source_ids: Iterable[int], *, within_ns: int, now_ns: int) -> set[int]:
        """The sources among these whose mark is at most `within_ns` old at `now_ns` (nanoseconds since the epoch)."""
        found = set()
        for source_id in source_ids:
            stamp = self.newest([source_id])
            if stamp is not None and now_ns - stamp <= within_ns:
                found.add(int(source_id))
        return found

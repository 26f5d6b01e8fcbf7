"""The newest live-stream value of each streamed source, for Live to show within a second or two of its frame
(docs/real-time.md, "The Enphase live stream").

Frames arrive about once a second and are stored as 1-minute averages (`core.store.live_readings`) once their minute
closes; what Live shows as "now" in between is the newest frame. The collector replaces one small file per source,
`<db file>.now/<source id>` holding `{"at": ISO time, "value": W or %}`, at each frame (written aside and renamed,
so a reader never sees half a file); Live reads the files of the shown site's sources each time it looks for new
readings: no database, no lock.

Like change marks these are hints, never data: a folder that cannot be written makes `write` a no-op (logged once),
and an unreadable, malformed or missing file reads as no value. Live counts a value only while it is fresh
(`core.analytics.live`), so the file a stopped stream leaves behind soon stops counting.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from core.store.private_files import private_dir

log = logging.getLogger(__name__)
_MAX_BYTES = 256  # a value file is about 60 bytes: anything larger is not ours


class StreamNow:
    """The newest stream values beside one database file."""

    def __init__(self, db_path: Path) -> None:
        self.directory = db_path.with_name(db_path.name + ".now")
        self._failing = False

    def write(self, values: Mapping[int, tuple[datetime, float | None]]) -> None:
        """Replace each source's newest value: {source_id: (frame time, value)}."""
        if not values:
            return
        try:
            private_dir(self.directory)
            for source_id, (at, value) in values.items():
                path = self.directory / str(int(source_id))
                spare = path.with_name(f".{path.name}.{os.getpid()}")
                text = json.dumps({"at": at.astimezone(UTC).isoformat(), "value": value})
                descriptor = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(text)
                os.replace(spare, path)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot leave live values in %s (%s); Live shows stream minutes only", self.directory,
                            exc.strerror or exc)  # fmt: skip
            self._failing = True
            return
        self._failing = False

    def read(self, source_ids: Iterable[int]) -> dict[int, tuple[datetime, float | None]]:
        """{source_id: (frame time, value)} for the sources that have a readable file."""
        found: dict[int, tuple[datetime, float | None]] = {}
        for source_id in source_ids:
            try:
                with open(self.directory / str(int(source_id)), "rb") as handle:
                    body = json.loads(handle.read(_MAX_BYTES + 1)[:_MAX_BYTES])
                at = datetime.fromisoformat(body["at"])
                value = body["value"]
                if at.tzinfo is None or not (value is None or isinstance(value, int | float)):
                    continue
                found[int(source_id)] = (at, None if value is None else float(value))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

"""Group commit: polls hand their results to one writer thread, which commits everything queued together.

Each write transaction costs about the same fixed store work (open the file under its lock, commit, close) whatever
it carries, so one transaction per polled vendor site makes the time the file is held grow with the fleet. The
writer instead takes everything queued and commits it in ONE transaction, at most once per `gap_s` (about a
second), and at once when it was idle that long: a lone poll (`--once`, a test, a quiet fleet) is written as soon
as it arrives, a busy second of polls costs one write.

The writer only decides WHEN and WHAT goes together; what a commit does is the caller's `commit` function
(`core.collect.collection.Collection`: the same `apply_pass`, or the spool when the file is held). Rules:
- Order: items are committed in the order they were submitted (a spool or a bookmark never sees a younger pass
  before an older one).
- Two items that claim the same thing (the same source ids) never share a commit: the later one starts the next
  group, so a commit never writes a source's state or readings twice.
- An item the commit fails on for a reason of its own (an exception other than the ones the commit handles) must
  not take the others with it: a failed group is retried item by item, each item's future getting its own outcome.
- `submit` returns a future, done when the item is committed (or failed); callers that need the write (the CLI's
  `--once`, backfill, tests) wait on it, the collector's poll threads do not.
- `close` writes everything queued, at once, then stops the thread (the collector's SIGTERM).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

GAP_S = 1.0  # at most one commit per this many seconds while polls keep coming

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


@dataclass
class _Queued(Generic[Item, Outcome]):
    item: Item
    claims: frozenset[Hashable]
    future: Future[Outcome] = field(default_factory=Future)


class GroupWriter(Generic[Item, Outcome]):
    """One writer thread, started at the first `submit`. `commit(items)` writes the items in one transaction and
    returns one outcome per item, in order; `claims(item)` names what an item writes (items claiming the same thing
    go to separate commits)."""

    def __init__(
        self,
        commit: Callable[[Sequence[Item]], Sequence[Outcome]],
        claims: Callable[[Item], frozenset[Hashable]],
        *,
        gap_s: float = GAP_S,
        name: str = "group-writer",
    ) -> None:
        self._commit, self._claims, self.gap_s, self._name = commit, claims, gap_s, name
        self._queue: deque[_Queued[Item, Outcome]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._busy = False  # a commit is under way (its items have left the queue)
        self._last_commit = float("-inf")  # monotonic time the last commit started
        self.commits = 0  # transactions attempted (a group retried item by item counts once per item)
        self.items_committed = 0
        self.commit_s = 0.0  # seconds spent in commits (the file is held for about that long)

    def submit(self, item: Item) -> Future[Outcome]:
        queued: _Queued[Item, Outcome] = _Queued(item, self._claims(item))
        with self._cond:
            if self._closing:
                raise RuntimeError("the writer is closed")
            self._queue.append(queued)
            if self._thread is None:
                # A daemon, so a process that never closes its writer still exits; `close` is what writes the rest.
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return queued.future

    def pending(self) -> bool:
        """Whether items wait or are being committed."""
        with self._cond:
            return bool(self._queue) or self._busy

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything submitted so far is committed; False when `timeout_s` ran out first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float | None = None) -> bool:
        """Commit everything queued without waiting for the gap, then stop the thread; False on timeout."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing, and nothing left
                # At most one commit per gap: what arrives meanwhile joins this one. Idle for a gap: at once.
                while not self._closing and (left := self._last_commit + self.gap_s - time.monotonic()) > 0:
                    self._cond.wait(left)
                group = self._take_group()
                self._busy = True
                self._last_commit = time.monotonic()
            try:
                self._write(group)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _take_group(self) -> list[_Queued[Item, Outcome]]:
        """The queued items, oldest first, up to the first that claims what an earlier one in the group does."""
        group: list[_Queued[Item, Outcome]] = []
        claimed: set[Hashable] = set()
        while self._queue and not (self._queue[0].claims & claimed):
            queued = self._queue.popleft()
            claimed |= queued.claims
            group.append(queued)
        return group

    def _write(self, group: list[_Queued[Item, Outcome]]) -> None:
        started = time.perf_counter()
        try:
            self.commits += 1
            outcomes = self._commit([q.item for q in group])
        except Exception as exc:  # every outcome goes to its submitter's future
            self.commit_s += time.perf_counter() - started
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            log.debug("a group of %d failed; writing its items one by one", len(group), exc_info=True)
            for queued in group:
                self._write([queued])
            return
        self.commit_s += time.perf_counter() - started
        self.items_committed += len(group)
        for queued, outcome in zip(group, outcomes, strict=True):
            queued.future.set_result(outcome)

"""Live job events: the log in SQL is the truth; Redis pub/sub, where Redis is the broker,
only wakes the streams sooner.

Writers (the API's routes, the sweep, the workers' reporter) append to `job_events` with
`repository.add_event`; after their transaction commits, `announce_committed` publishes the
job ids on one Redis channel. Each API process runs one `EventHub`: it wakes the streams of
a job when the channel names it, and, as a safety net and the only path on the embedded
defaults, when a periodic query of the watched jobs' event counters and progress (one query
for all of them) sees a change. A stream then reads what is new in a short session of its
own, so no database connection is held while it waits.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from starlette.concurrency import run_in_threadpool

from service import repository
from service.announce import channel, redis_url
from service.db import get_sessionmaker
from service.settings import Settings
from service.tables import Job
from service.views import progress

log = logging.getLogger(__name__)

EVENT_BATCH = 500  # events read per query; a long replay takes several
FEED_EVENTS = 2000  # recent events the hub keeps in memory per watched job
TERMINAL = frozenset(repository.FINISHED)


# The hub (one per API process) ------------------------------------------------------------


class EventHub:
    def __init__(self, settings: Settings) -> None:
        self.redis_url = redis_url(settings)
        self.channel = channel(settings)
        self.poll_seconds = settings.event_poll_seconds
        self.watchers: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.marks: dict[str, tuple[int, Any]] = {}
        self.feeds: dict[str, _Feed] = {}

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job may have news; the caller clears it before reading."""
        wake = asyncio.Event()
        self.watchers[job_id].add(wake)
        self.feeds.setdefault(job_id, _Feed())
        try:
            yield wake
        finally:
            self.watchers[job_id].discard(wake)
            if not self.watchers[job_id]:
                del self.watchers[job_id]
                self.marks.pop(job_id, None)
                self.feeds.pop(job_id, None)

    def wake(self, job_id: str) -> None:
        if (feed := self.feeds.get(job_id)) is not None:
            feed.stale = True
        for wake in self.watchers.get(job_id, ()):
            wake.set()

    async def read(self, job_id: str, after: int) -> _Read | None:
        """The job's events after `after` (at most EVENT_BATCH), its status and live
        progress. However many streams watch a job, news costs one query: the first stream
        woken refreshes the job's feed, the others read the feed's memory. A stream further
        behind than the feed reaches (a replay) reads SQL itself."""
        feed = self.feeds[job_id]
        async with feed.lock:
            if feed.stale:
                feed.stale = False
                if not await feed.refresh(job_id):
                    feed.stale = True
                    return None
        if after < feed.base:
            return await run_in_threadpool(_read, job_id, after)
        start = bisect.bisect_right(feed.seqs, after)
        last = feed.seqs[-1] if feed.seqs else feed.base
        return _Read(feed.events[start : start + EVENT_BATCH], feed.status, feed.progress, last)

    async def run(self) -> None:
        tasks = [self._poll_forever()]
        if self.redis_url:
            tasks.append(self._listen_forever())
        await asyncio.gather(*tasks)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            job_ids = list(self.watchers)
            if not job_ids:
                continue
            try:
                marks = await run_in_threadpool(_read_marks, job_ids)
            except Exception:
                log.exception("event hub: reading job marks failed")
                continue
            for job_id, mark in marks.items():
                if self.marks.get(job_id) != mark:
                    self.marks[job_id] = mark
                    self.wake(job_id)

    async def _listen_forever(self) -> None:
        assert self.redis_url is not None
        while True:
            client = redis.asyncio.Redis.from_url(self.redis_url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.wake(message["data"].decode("utf-8", "replace"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "event hub: Redis subscription lost (%s); polling until it is back", exc
                )
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(2.0)


def _read_marks(job_ids: list[str]) -> dict[str, tuple[int, Any]]:
    marks: dict[str, tuple[int, Any]] = {}
    with get_sessionmaker()() as session:
        for i in range(0, len(job_ids), 500):
            marks.update(repository.event_marks(session, job_ids=job_ids[i : i + 500]))
    return marks


# One stream -------------------------------------------------------------------------------


@dataclass
class _Read:
    events: list[tuple[int, str, dict[str, Any]]]
    status: str
    progress: dict[str, Any] | None  # the live progress event's data while running
    last_seq: int  # the job's latest event when it was read


class _Feed:
    """What the hub holds in memory of one watched job: the events since it started
    watching (the latest FEED_EVENTS of them), the job's status and live progress."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.stale = True
        self.started = False
        self.base = 0  # the cache holds events with seq > base
        self.seqs: list[int] = []
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.status = "queued"
        self.progress: dict[str, Any] | None = None

    async def refresh(self, job_id: str) -> bool:
        """Read what is new since the last refresh (the first only notes where the job is);
        False when the job is gone."""
        while True:
            after = self.seqs[-1] if self.seqs else self.base
            read = await run_in_threadpool(_read, job_id, after, not self.started)
            if read is None:
                return False
            if not self.started:
                self.started, self.base = True, read.last_seq
            self.events += read.events
            self.seqs += [seq for seq, _, _ in read.events]
            self.status, self.progress = read.status, read.progress
            if len(read.events) < EVENT_BATCH:
                break
        if len(self.events) > FEED_EVENTS:
            del self.events[:-FEED_EVENTS], self.seqs[:-FEED_EVENTS]
            self.base = self.seqs[0] - 1
        return True


def _read(job_id: str, after: int, only_state: bool = False) -> _Read | None:
    """The job's events after `after` (none when `only_state`), read after its row, so
    a terminal status always comes with its final event."""
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        if job is None:
            return None
        events = (
            []
            if only_state
            else repository.job_events(session, job_id=job_id, after=after, limit=EVENT_BATCH)
        )
        live = None
        if job.status == "running" and job.progress and "batches" in job.progress:
            p = progress(job)
            live = {"epoch": p.epoch, "epochs": p.epochs, "batch": p.batch,
                    "batches": p.batches, "step": p.step, "steps": p.steps,
                    "fraction": p.fraction}  # fmt: skip
        return _Read([(e.seq, e.type, e.data) for e in events], job.status, live, job.event_seq)


def parse_last_event_id(value: str | None) -> int | None:
    """`12` (a logged event) or `12.3` (a progress event sent after event 12) -> 12; None
    when it is not an id this API gave."""
    if value is None or value.strip() == "":
        return 0
    head = value.strip().partition(".")[0]
    if not head.isdigit() or len(head) > 12:
        return None
    return int(head)


async def stream(hub: EventHub, job_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
    """The job's events after seq `after`, then live ones; ends after the job's final status.
    Progress events carry the id of the last logged event plus a counter, so resuming from
    one neither repeats nor skips a logged event."""
    sent_progress: dict[str, Any] | None = None
    progress_count = 0
    with hub.watch(job_id) as wake:
        while True:
            wake.clear()
            read = await hub.read(job_id, after)
            if read is None:  # the job is gone
                return
            if read.status in TERMINAL and not read.events:
                return  # its final status was sent (it is written with the status itself)
            for seq, type_, data in read.events:
                after, progress_count, sent_progress = seq, 0, None
                yield {"id": str(seq), "event": type_, "data": json.dumps(data)}
                if type_ == "status" and data.get("status") in TERMINAL:
                    return
            if len(read.events) == EVENT_BATCH:
                continue  # more to replay
            if read.progress is not None and read.progress != sent_progress:
                sent_progress = read.progress
                progress_count += 1
                yield {
                    "id": f"{after}.{progress_count}",
                    "event": "progress",
                    "data": json.dumps(read.progress),
                }
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation
            # (the client went away) that lands as the wake-up does.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(hub.poll_seconds * 10):
                    await wake.wait()

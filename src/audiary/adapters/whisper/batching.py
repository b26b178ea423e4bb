"""Dynamic micro-batching of Whisper windows across concurrent calls.

A transcriber instance serves several push requests at once (Cloud Run concurrency, gunicorn
threads). Each request plans its chunk into windows (planning.py) and hands them here; one
dispatcher thread per model worker takes windows from every waiting request into one model
call, so an instance stays busy when chunks are short or jobs small:

- a dispatcher that finds windows waiting takes up to `max_windows` of them (oldest first, of
  one language and word-timing choice, which a model call shares), and waits up to `max_wait_s`
  for more when it has fewer than that; with several dispatchers idle, the waiting windows are
  shared between them, so one request alone still uses every worker;
- results go back to each request by window; a request is answered once all its windows are;
- with `merge_s` set, short windows of different requests share one model window when
  together they fit in it (a chunk's last window, a re-read of what a window left unread):
  the encoder's cost is per window whatever its length, so this saves encoder passes rather
  than only filling a batch. Such windows are decoded with word times, and each word goes
  back to the request whose audio it is in (each window starts and ends in a pause, so no
  word spans two). Off unless asked (the engine's `batch_merge_windows`): on 2 CPU cores it
  saved no time, and a request's words then depend a little on its neighbours';
- a model call that fails with windows of several requests is run again request by request,
  so one bad chunk fails only itself.

With `across_requests=False` a model call only ever holds windows of one request (the same
dispatchers, no mixing, no shared model windows): what the throughput bench compares against.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from audiary.domain.audio import SAMPLE_RATE
from audiary.observability import metrics

__all__ = ["DecodeKey", "WindowBatcher"]

log = logging.getLogger(__name__)

# What one model call shares (the engine's: language, word timestamps, decode options); any
# hashable value, compared with ==.
DecodeKey = Hashable
# Runs one model call: (worker index, audio of the windows back to back, their clips in
# seconds, key, whether word times are needed) -> the decoder's segments, times in that audio.
DecodeFn = Callable[[int, NDArray[Any], list[dict[str, float]], DecodeKey, bool], list[Any]]


@dataclass(eq=False)
class _Request:
    windows: list[NDArray[Any]]
    key: DecodeKey
    future: Future[list[list[Any]]] = field(default_factory=Future)
    results: dict[int, list[Any]] = field(default_factory=dict)

    def done(self, index: int, segments: list[Any]) -> None:
        if self.future.done():  # failed already, by another of its windows
            return
        self.results[index] = segments
        if len(self.results) == len(self.windows):
            self.future.set_result([self.results[i] for i in range(len(self.windows))])

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(frozen=True)
class _Item:
    request: _Request
    index: int
    queued_at: float

    @property
    def audio(self) -> NDArray[Any]:
        return self.request.windows[self.index]


class WindowBatcher:
    """Feeds windows of concurrent `decode` calls into shared model calls (see module doc)."""

    def __init__(self, decode: DecodeFn, *, workers: int, max_windows: int, max_wait_s: float,
                 across_requests: bool = True, merge_s: float = 0.0,
                 mergeable: Callable[[DecodeKey], bool] = lambda key: True) -> None:
        self._decode = decode
        self.max_windows = max_windows
        self.max_wait_s = max_wait_s
        self.across_requests = across_requests
        # Windows of different requests share a model window up to this many samples (0:
        # never), for keys where `mergeable` allows it (not when token log-probabilities are
        # wanted: a word's share of them is not known).
        self.merge_samples = int(merge_s * SAMPLE_RATE) if across_requests else 0
        self._mergeable = mergeable
        self._queue: deque[_Item] = deque()
        self._ready = threading.Condition()
        self._idle = workers
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, args=(worker,), daemon=True,
                             name=f"decode-{worker}")
            for worker in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def decode(self, windows: Sequence[NDArray[Any]], key: DecodeKey) -> list[list[Any]]:
        """The decoder's segments of each window (times relative to the window's start), once
        every window is decoded; the model call's exception if this request's failed."""
        if not windows:
            return []
        request = _Request(windows=list(windows), key=key)
        now = time.monotonic()
        with self._ready:
            if self._closed:
                raise RuntimeError("the transcriber is shutting down")
            self._queue.extend(_Item(request, i, now) for i in range(len(windows)))
            self._ready.notify_all()
        return request.future.result()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)

    def _serve(self, worker: int) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(worker, batch)

    def _next_batch(self) -> list[_Item] | None:
        with self._ready:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._ready.wait()
                # Fewer than a full batch: wait for more, at most max_wait_s after the oldest
                # window arrived.
                deadline = self._queue[0].queued_at + self.max_wait_s
                while (self._queue and len(self._matching()) < self.max_windows
                       and (wait := deadline - time.monotonic()) > 0 and not self._closed):
                    self._ready.wait(wait)
                if not self._queue:  # another dispatcher took them meanwhile
                    continue
                matching = self._matching()
                # Shared with the other idle dispatchers (this one counts), so that one
                # request alone still keeps every worker busy.
                share = min(self.max_windows, math.ceil(len(matching) / max(1, self._idle)))
                batch = matching[:share]
                taken = set(map(id, batch))
                self._queue = deque(item for item in self._queue if id(item) not in taken)
                self._idle -= 1
                return batch

    def _matching(self) -> list[_Item]:
        """Waiting windows that may share a model call with the oldest one."""
        first = self._queue[0]
        if self.across_requests:
            return [item for item in self._queue if item.request.key == first.request.key]
        return [item for item in self._queue if item.request is first.request]

    def _run(self, worker: int, batch: list[_Item]) -> None:
        try:
            requests = {id(item.request): item.request for item in batch}
            metrics.DECODE_BATCH_WINDOWS.observe(len(batch))
            metrics.DECODE_BATCH_REQUESTS.observe(len(requests))
            try:
                self._call(worker, batch)
            except Exception as exc:
                if len(requests) == 1:
                    batch[0].request.fail(exc)
                    return
                log.warning("a model call of %d requests failed (%s: %s); running each alone",
                            len(requests), type(exc).__name__, exc)
                for request in requests.values():
                    alone = [item for item in batch if item.request is request]
                    try:
                        self._call(worker, alone)
                    except Exception as own:
                        request.fail(own)
        except BaseException as exc:  # never leave a caller waiting
            for item in batch:
                item.request.fail(exc)
            raise
        finally:
            with self._ready:
                self._idle += 1
                self._ready.notify_all()

    def _call(self, worker: int, batch: list[_Item]) -> None:
        key = batch[0].request.key
        merge = len(batch) > 1 and self.merge_samples > 0 and self._mergeable(key)
        groups = _merged(batch, self.merge_samples) if merge else [[item] for item in batch]
        starts, clips, position = [], [], 0  # starts: of each item, in batch order
        order = [item for group in groups for item in group]
        for group in groups:
            clips.append({"start": position / SAMPLE_RATE})
            for item in group:
                starts.append(position / SAMPLE_RATE)
                position += len(item.audio)
            clips[-1]["end"] = position / SAMPLE_RATE
        shared = sum(len(group) for group in groups if len(group) > 1)
        if shared:
            metrics.DECODE_SHARED_WINDOWS.inc(shared)
        audio = np.concatenate([item.audio for item in order])
        per_item: list[list[Any]] = [[] for _ in order]
        ends = [start + len(item.audio) / SAMPLE_RATE for start, item in zip(starts, order,
                                                                           strict=True)]
        for segment in self._decode(worker, audio, clips, key, shared > 0):
            for index, part in _split_at(segment, starts, ends):
                per_item[index].append(_shifted(part, -starts[index]))
        for item, segments in zip(order, per_item, strict=True):
            item.request.done(item.index, segments)


def _merged(batch: list[_Item], limit: int) -> list[list[_Item]]:
    """The batch's windows in model windows of at most `limit` samples, fewest first: longest
    first, each into the fullest model window it fits that holds no other window of its
    request (those were planned apart on purpose)."""
    groups: list[list[_Item]] = []
    used: list[int] = []
    for item in sorted(batch, key=lambda item: -len(item.audio)):
        fits = [i for i, group in enumerate(groups)
                if used[i] + len(item.audio) <= limit
                and all(other.request is not item.request for other in group)]
        if fits:
            best = max(fits, key=lambda i: used[i])
            groups[best].append(item)
            used[best] += len(item.audio)
        else:
            groups.append([item])
            used.append(len(item.audio))
    return groups


def _split_at(segment: Any, starts: list[float], ends: list[float]) -> list[tuple[int, Any]]:
    """A decoder segment as (item index, part): by the item each word starts in (`starts` and
    `ends` the items' times, in order), or all of it to the item it starts in when it has no
    words. Times are kept inside the item: a segment's end may fall in the next one's audio."""
    def item_of(t: float) -> int:
        return max(0, bisect.bisect_right(starts, t + 1e-6) - 1)

    groups: list[tuple[int, list[Any] | None]] = []
    if not segment.words:
        groups.append((item_of(segment.start), None))
    else:
        for word in segment.words:
            index = item_of(word.start)
            if not groups or groups[-1][0] != index:
                groups.append((index, []))
            words = groups[-1][1]
            assert words is not None
            words.append(word)
    if len(groups) == 1 and segment.end <= ends[groups[0][0]] + 1e-6:
        return [(groups[0][0], segment)]
    parts = []
    for index, words in groups:
        def inside(t: float, index: int = index) -> float:
            return min(max(t, starts[index]), ends[index])

        if words is None:
            parts.append((index, dataclasses.replace(segment, end=inside(segment.end))))
            continue
        kept = [dataclasses.replace(w, start=inside(w.start), end=inside(w.end)) for w in words]
        if len(groups) == 1:
            parts.append((index, dataclasses.replace(
                segment, start=inside(segment.start), end=inside(segment.end), words=kept)))
            continue
        parts.append((index, dataclasses.replace(
            segment, start=kept[0].start, end=kept[-1].end, words=kept,
            text="".join(w.word for w in words),
            tokens=None)))  # the tokens were the whole segment's, not this part's
    return parts


def _shifted(segment: Any, by: float) -> Any:
    """A decoder segment (and its words) moved by `by` seconds."""
    words = None if segment.words is None else [
        dataclasses.replace(w, start=w.start + by, end=w.end + by) for w in segment.words]
    return dataclasses.replace(segment, start=segment.start + by, end=segment.end + by,
                               words=words)

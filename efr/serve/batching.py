"""Faces from many requests classified together: one thread owns the model, a bounded queue feeds it.

Each request hands its face crops to ``Batcher.submit`` and gets a Future of their probabilities.
The model thread takes the first waiting request, then keeps taking more until the batch holds
``max_batch`` faces or ``max_wait_ms`` has passed since it started collecting, classifies them in
one call and hands each request its rows.  One call for eight one-face requests costs little more
than one for a single face, which is where a busy server's throughput comes from; the wait is
bounded, so a lone request is never held more than ``max_wait_ms``.  The queue is bounded too
(``max_queue`` requests): past it ``submit`` raises ``Busy`` at once (HTTP 503) instead of letting
latency grow without end.
"""

import logging
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

log = logging.getLogger("efr.serve")

DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_WAIT_MS = 4.0
DEFAULT_MAX_QUEUE = 256


class Busy(Exception):
    """The queue is full: the caller should answer 503 and the client retry later."""


class _Job:
    __slots__ = ("crops", "future", "queued")

    def __init__(self, crops):
        self.crops = crops
        self.future = Future()
        self.queued = time.perf_counter()


class Batcher:
    """Classifies the crops of many callers in shared batches on one thread.

    ``classify``: list of crops -> (N, classes) probabilities (``Predictor.classify``).
    """

    def __init__(self, classify, max_batch=DEFAULT_MAX_BATCH, max_wait_ms=DEFAULT_MAX_WAIT_MS,
                 max_queue=DEFAULT_MAX_QUEUE):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be 1 or more and max_wait_ms 0 or more")
        self.classify = classify
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self._queue = queue.Queue(maxsize=int(max_queue))
        self.max_queue = int(max_queue)
        self.batches = 0  # model calls made
        self.faces = 0  # faces classified
        self.largest = 0  # most faces in one call
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="efr-serve-batcher", daemon=True)
        self._thread.start()

    @property
    def waiting(self):
        """Requests queued and not yet taken by the model thread."""
        return self._queue.qsize()

    def submit(self, crops):
        """A Future of ``(probabilities, seconds waited, seconds classifying)`` for ``crops``; Busy when full."""
        job = _Job(list(crops))
        if not job.crops:  # nothing to classify: no need to wait for the model
            job.future.set_result((None, 0.0, 0.0))
            return job.future
        if self._closed.is_set():
            raise Busy("the server is shutting down")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Busy(f"{self.max_queue} requests are already waiting for the model") from None
        return job.future

    def close(self, timeout=5.0):
        """Stop the model thread after the jobs queued so far."""
        self._closed.set()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def _collect(self, first):
        jobs, count = [first], len(first.crops)
        deadline = time.perf_counter() + self.max_wait
        while count < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # close(): finish this batch, then stop
                self._queue.put(None)
                break
            jobs.append(job)
            count += len(job.crops)
        return jobs

    def _loop(self):
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = self._collect(first)
            started = time.perf_counter()
            try:
                probs = np.asarray(self.classify([c for job in jobs for c in job.crops]))
            except Exception as err:  # noqa: BLE001 - the requests fail (500), the server keeps serving
                log.exception("classification failed")
                for job in jobs:
                    job.future.set_exception(err)
                continue
            seconds = time.perf_counter() - started
            self.batches += 1
            self.faces += len(probs)
            self.largest = max(self.largest, len(probs))
            start = 0
            for job in jobs:
                n = len(job.crops)
                job.future.set_result((probs[start : start + n], started - job.queued, seconds))
                start += n

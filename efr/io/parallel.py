"""Bounded parallel map: results in input order, at most ``window`` items in flight.

``Executor.map`` and a dict of ``submit`` calls both queue every item at once, so their
futures (and each one's arguments and result) grow with the input; here memory stays
flat however many photos there are.
"""

import collections
import concurrent.futures


def bounded_map(fn, items, workers, window, pool=None):
    """Yield ``fn(item)`` for each item, in order, computed by ``workers`` threads (or ``pool``).

    ``pool``: an Executor to use instead of fresh threads (e.g. a process pool; then ``fn``
    must be picklable).  With neither ``pool`` nor more than one worker, runs in this thread.
    When the caller stops early, items not yet started are cancelled.
    """
    if pool is not None:
        yield from _bounded(pool, fn, items, window)
    elif workers <= 1:
        for item in items:
            yield fn(item)
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as own:
            yield from _bounded(own, fn, items, window)


def _bounded(pool, fn, items, window):
    pending = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max(1, window):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()

"""efr.io.parallel.bounded_map: results in order, few items in flight, early stops cancel the rest."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from efr.io.parallel import bounded_map


def test_results_come_in_input_order_whatever_finishes_first():
    def slow_first(item):
        time.sleep(0.05 if item == 0 else 0)
        return item * item

    assert list(bounded_map(slow_first, range(10), workers=3, window=4)) == [i * i for i in range(10)]


@pytest.mark.parametrize("workers", [1, 2])
def test_at_most_window_items_are_taken_from_the_input_ahead_of_the_caller(workers):
    taken = []

    def items():
        for i in range(100):
            taken.append(i)
            yield i

    window = 4
    for index, result in enumerate(bounded_map(lambda i: i, items(), workers=workers, window=window)):
        assert result == index
        # Submitting everything at once (Executor.map) would have taken all 100 by now.
        assert len(taken) <= index + window + 1


def test_a_given_pool_is_used_and_left_open():
    names = set()

    def where(item):
        names.add(threading.current_thread().name)
        return item

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="given") as pool:
        assert list(bounded_map(where, range(8), workers=1, window=3, pool=pool)) == list(range(8))
        assert pool.submit(lambda: 1).result() == 1  # still usable
    assert names and all(name.startswith("given") for name in names)


def test_stopping_early_cancels_items_not_started():
    started = []

    def work(item):
        started.append(item)
        time.sleep(0.02)
        return item

    with ThreadPoolExecutor(max_workers=1) as pool:
        results = bounded_map(work, range(50), workers=1, window=5, pool=pool)
        assert next(results) == 0
        results.close()
    assert len(started) <= 6


def test_an_error_in_an_item_reaches_the_caller():
    def fail_on_three(item):
        if item == 3:
            raise ValueError("three")
        return item

    with pytest.raises(ValueError, match="three"):
        list(bounded_map(fail_on_three, range(10), workers=2, window=2))

"""efr.evaluate.stats: the Wilson interval and the subject-level bootstrap behind every report's uncertainty."""

import numpy as np
import pytest

from efr.evaluate.stats import format_interval, subject_bootstrap_interval, wilson_interval


def test_wilson_matches_the_textbook_values():
    # Newcombe (1998) / Agresti-Coull tables: 81/100 -> [0.7222, 0.8749]; 0/10 -> [0, 0.2775]
    assert wilson_interval(81, 100) == pytest.approx((0.7222, 0.8749), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)


def test_wilson_narrows_with_more_photos_and_handles_none():
    small, large = wilson_interval(8, 10), wilson_interval(800, 1000)
    assert small[1] - small[0] > large[1] - large[0]
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_subject_bootstrap_is_seeded_and_widens_when_people_disagree():
    subjects = np.repeat(np.arange(10), 8)
    alike = np.tile([1, 1, 1, 1, 1, 1, 0, 0], 10)  # every subject 75 %
    apart = np.repeat([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], 8)  # subjects all right or all wrong: 70 %
    a = subject_bootstrap_interval(alike, subjects, seed=3)
    assert a == subject_bootstrap_interval(alike, subjects, seed=3)
    assert a == pytest.approx((0.75, 0.75))  # no between-subject spread: no uncertainty from resampling people
    low, high = subject_bootstrap_interval(apart, subjects, seed=3)
    assert low < 0.7 < high and high - low > 0.3
    assert subject_bootstrap_interval([1, 0, 1], ["a", "a", "a"]) is None
    assert subject_bootstrap_interval([1, 0, 1, 0], ["a", "b", "c", "d"]) is None  # fewer than 5 people
    assert subject_bootstrap_interval([1, 0, 1, 0], ["a", "b", "c", "d"], min_subjects=2) is not None
    with pytest.raises(ValueError):
        subject_bootstrap_interval([1, 0], ["a"])


def test_format_interval():
    assert format_interval((0.12345, 0.5)) == "[0.123, 0.500]"
    assert format_interval(None) == ""

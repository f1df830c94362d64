"""Uncertainty of an accuracy: the Wilson interval and a subject-level bootstrap.

A test set of n photos gives an accuracy k/n; how far it could be from the model's true
accuracy depends on n and, because photos of one person are alike, on the number of
people.  ``wilson_interval`` treats the photos as independent (the usual binomial
interval, well behaved near 0 and 1 and for small n); ``subject_bootstrap_interval``
resamples whole subjects, so it widens when a few people decide the result.
"""

import math

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
BOOTSTRAP_SAMPLES = 2000
# Resampling 2-4 people gives a handful of distinct samples and an interval narrower than the truth.
MIN_BOOTSTRAP_SUBJECTS = 5


def wilson_interval(correct, total, z=Z95):
    """(low, high) Wilson score interval of the proportion correct/total; (0, 1) when total is 0."""
    correct, total = int(correct), int(total)
    if total <= 0:
        return (0.0, 1.0)
    if not 0 <= correct <= total:
        raise ValueError(f"correct {correct} outside 0..{total}")
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def subject_bootstrap_interval(correct, subjects, samples=BOOTSTRAP_SAMPLES, seed=0, level=0.95,
                               min_subjects=MIN_BOOTSTRAP_SUBJECTS):
    """Percentile bootstrap interval of the accuracy, resampling subjects with replacement.

    ``correct``: 0/1 per photo; ``subjects``: the subject id of each photo.  Each
    bootstrap sample draws as many subjects as there are, with replacement, and pools
    their photos.  Returns (low, high), or None with fewer than ``min_subjects``
    subjects (too few people to resample: the interval would look narrower than it is).
    """
    correct = np.asarray(correct, dtype=float)
    subjects = np.asarray([str(s) for s in subjects])
    if correct.shape != subjects.shape:
        raise ValueError("correct and subjects must have one entry per photo")
    ids, index = np.unique(subjects, return_inverse=True)
    if len(ids) < max(2, min_subjects):
        return None
    right = np.bincount(index, weights=correct, minlength=len(ids))
    count = np.bincount(index, minlength=len(ids)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(samples, len(ids)))
    accuracies = right[draws].sum(axis=1) / count[draws].sum(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(accuracies, [tail, 100 - tail])
    return (float(low), float(high))


def format_interval(interval, digits=3):
    """'[0.712, 0.804]' (or '' for None)."""
    if not interval:
        return ""
    low, high = interval
    return f"[{low:.{digits}f}, {high:.{digits}f}]"

"""Subject-disjoint Train/Valid/Test splits and k-fold subject groups.

A face classifier that has seen a person in training recognises that person's
expressions far better than a stranger's, so every photo of one subject goes to
one split.  Splits are made over subjects, not images: the split sizes are subject
counts, rounded so that every split with a non-zero share gets at least one subject.

Why not sklearn's GroupShuffleSplit / GroupKFold: GroupShuffleSplit makes two parts
per call and rounds with ceil, so three parts from a small set (10 subjects) do not
come out as asked; GroupKFold balances image counts, not subject counts.  A seeded
permutation cut at the right counts does exactly what we want in a few lines.
"""

import math

import numpy as np

from efr.io.errors import EFRError
from efr.io.manifest import SPLITS

DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)


def parse_fractions(values):
    """Train/Valid/Test shares from three numbers: fractions (0.7 0.15 0.15) or percentages (70 15 15)."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise EFRError(f"--split {' '.join(map(str, values))}: expected three numbers, e.g. 70 15 15") from err
    if len(numbers) != len(SPLITS):
        raise EFRError(f"--split needs three numbers (Train Valid Test), got {len(numbers)}: e.g. --split 70 15 15")
    if any(n < 0 or not math.isfinite(n) for n in numbers) or numbers[0] <= 0:
        raise EFRError(f"--split {' '.join(map(str, values))}: shares must be >= 0 and Train's > 0")
    total = sum(numbers)
    for scale in (1.0, 100.0):
        if abs(total - scale) <= 1e-6 * scale:
            return tuple(n / scale for n in numbers)
    raise EFRError(
        f"--split {' '.join(map(str, values))} sums to {total:g}: give fractions summing to 1 "
        "(0.7 0.15 0.15) or percentages summing to 100 (70 15 15)"
    )


def split_counts(n_subjects, fractions=DEFAULT_FRACTIONS):
    """How many subjects go to each split: largest-remainder rounding, >= 1 for every non-zero share."""
    wanted = sum(1 for f in fractions if f > 0)
    if n_subjects < wanted:
        raise EFRError(
            f"only {n_subjects} subject(s): a subject-disjoint split into {wanted} parts needs at least "
            f"{wanted} different people; add photos of more people, or for a folder layout give "
            "--subject-regex so that subjects can be told apart"
        )
    raw = [f * n_subjects for f in fractions]
    counts = [math.floor(r) for r in raw]
    # Hand out what rounding down left over, largest remainder first; a tie goes to the
    # later split (Test before Valid), since the test estimate gains most from one more person.
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), -i))
    for i in order[: n_subjects - sum(counts)]:
        counts[i] += 1
    # A split asked for must not come out empty: take one from the largest.
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0:
            counts[max(range(len(counts)), key=lambda j: counts[j])] -= 1
            counts[i] = 1
    return tuple(counts)


def _permuted(subjects, seed, stream):
    unique = sorted({str(s) for s in subjects})
    # A separate stream per use, so that folds are not just the split order cut again.
    rng = np.random.default_rng([int(seed), stream])
    return [unique[i] for i in rng.permutation(len(unique))]


def split_subjects(subjects, fractions=DEFAULT_FRACTIONS, seed=0):
    """Assign each subject to Train, Valid or Test: {subject: split}.

    Repeatable: the same subjects (in any order) and seed give the same split.
    """
    order = _permuted(subjects, seed, stream=0)
    counts = split_counts(len(order), fractions)
    assignment = {}
    start = 0
    for split, count in zip(SPLITS, counts):
        for subject in order[start : start + count]:
            assignment[subject] = split
        start += count
    return assignment


def assign_folds(subjects, k, seed=0):
    """Put each subject in one of ``k`` folds of near-equal subject counts: {subject: fold 0..k-1}."""
    order = _permuted(subjects, seed, stream=1)
    if k < 2:
        raise EFRError(f"--folds {k}: cross-validation needs at least 2 folds")
    if k > len(order):
        raise EFRError(f"--folds {k}: only {len(order)} subjects to share out; use --folds {len(order)} or fewer")
    return {subject: i % k for i, subject in enumerate(order)}


# Which split gets a scarce class first: Train (a class it lacks cannot be learnt), then Test
# (a class it lacks cannot be scored), then Valid (a class it lacks only weakens early stopping).
COVERAGE_PRIORITY = ("Train", "Test", "Valid")


def split_subjects_by_class(subject_classes, fractions=DEFAULT_FRACTIONS, seed=0):
    """Subject-disjoint and class-aware: ({subject: split}, {split: [classes it cannot get]}).

    ``subject_classes``: {subject: set of the classes of their usable photos}.  The split
    sizes are ``split_counts`` subject counts, as for ``split_subjects``.  Within them
    subjects are chosen so that every class reaches every split whenever the data
    allows: split by split (``COVERAGE_PRIORITY``), each class the split still lacks
    gets the subject (in seeded order) that brings the most missing classes, while the
    split has room.  The rest are dealt out in the seeded order.  When the plain seeded
    split (``split_subjects``) covers as many classes, it is kept.  Repeatable: the same
    subjects, classes and seed give the same split.
    """
    classes = {str(s): set(c) for s, c in subject_classes.items()}
    plain = split_subjects(list(classes), fractions, seed)
    greedy = _covering_split(classes, fractions, seed)
    # The plain seeded split when it covers as well: a split does not move for nothing
    # (e.g. when a photo is added or removed and coverage stays the same).
    best = min((greedy, plain), key=lambda a: _coverage_key(a, classes, fractions))
    return best, _missing(best, classes, fractions)


def _missing(assignment, classes, fractions):
    every = set().union(*classes.values()) if classes else set()
    covered = {split: set() for split in SPLITS}
    for subject, split in assignment.items():
        covered[split] |= classes[subject]
    return {split: sorted(every - covered[split]) for split in SPLITS
            if capacity_of(fractions, split) and every - covered[split]}


def _coverage_key(assignment, classes, fractions):
    missing = _missing(assignment, classes, fractions)
    return tuple(len(missing.get(split, ())) for split in COVERAGE_PRIORITY)


def _covering_split(classes, fractions, seed):
    """The greedy class-covering assignment of ``split_subjects_by_class``."""
    order = _permuted(classes, seed, stream=0)
    capacity = dict(zip(SPLITS, split_counts(len(order), fractions)))
    every = set().union(*classes.values()) if classes else set()
    assignment, covered = {}, {split: set() for split in SPLITS}
    for split in COVERAGE_PRIORITY:
        while capacity[split] > 0:
            lacking = every - covered[split]
            candidates = [s for s in order if s not in assignment and classes[s] & lacking]
            if not lacking or not candidates:
                break
            # Most missing classes first; among equals the seeded order decides (max keeps the first).
            chosen = max(candidates, key=lambda s: len(classes[s] & lacking))
            assignment[chosen] = split
            covered[split] |= classes[chosen]
            capacity[split] -= 1
    for subject in order:
        if subject in assignment:
            continue
        split = next(s for s in SPLITS if capacity[s] > 0)
        assignment[subject] = split
        capacity[split] -= 1
    return assignment


def capacity_of(fractions, split):
    """True when ``split`` is asked for (a non-zero share)."""
    return fractions[SPLITS.index(split)] > 0

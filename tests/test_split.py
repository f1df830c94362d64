"""Subject-disjoint splits: sizes, repeatability, small sets, folds."""

import random
from collections import Counter

import pytest

from efr.io.errors import EFRError
from efr.io.manifest import SPLITS
from efr.data.split import DEFAULT_FRACTIONS, assign_folds, parse_fractions, split_counts, split_subjects


def _subjects(n):
    return [f"{i:02d}" for i in range(1, n + 1)]


@pytest.mark.parametrize(
    "values,expected",
    [(["70", "15", "15"], (0.7, 0.15, 0.15)), (["0.8", "0.1", "0.1"], (0.8, 0.1, 0.1)), ([80, 20, 0], (0.8, 0.2, 0.0))],
)
def test_parse_fractions_takes_percentages_or_fractions(values, expected):
    assert parse_fractions(values) == pytest.approx(expected)


@pytest.mark.parametrize(
    "values,message",
    [
        (["70", "30"], "three numbers"),
        (["70", "15", "10"], "sums to 95"),
        (["-10", "60", "50"], ">= 0"),
        (["0", "50", "50"], "Train"),
        (["a", "b", "c"], "three numbers"),
    ],
)
def test_parse_fractions_refuses_bad_shares(values, message):
    with pytest.raises(EFRError, match=message):
        parse_fractions(values)


@pytest.mark.parametrize("n", range(3, 101))
def test_split_counts_add_up_and_follow_the_fractions(n):
    counts = split_counts(n, DEFAULT_FRACTIONS)
    assert sum(counts) == n and min(counts) >= 1
    for count, fraction in zip(counts, DEFAULT_FRACTIONS):
        # Rounding moves a split by under one subject; the one-each rule at n=3 by 1.1.
        assert abs(count - fraction * n) < (1.2 if n < 5 else 1.0)


def test_known_split_sizes():
    assert split_counts(67) == (47, 10, 10)  # RaFD
    assert split_counts(10) == (7, 1, 2)  # JAFFE: the tie goes to Test
    assert split_counts(3) == (1, 1, 1)
    assert split_counts(5, (0.8, 0.2, 0.0)) == (4, 1, 0)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_few_subjects_is_a_clear_error(n):
    with pytest.raises(EFRError, match=f"only {n} subject"):
        split_subjects(_subjects(n))


@pytest.mark.parametrize("n", [3, 10, 67])
def test_split_subjects_gives_every_subject_one_split_of_the_right_size(n):
    subjects = _subjects(n)
    assignment = split_subjects(subjects, seed=0)
    assert set(assignment) == set(subjects) and set(assignment.values()) == set(SPLITS)
    sizes = Counter(assignment.values())
    assert tuple(sizes[s] for s in SPLITS) == split_counts(n)


def test_split_is_repeatable_whatever_the_input_order_and_changes_with_the_seed():
    subjects = _subjects(30)
    shuffled = subjects[:]
    random.Random(1).shuffle(shuffled)
    # Photos repeat subjects: duplicates must not change anything.
    assert split_subjects(subjects * 8, seed=3) == split_subjects(shuffled, seed=3)
    assert split_subjects(subjects, seed=3) != split_subjects(subjects, seed=4)


def test_photos_of_one_subject_never_share_two_splits():
    photos = [(subject, emotion) for subject in _subjects(12) for emotion in range(8)]
    assignment = split_subjects([s for s, _ in photos], seed=0)
    split_of_photo = {photo: assignment[photo[0]] for photo in photos}
    by_split = {split: {s for (s, _), sp in split_of_photo.items() if sp == split} for split in SPLITS}
    assert not (by_split["Train"] & by_split["Valid"] or by_split["Train"] & by_split["Test"])
    assert not by_split["Valid"] & by_split["Test"]


@pytest.mark.parametrize("n,k", [(10, 5), (57, 5), (7, 3), (4, 4)])
def test_folds_are_balanced_by_subject_count(n, k):
    folds = assign_folds(_subjects(n), k, seed=0)
    sizes = Counter(folds.values())
    assert set(folds) == set(_subjects(n)) and set(sizes) == set(range(k))
    assert max(sizes.values()) - min(sizes.values()) <= 1


def test_folds_are_repeatable_and_seeded():
    assert assign_folds(_subjects(20), 5, seed=1) == assign_folds(list(reversed(_subjects(20))), 5, seed=1)
    assert assign_folds(_subjects(20), 5, seed=1) != assign_folds(_subjects(20), 5, seed=2)


@pytest.mark.parametrize("k,message", [(1, "at least 2"), (6, "only 5 subjects")])
def test_impossible_fold_counts_are_refused(k, message):
    with pytest.raises(EFRError, match=message):
        assign_folds(_subjects(5), k)


def _coverage(assignment, classes):
    return {split: set().union(*[classes[s] for s in assignment if assignment[s] == split]) for split in SPLITS}


def test_class_aware_split_reaches_every_split_where_a_plain_one_does_not():
    from efr.data.split import split_subjects_by_class

    rng = random.Random(1)
    emotions = "ABCDEFG"
    # Few photos per person (as 82 photos of 52 people): a plain subject split leaves classes out.
    classes = {f"p{i:02d}": set(rng.sample(emotions, rng.randint(1, 2))) for i in range(52)}
    plain = _coverage(split_subjects(list(classes), seed=0), classes)
    assert any(covered != set(emotions) for covered in plain.values())
    assignment, missing = split_subjects_by_class(classes, seed=0)
    assert missing == {}
    assert all(covered == set(emotions) for covered in _coverage(assignment, classes).values())
    assert Counter(assignment.values()) == dict(zip(SPLITS, split_counts(52)))  # the requested shares
    assert split_subjects_by_class(dict(reversed(list(classes.items()))), seed=0)[0] == assignment  # repeatable


def test_class_aware_split_says_what_cannot_reach_a_split():
    from efr.data.split import split_subjects_by_class

    classes = {"a": {"Happy", "Sad"}, "b": {"Happy", "Sad"}, "c": {"Happy"}, "d": {"Happy", "Sad"},
               "e": {"Happy"}, "f": {"Happy", "Fearful"}}
    assignment, missing = split_subjects_by_class(classes, (0.5, 0.25, 0.25), seed=3)
    assert assignment["f"] == "Train"  # the only Fearful subject: Train needs it most
    assert missing == {"Valid": ["Fearful"], "Test": ["Fearful"]}
    assert "Sad" in _coverage(assignment, classes)["Test"] and "Sad" in _coverage(assignment, classes)["Valid"]

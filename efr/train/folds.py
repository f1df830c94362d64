"""The folds of a cross-validation: subjects assigned to folds, validation subjects chosen in each."""

import logging

import numpy as np

from efr.data import pipelines as efr_data
from efr.data.split import assign_folds
from efr.io.errors import EFRError
from efr.train.settings import DEFAULT_CV_VALID_FRACTION

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------
# Cross-validation


def assign_cv_folds(originals, k, seed=0):
    """{subject: fold index 0..k-1}: crop.py's fold column when it has exactly k folds, else efr.data.split's."""
    subjects = sorted({s.subject for s in originals})
    given = {s.subject: s.fold for s in originals}
    fold_values = sorted(set(given.values()), key=lambda v: (len(v), v))
    consistent = all(len({s.fold for s in originals if s.subject == subj}) == 1 for subj in subjects)
    if "" not in fold_values and len(fold_values) == k and consistent:
        index = {v: i for i, v in enumerate(fold_values)}
        log.info("cross-validation folds from the manifest's fold column")
        return {subj: index[given[subj]] for subj in subjects}
    return assign_folds(subjects, k, seed=seed)


def choose_validation_subjects(subjects, fraction, seed):
    """Some of a fold's training subjects, held out for early stopping."""
    subjects = sorted(subjects)
    count = min(len(subjects) - 1, max(1, round(len(subjects) * fraction)))
    rng = np.random.default_rng(seed)
    return set(rng.choice(subjects, size=count, replace=False).tolist())


def plan_folds(samples, k, valid_fraction=DEFAULT_CV_VALID_FRACTION, seed=0, offline_aug=True):
    """Split pooled samples into K subject-disjoint (train, valid, test) folds.

    Test folds hold originals only.  Each fold's validation subjects come out of its
    training subjects.  data_aug.py's copies join a fold's training set only when
    their parent photo (or, without a parent, their subject) is a training one, so
    no copy of a held-out face is ever trained on.
    """
    originals = [s for s in samples if s.kind == efr_data.ORIGINAL]
    unknown = [s for s in originals if not s.subject]
    if unknown:
        raise EFRError(
            f"cross-validation needs a subject per photo, and {len(unknown)} have none (e.g. {unknown[0].path}): "
            "crop the photos with --subject-regex (a folder layout does not say who is who; e.g. "
            r"'^([A-Z]{2})\.' for JAFFE), or use RaFD file names"
        )
    subject_fold = assign_cv_folds(originals, k, seed)
    augmented = [s for s in samples if s.kind == efr_data.AUGMENTED] if offline_aug else []
    plans = []
    for fold in range(k):
        test = [s for s in originals if subject_fold[s.subject] == fold]
        rest = sorted({s.subject for s in originals if subject_fold[s.subject] != fold})
        if len(rest) < 2:
            raise EFRError(f"--folds {k}: too few subjects ({len(subject_fold)}) to hold out validation subjects too")
        valid_subjects = choose_validation_subjects(rest, valid_fraction, seed + 1000 + fold)
        train_subjects = set(rest) - valid_subjects
        train_orig = [s for s in originals if s.subject in train_subjects]
        train_rels = {s.rel for s in train_orig}
        copies = [s for s in augmented if (s.parent in train_rels if s.parent else s.subject in train_subjects)]
        plans.append({
            "fold": fold + 1,
            "train": train_orig + copies,
            "valid": [s for s in originals if s.subject in valid_subjects],
            "test": test,
            "augmented_in_train": len(copies),
            "test_subjects": sorted({s.subject for s in test}),
            "valid_subjects": sorted(valid_subjects),
            "train_subjects": sorted(train_subjects),
        })
    return plans

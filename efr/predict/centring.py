"""--subject-norm in predict: which groups of faces (a person's photos, a face track) are centred.

Centring a face on its group's mean works when that mean is made of several expressions:
then it is the person's face and what is left is the expression.  A group that shows one
or two expressions (a one-person video of mostly one expression) has a mean that is
itself that expression, and centring takes the expression away (issue 23.13: 37 of 67
frames right centred, 66 of 69 with a model that does not centre).

So before a group is centred, its faces are classified without centring, on the
features less the Train mean (the model's ``fill``: the same head, the population's
face standing in for the person's).  A group whose plain labels show fewer than
``MIN_EXPRESSIONS`` expressions, each on at least ``MIN_SHARE`` of its faces, is not
centred: its rows keep the plain prediction and say ``not_centred`` in their note.
"""

import math
from collections import Counter

import numpy as np

from efr.models import features as feats

# Fewer than three expressions are "one expression and its neighbours" (or two): the mean
# is then close to each face's own expression, and centring leaves mostly noise.
MIN_EXPRESSIONS = 3
# An expression counts when at least this share of the group's faces shows it (at least one
# face): a few stray frames of a long video do not make it varied.
MIN_SHARE = 0.1
NOT_CENTRED = "not_centred"
# predict cannot leave out --subject-norm for a model trained with it
PREDICT_ADVICE = "or predict with a model trained without --subject-norm"


def plain_offsets(fusion, raw):
    """What the head subtracts for an uncentred face: the Train mean of the features (zeros if unknown)."""
    fill = np.asarray(getattr(fusion, "fill", ()), dtype=raw.dtype)
    return np.broadcast_to(fill, raw.shape) if fill.size == raw.shape[-1] else np.zeros_like(raw)


def expressions_shown(labels, min_share=MIN_SHARE):
    """The labels given to at least ``min_share`` of ``labels`` (one at least), the most frequent first."""
    least = max(1, math.ceil(min_share * len(labels)))
    return [label for label, n in Counter(labels).most_common() if n >= least]


def too_alike(labels):
    """Whether a group with these plain labels shows too few expressions to be centred."""
    return len(expressions_shown(labels)) < MIN_EXPRESSIONS


def grouped_probabilities(fusion, views, groups, where):
    """(probabilities, {group: expressions its plain labels show}) for faces grouped by person.

    ``views``: the faces' fused vectors, and those of their mirror images with --tta flip
    (averaged).  Groups whose plain labels show too few expressions are not centred: the
    dict lists them, and their rows hold the plain probabilities.
    """
    plain = sum(fusion.probabilities(v, plain_offsets(fusion, v)) for v in views) / len(views)
    centred = sum(fusion.probabilities(v, feats.subject_means(v, groups, where=where, advice=PREDICT_ADVICE))
                  for v in views) / len(views)
    labels = plain.argmax(axis=1)
    uncentred = {}
    for group, rows in feats.subject_groups(groups).items():
        if too_alike(labels[rows].tolist()):
            uncentred[group] = expressions_shown(labels[rows].tolist())
            centred[rows] = plain[rows]
    return centred, uncentred


def uncentred_line(kind, uncentred, sizes, class_names):
    """One warning line naming the groups left uncentred: ``{name: expressions shown}``, ``{name: faces}``."""
    listed = "; ".join(
        f"{name} ({sizes[name]} faces: {', '.join(class_names[i] for i in shown)})"
        for name, shown in sorted(uncentred.items(), key=lambda item: str(item[0]))[:8])
    more = f"; and {len(uncentred) - 8} more" if len(uncentred) > 8 else ""
    return (f"--subject-norm: {len(uncentred)} {kind} show fewer than {MIN_EXPRESSIONS} expressions before "
            f"centring, too few to centre on: {listed}{more}. Their faces are not centred (note {NOT_CENTRED}: "
            "the label is the model's uncentred one); give each more expressions to centre them")

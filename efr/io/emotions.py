"""The eight expression classes, and the names people use for them.

This module is the one home of the class list: every folder name, label index and
report in EFR comes from ``EMOTIONS``.  Class order is this order (RaFD's
alphabetical one), never the order a directory listing happens to give.
"""

from efr.io.errors import EFRError

EMOTIONS = (
    "Angry",
    "Contemptuous",
    "Disgusted",
    "Fearful",
    "Happy",
    "Neutral",
    "Sad",
    "Surprised",
)

# Lower-case spellings seen in RaFD, KDEF, JAFFE, CK+, FER2013 and AffectNet file and
# folder names, mapped to the canonical name.
_ALIASES = {
    "Angry": ("angry", "anger", "an", "ang", "mad"),
    "Contemptuous": ("contemptuous", "contempt", "co", "con"),
    "Disgusted": ("disgusted", "disgust", "di", "dis"),
    "Fearful": ("fearful", "fear", "afraid", "scared", "fe", "af", "fea"),
    "Happy": ("happy", "happiness", "joy", "ha", "hap", "smile"),
    "Neutral": ("neutral", "ne", "neu", "calm"),
    "Sad": ("sad", "sadness", "sa"),
    "Surprised": ("surprised", "surprise", "su", "sur"),
}
ALIASES = {alias: name for name, spellings in _ALIASES.items() for alias in spellings}


class UnknownEmotionError(EFRError):
    """A label that is none of the eight emotions nor a known alias of one."""


def canonical_emotion(label):
    """Return the canonical emotion for ``label`` (any case, any known alias).

    Raises UnknownEmotionError naming the label and the accepted names.
    """
    key = str(label).strip().lower()
    if key in ALIASES:
        return ALIASES[key]
    raise UnknownEmotionError(
        f"unknown emotion {label!r}: expected one of {', '.join(EMOTIONS)} "
        f"(or an alias such as anger, contempt, disgust, fear, happiness, sadness, surprise)"
    )


def sorted_emotions(names):
    """Order canonical emotion names as in EMOTIONS (the fixed class order)."""
    names = set(names)
    return [e for e in EMOTIONS if e in names]

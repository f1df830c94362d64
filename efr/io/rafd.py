"""The Radboud Faces Database file-name rule, in one place.

RaFD names every photo ``Rafd{angle}_{subject}_{ethnicity}_{gender}_{emotion}_{gaze}.jpg``,
for example ``Rafd090_25_Caucasian_male_happy_frontal.jpg``: camera angle 000, 045,
090 (frontal camera), 135 or 180; a two-digit subject number; the emotion in lower
case; gaze frontal, left or right.
"""

import re
from dataclasses import dataclass

from efr.io.emotions import canonical_emotion
from efr.io.errors import EFRError

ANGLES = ("000", "045", "090", "135", "180")
GAZES = ("frontal", "left", "right")
FRONTAL_ANGLE = "090"

RAFD_NAME = re.compile(
    r"^Rafd(?P<angle>\d{3})_(?P<subject>\d+)_(?P<ethnicity>[A-Za-z]+)_(?P<gender>[A-Za-z]+)"
    r"_(?P<emotion>[A-Za-z]+)_(?P<gaze>[A-Za-z]+)$"
)


@dataclass(frozen=True)
class RafdName:
    angle: str
    subject: str
    ethnicity: str
    gender: str
    emotion: str  # canonical, e.g. "Happy"
    gaze: str


class RafdNameError(EFRError):
    """A file name that does not follow the RaFD rule."""


def parse_rafd_name(filename):
    """Parse a RaFD file name (with or without folder and extension) into a RafdName.

    Raises RafdNameError for a name that breaks the rule, and UnknownEmotionError for
    a well-formed name with an emotion that is not one of the eight.
    """
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", str(filename).replace("\\", "/").rsplit("/", 1)[-1])
    match = RAFD_NAME.match(stem)
    if not match:
        raise RafdNameError(
            f"{filename!r} is not a RaFD file name: expected "
            "Rafd<angle>_<subject>_<ethnicity>_<gender>_<emotion>_<gaze>.jpg, "
            "e.g. Rafd090_25_Caucasian_male_happy_frontal.jpg"
        )
    parts = match.groupdict()
    if parts["angle"] not in ANGLES:
        raise RafdNameError(f"{filename!r}: camera angle {parts['angle']} is not one of {', '.join(ANGLES)}")
    gaze = parts["gaze"].lower()
    if gaze not in GAZES:
        raise RafdNameError(f"{filename!r}: gaze {parts['gaze']!r} is not one of {', '.join(GAZES)}")
    return RafdName(
        angle=parts["angle"],
        subject=f"{int(parts['subject']):02d}",
        ethnicity=parts["ethnicity"],
        gender=parts["gender"].lower(),
        emotion=canonical_emotion(parts["emotion"]),
        gaze=gaze,
    )


def rafd_subject(filename):
    """The subject of a RaFD-named file, or "" when the name does not follow the rule."""
    try:
        return parse_rafd_name(filename).subject
    except EFRError:  # RafdNameError, or UnknownEmotionError for an unknown emotion word
        return ""


def format_rafd_name(subject, ethnicity, gender, emotion, gaze, angle=FRONTAL_ANGLE, ext=".jpg"):
    """Build a RaFD file name; the inverse of parse_rafd_name."""
    return f"Rafd{angle}_{int(subject):02d}_{ethnicity}_{gender}_{canonical_emotion(emotion).lower()}_{gaze}{ext}"

"""The RaFD file-name rule: every angle and gaze, malformed names, unknown emotions."""

import itertools

import pytest

from efr.io.emotions import EMOTIONS, UnknownEmotionError
from efr.io.errors import EFRError
from efr.io.rafd import ANGLES, FRONTAL_ANGLE, GAZES, RafdNameError, format_rafd_name, parse_rafd_name


def test_parses_the_documented_example():
    name = parse_rafd_name("Rafd090_25_Caucasian_male_happy_frontal.jpg")
    assert (name.angle, name.subject, name.ethnicity, name.gender, name.emotion, name.gaze) == (
        "090", "25", "Caucasian", "male", "Happy", "frontal",
    )


@pytest.mark.parametrize("angle,gaze", list(itertools.product(ANGLES, GAZES)))
def test_every_angle_and_gaze(angle, gaze):
    name = parse_rafd_name(f"Rafd{angle}_07_Moroccan_female_surprised_{gaze}.jpg")
    assert name.angle == angle and name.gaze == gaze and name.subject == "07" and name.emotion == "Surprised"


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_format_and_parse_round_trip_for_every_emotion(emotion):
    filename = format_rafd_name(3, "Kid", "male", emotion, "left", angle="045")
    assert filename == f"Rafd045_03_Kid_male_{emotion.lower()}_left.jpg"
    name = parse_rafd_name(filename)
    assert (name.subject, name.emotion, name.gaze, name.angle) == ("03", emotion, "left", "045")


@pytest.mark.parametrize(
    "filename",
    [
        "data/rafd/Rafd090_01_Caucasian_female_angry_frontal.jpg",  # with folders
        "C:\\RaFD\\Rafd090_01_Caucasian_female_angry_frontal.JPG",  # Windows path, upper-case extension
        "Rafd090_1_Caucasian_female_ANGRY_Frontal.png",  # one-digit subject, other case, png
        "Rafd090_01_Caucasian_female_angry_frontal",  # no extension
    ],
)
def test_accepts_paths_case_and_extensions(filename):
    name = parse_rafd_name(filename)
    assert (name.subject, name.emotion, name.gaze, name.angle) == ("01", "Angry", "frontal", FRONTAL_ANGLE)


def test_aliases_of_emotions_are_read_as_canonical():
    assert parse_rafd_name("Rafd090_01_Caucasian_female_contempt_frontal.jpg").emotion == "Contemptuous"


@pytest.mark.parametrize(
    "filename",
    [
        "IMG_0001.jpg",
        "Rafd090_01_Caucasian_female_angry.jpg",  # no gaze
        "Rafd090_01_Caucasian_female_angry_frontal_extra.jpg",
        "Rafd90_01_Caucasian_female_angry_frontal.jpg",  # two-digit angle
        "Rafd030_01_Caucasian_female_angry_frontal.jpg",  # not a RaFD camera
        "Rafd090_01_Caucasian_female_angry_up.jpg",  # not a RaFD gaze
        "Rafd090_AB_Caucasian_female_angry_frontal.jpg",  # subject not a number
        "rafd090_01_Caucasian_female_angry_frontal.jpg",  # the prefix is case-sensitive
    ],
)
def test_malformed_names_are_refused_with_the_name_and_the_rule(filename):
    with pytest.raises(RafdNameError) as info:
        parse_rafd_name(filename)
    assert filename in str(info.value)
    assert isinstance(info.value, EFRError)


def test_unknown_emotion_is_its_own_error_naming_the_label():
    with pytest.raises(UnknownEmotionError, match="bored"):
        parse_rafd_name("Rafd090_01_Caucasian_female_bored_frontal.jpg")


def test_rafd_subject_reads_the_subject_or_gives_blank():
    from efr.io.rafd import rafd_subject

    assert rafd_subject("Rafd090_07_Moroccan_male_sad_left.png") == "07"
    assert rafd_subject("KA.AN1.39.tiff") == ""  # not a RaFD name
    assert rafd_subject("Rafd090_07_Moroccan_male_bored_left.png") == ""  # unknown emotion word

import pytest

from efr.io.emotions import EMOTIONS, UnknownEmotionError, canonical_emotion, sorted_emotions
from efr.io.errors import EFRError


def test_eight_canonical_classes_in_rafd_order():
    assert EMOTIONS == ("Angry", "Contemptuous", "Disgusted", "Fearful", "Happy", "Neutral", "Sad", "Surprised")


@pytest.mark.parametrize("name", EMOTIONS)
def test_canonical_names_map_to_themselves_in_any_case(name):
    assert canonical_emotion(name) == name
    assert canonical_emotion(name.upper()) == name
    assert canonical_emotion(f"  {name.lower()} ") == name


@pytest.mark.parametrize(
    "alias, expected",
    [("anger", "Angry"), ("AN", "Angry"), ("contempt", "Contemptuous"), ("disgust", "Disgusted"),
     ("fear", "Fearful"), ("FE", "Fearful"), ("happiness", "Happy"), ("HA", "Happy"), ("NE", "Neutral"),
     ("sadness", "Sad"), ("SA", "Sad"), ("surprise", "Surprised"), ("SU", "Surprised")],
)
def test_common_aliases(alias, expected):
    assert canonical_emotion(alias) == expected


def test_unknown_label_is_a_user_error_naming_it_and_the_choices():
    with pytest.raises(UnknownEmotionError) as info:
        canonical_emotion("bored")
    assert isinstance(info.value, EFRError)
    assert "'bored'" in str(info.value) and "Surprised" in str(info.value)


def test_sorted_emotions_uses_canonical_order_not_input_order():
    assert sorted_emotions(["Sad", "Angry", "Neutral"]) == ["Angry", "Neutral", "Sad"]

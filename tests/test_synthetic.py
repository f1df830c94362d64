"""The synthetic RaFD stand-in: names, determinism, variety, detectability, CLI."""

import numpy as np
import pytest

from efr.io.emotions import EMOTIONS
from efr.io.errors import EFRError
from efr.faces.detect import detect_faces, load_cascade
from efr.io.rafd import ANGLES, GAZES, parse_rafd_name
from efr.data.synthetic.render import MARKER_NAME, generate_rafd_like, is_synthetic_folder, main, render_face
from efr.data.synthetic.identity import subject_identity

SMALL = (170, 256)  # (width, height): a quarter of RaFD's 681x1024, for speed


def test_render_shape_and_dtype():
    full = render_face(1, "Happy")
    assert full.shape == (1024, 681, 3) and full.dtype == np.uint8
    small = render_face(1, "Happy", size=SMALL)
    assert small.shape == (256, 170, 3) and small.dtype == np.uint8


def test_names_parse_back_for_all_gazes_and_angles(tmp_path):
    paths = generate_rafd_like(tmp_path, subjects=2, emotions=("Happy", "Sad"), gazes=GAZES, angles=ANGLES,
                               size=SMALL)
    assert len(paths) == 2 * 2 * len(GAZES) * len(ANGLES)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in paths] + [MARKER_NAME])  # no temp files
    assert is_synthetic_folder(tmp_path) and not is_synthetic_folder(tmp_path / "elsewhere")
    seen = set()
    for path in paths:
        name = parse_rafd_name(path.name)
        identity = subject_identity(int(name.subject))
        assert (name.ethnicity, name.gender) == (identity.ethnicity, identity.gender)
        seen.add((name.subject, name.emotion, name.gaze, name.angle))
    assert {s for s, *_ in seen} == {"01", "02"}
    assert {e for _, e, *_ in seen} == {"Happy", "Sad"}
    assert {g for *_, g, _ in seen} == set(GAZES)
    assert {a for *_, a in seen} == set(ANGLES)


def test_same_seed_gives_identical_bytes_and_other_seed_does_not(tmp_path):
    kwargs = dict(subjects=2, emotions=("Angry", "Surprised"), gazes=("frontal", "left"), size=SMALL)
    first = generate_rafd_like(tmp_path / "a", seed=3, **kwargs)
    second = generate_rafd_like(tmp_path / "b", seed=3, **kwargs)
    other = generate_rafd_like(tmp_path / "c", seed=4, **kwargs)
    assert [p.name for p in first] == [p.name for p in second]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))
    assert all(a.read_bytes() != c.read_bytes() for a, c in zip(first, other) if a.name == c.name)


def test_rerun_leaves_identical_files_alone(tmp_path):
    paths = generate_rafd_like(tmp_path, subjects=1, emotions=("Neutral",), size=SMALL)
    before = paths[0].stat().st_mtime_ns
    paths[0].touch()
    touched = paths[0].stat().st_mtime_ns
    generate_rafd_like(tmp_path, subjects=1, emotions=("Neutral",), size=SMALL)
    assert paths[0].stat().st_mtime_ns == touched >= before
    paths[0].write_bytes(b"not a photo")
    generate_rafd_like(tmp_path, subjects=1, emotions=("Neutral",), size=SMALL)
    assert paths[0].read_bytes()[:2] == b"\xff\xd8"  # rewritten as a JPEG


def _difference(a, b):
    return float(np.mean(np.abs(a.astype(np.float32) - b.astype(np.float32))))


def test_emotions_of_one_subject_differ():
    faces = [render_face(5, emotion, size=SMALL) for emotion in EMOTIONS]
    for i in range(len(faces)):
        for j in range(i + 1, len(faces)):
            assert _difference(faces[i], faces[j]) > 1.0, (EMOTIONS[i], EMOTIONS[j])


def test_subjects_differ_in_look_and_pixels():
    identities = [subject_identity(s) for s in range(1, 9)]
    assert len({(i.skin, i.hair, i.head_height) for i in identities}) == 8
    assert {i.gender for i in identities} <= {"male", "female"}
    assert {i.ethnicity for i in identities} <= {"Caucasian", "Moroccan"}
    a, b = render_face(1, "Neutral", size=SMALL), render_face(2, "Neutral", size=SMALL)
    assert _difference(a, b) > 3.0


def test_gaze_and_angle_change_the_photo():
    frontal = render_face(3, "Neutral", size=SMALL)
    assert _difference(frontal, render_face(3, "Neutral", gaze="left", size=SMALL)) > 0.5
    assert _difference(frontal, render_face(3, "Neutral", angle="045", size=SMALL)) > 3.0


def test_haar_alt_cascade_finds_exactly_one_face_in_frontal_photos():
    # The project's own detection path: 512 px copy, equalised, scale 1.1, 5 neighbours,
    # faces at least 1/8 of the width.
    cascade = load_cascade("haarcascade_frontalface_alt.xml")
    counts = [
        len(detect_faces(cascade, render_face(subject, emotion), max_side=512, scale_factor=1.1,
                         min_neighbors=5, min_size=0.125))
        for subject in range(1, 7)
        for emotion in EMOTIONS
    ]
    exactly_one = sum(count == 1 for count in counts) / len(counts)
    assert exactly_one >= 0.95, counts


def test_cli_writes_the_expected_count(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--subjects", "2", "--gaze", "all", "--size", "170x256"]) == 0
    assert len(list(tmp_path.glob("Rafd090_*.jpg"))) == 2 * len(EMOTIONS) * len(GAZES)
    assert "48 photos" in capsys.readouterr().out


def test_cli_angles_and_gazes(tmp_path):
    assert main(["--out", str(tmp_path), "--subjects", "1", "--gazes", "left", "right",
                 "--angles", "045", "135", "--size", "170x256"]) == 0
    names = [parse_rafd_name(p.name) for p in tmp_path.glob("*.jpg")]
    assert len(names) == len(EMOTIONS) * 2 * 2
    assert {n.angle for n in names} == {"045", "135"} and {n.gaze for n in names} == {"left", "right"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gaze="up"), "gaze 'up'"),
        (dict(angle="030"), "camera angle '030'"),
        (dict(size=(10, 10)), "too small"),
        (dict(emotion="bored"), "unknown emotion 'bored'"),
        (dict(subject=-1), "subject must be"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(EFRError, match=message):
        render_face(**(dict(subject=1, emotion="Happy", size=SMALL) | kwargs))

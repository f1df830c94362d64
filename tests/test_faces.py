"""Face detection on synthetic photos, and the geometry of the square crop."""

import cv2
import numpy as np
import pytest

from efr.faces import detect as faces
from efr.crop.options import CropOptions
from efr.io.emotions import EMOTIONS
from efr.io.errors import EFRError
from efr.data.synthetic.render import render_face

SMALL = (170, 256)  # (width, height): a RaFD frame at a quarter of its size


@pytest.fixture(scope="module")
def cascade():
    return faces.load_cascade()


@pytest.fixture(scope="module")
def photos():
    return [render_face(subject, emotion, size=SMALL) for subject in (1, 2) for emotion in EMOTIONS]


@pytest.mark.parametrize("max_side,min_size", [(faces.DETECT_MAX_SIDE, faces.DEFAULT_MIN_FACE), (192, 0.2)])
def test_finds_one_central_face_in_nearly_every_synthetic_photo(cascade, photos, max_side, min_size):
    found = [faces.detect_faces(cascade, photo, max_side=max_side, min_size=min_size) for photo in photos]
    assert sum(bool(boxes) for boxes in found) >= 0.95 * len(photos)
    for photo, boxes in zip(photos, found):
        if not boxes:
            continue
        x, y, w, h = boxes[0]
        height, width = photo.shape[:2]
        # The head sits in the upper middle of a RaFD-style frame and fills a good part of its width.
        assert abs(x + w / 2 - width / 2) < 0.15 * width
        assert 0.15 * height < y + h / 2 < 0.6 * height
        assert 0.25 * width < w < 0.9 * width


def test_crop_settings_find_the_same_face_as_a_full_resolution_search(cascade):
    photo = render_face(4, "Happy", size=(681, 1024))
    full = cascade.detectMultiScale(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY), 1.1, 5)
    options = CropOptions()
    boxes = faces.detect_faces(cascade, photo, max_side=options.detect_max_side, min_size=options.min_face)
    assert len(full) >= 1 and len(boxes) == 1
    fx, fy, fw, fh = max(full, key=lambda b: b[2] * b[3])
    x, y, w, h = boxes[0]
    # Detected on a 256 px copy, mapped back: within a few percent of the full-resolution box.
    assert abs(w - fw) < 0.15 * fw and abs(x - fx) < 0.1 * fw and abs(y - fy) < 0.1 * fw


def test_largest_face_comes_first(cascade):
    big = render_face(1, "Neutral", size=(340, 512))
    small = cv2.resize(render_face(2, "Neutral", size=(340, 512)), (170, 256))
    frame = np.full((512, 700, 3), 235, np.uint8)
    frame[:, :340] = big
    frame[100:356, 450:620] = small
    boxes = faces.detect_faces(cascade, frame, min_size=0.1)
    assert len(boxes) == 2
    assert boxes[0][2] > boxes[1][2] and boxes[0][0] < 340 <= boxes[1][0]


def test_blank_photo_has_no_face(cascade):
    assert faces.detect_faces(cascade, np.full((256, 170, 3), 128, np.uint8)) == []


def test_grey_input_is_accepted(cascade, photos):
    grey = cv2.cvtColor(photos[0], cv2.COLOR_BGR2GRAY)
    assert faces.detect_faces(cascade, grey) == faces.detect_faces(cascade, photos[0])


def test_square_box_centres_and_grows_by_the_margin():
    assert faces.square_box((40, 50, 20, 30), (200, 200)) == (35, 50, 30, 30)
    x, y, w, h = faces.square_box((90, 90, 20, 20), (200, 200), margin=0.5)
    assert (w, h) == (40, 40) and (x + w / 2, y + h / 2) == (100, 100)


@pytest.mark.parametrize(
    "box,expected",
    [
        ((0, 0, 40, 40), (0, 0, 48, 48)),  # top-left corner: shifted inside, not cut smaller
        ((130, 80, 40, 40), (102, 52, 48, 48)),  # bottom-right corner
        ((-10, 90, 40, 40), (0, 52, 48, 48)),  # box partly outside the frame
    ],
)
def test_square_box_is_shifted_to_stay_inside_the_frame(box, expected):
    assert faces.square_box(box, (100, 150, 3), margin=0.1) == expected


def test_square_box_larger_than_the_frame_is_clipped_to_its_shorter_side():
    x, y, w, h = faces.square_box((10, 10, 90, 90), (100, 150), margin=0.5)
    assert (w, h) == (100, 100) and y == 0 and 0 <= x <= 50


def test_center_box_is_the_largest_centred_square():
    assert faces.center_box((100, 150, 3)) == (25, 0, 100, 100)
    assert faces.center_box((150, 100)) == (0, 25, 100, 100)


@pytest.mark.parametrize("side", [40, 300])
def test_crop_square_resizes_to_the_requested_size(side):
    image = np.random.default_rng(0).integers(0, 255, (400, 400, 3), np.uint8)
    for size in (48, 256):
        crop = faces.crop_square(image, (10, 20, side, side), size)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8


def test_cascade_by_name_by_path_and_unknown(tmp_path):
    by_name = faces.cascade_path("haarcascade_frontalface_default.xml")
    assert by_name.is_file() and faces.cascade_path(str(by_name)) == by_name
    with pytest.raises(EFRError, match="haarcascade_frontalface_alt.xml"):
        faces.cascade_path("no_such_cascade.xml")
    (tmp_path / "broken.xml").write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(EFRError, match="broken.xml"):
        faces.load_cascade(tmp_path / "broken.xml")


def test_find_faces_takes_a_second_look_at_a_larger_copy(cascade):
    photo = render_face(3, "Happy", size=(340, 512))
    # At 48 px the face is smaller than the cascade's 20 px window: only the retry can find it.
    assert faces.detect_faces(cascade, photo, max_side=48) == []
    assert len(faces.find_faces(cascade, photo, max_side=48, retry_max_side=512)) == 1
    assert faces.find_faces(cascade, photo, max_side=48, retry_max_side=None) == []  # no retry asked for

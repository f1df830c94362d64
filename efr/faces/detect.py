"""Face detection and cropping, shared by crop.py and predict.py.

One code path for both stages, so that a face looks the same to the model at
prediction time as it did in training.  Detection runs on a downscaled grey copy
(Haar cascades gain nothing from RaFD's 681x1024 frames but time) and the box is
mapped back to the full frame; the crop is a square around the face with a margin,
clipped to the frame, resized to the training size.
"""

from pathlib import Path

import cv2
import numpy as np

from efr.io.errors import EFRError

DEFAULT_IMAGE_SIZE = 256  # side of the square face crops and of the seed CNN's input
DEFAULT_CASCADE = "haarcascade_frontalface_alt.xml"  # the original project's choice
DEFAULT_MARGIN = 0.0  # extra border around the detected box, as a fraction of its side
# Detection runs on a grey copy whose longest side is DETECT_MAX_SIDE: faces in posed photos
# fill 40-50% of the frame, so 256 px loses none and is several times faster than the full
# frame; a photo with no face there gets a second look at RETRY_MAX_SIDE.
DETECT_MAX_SIDE = 256
RETRY_MAX_SIDE = 512
DEFAULT_SCALE_FACTOR = 1.1  # cascade pyramid step (OpenCV's default)
DEFAULT_MIN_NEIGHBORS = 5  # overlapping hits needed to accept a face (fewer: more false faces)
DEFAULT_MIN_FACE = 0.2  # smallest face side, as a fraction of the image's shorter side (lower for group photos)


def cascade_path(name_or_path=DEFAULT_CASCADE):
    """Resolve a cascade given as a file path or as a name bundled with OpenCV."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = Path(cv2.data.haarcascades) / path.name
    if bundled.is_file():
        return bundled
    choices = sorted(p.name for p in Path(cv2.data.haarcascades).glob("haarcascade_frontalface*.xml"))
    raise EFRError(f"Haar cascade {name_or_path!r} not found: give a file path or one of {', '.join(choices)}")


def load_cascade(name_or_path=DEFAULT_CASCADE):
    path = cascade_path(name_or_path)
    try:
        cascade = cv2.CascadeClassifier(str(path))
    except (cv2.error, SystemError) as err:  # OpenCV 4.x raises SystemError for some bad files
        raise EFRError(f"{path}: not a valid Haar cascade XML file ({str(err).strip().splitlines()[-1]})") from err
    if cascade.empty():
        raise EFRError(f"{path}: not a valid Haar cascade XML file")
    return cascade


def small_grey(image, max_side):
    """A grey copy of a BGR image whose longer side is at most ``max_side``; return (copy, its scale)."""
    return downscale(image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), max_side)


def downscale(image, max_side):
    """A copy of ``image`` (grey or colour) whose longer side is at most ``max_side``; return (copy, its scale).

    Area averaging by a whole factor first (OpenCV's fast path for INTER_AREA, ~3x faster
    than a fractional factor on a 681x1024 frame), then, for what remains, a small
    fractional step.  The whole-factor step drops the last rows/columns that do not fill a
    block (fewer than the factor), so a box maps back by dividing by ``scale``.
    """
    height, width = image.shape[:2]
    longer = max(height, width)
    if longer <= max_side:
        return image, 1.0
    factor = longer // max_side  # whole-factor step: >= 1
    if factor > 1:
        image = cv2.resize(image[: height - height % factor, : width - width % factor],
                           (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    scale = 1.0 / factor
    rest = max_side / max(image.shape[:2])
    if rest < 1.0:  # the fractional remainder, on an image already near the target size
        image = cv2.resize(image, (round(image.shape[1] * rest), round(image.shape[0] * rest)),
                           interpolation=cv2.INTER_AREA)
        scale *= image.shape[1] / (width // factor)
    return image, scale


def detect_faces(
    cascade,
    image,
    max_side=DETECT_MAX_SIDE,
    scale_factor=DEFAULT_SCALE_FACTOR,
    min_neighbors=DEFAULT_MIN_NEIGHBORS,
    min_size=DEFAULT_MIN_FACE,
    equalize=False,
):
    """Detect faces in a BGR image; return boxes (x, y, w, h) in full-frame pixels, largest first.

    ``min_size`` is the smallest face side as a fraction of the shorter image side.
    ``equalize`` stretches the grey copy's histogram first; off by default because the
    cascade already normalises each window's contrast, and on light backgrounds the
    global stretch lost faces (synthetic RaFD-like frames) while finding no extra
    ones on RaFD and JAFFE photos.
    """
    grey, scale = small_grey(image, max_side)
    if equalize:
        grey = cv2.equalizeHist(grey)
    smallest = max(20, int(min(grey.shape) * min_size))
    found = cascade.detectMultiScale(
        grey, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(smallest, smallest)
    )
    boxes = [tuple(int(round(v / scale)) for v in box) for box in np.asarray(found).reshape(-1, 4)]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


def find_faces(cascade, image, max_side=DETECT_MAX_SIDE, retry_max_side=RETRY_MAX_SIDE, **options):
    """``detect_faces`` on a small copy; when that finds nothing, once more on a larger copy.

    The fast pass settles nearly every photo; the few faces it misses (close to the
    cascade's acceptance threshold at that scale) get the finer search the full frame
    would have given them, at the cost of a second pass on those photos only.
    """
    boxes = detect_faces(cascade, image, max_side, **options)
    if boxes or not retry_max_side or retry_max_side <= max_side or max(image.shape[:2]) <= max_side:
        return boxes
    return detect_faces(cascade, image, retry_max_side, **options)


def square_box(box, frame_shape, margin=DEFAULT_MARGIN):
    """Grow ``box`` by ``margin`` into a square around its centre, kept inside the frame."""
    x, y, w, h = box
    frame_h, frame_w = frame_shape[:2]
    side = int(round(max(w, h) * (1.0 + 2.0 * margin)))
    side = min(side, frame_w, frame_h)
    cx, cy = x + w / 2.0, y + h / 2.0
    left = int(round(min(max(cx - side / 2.0, 0), frame_w - side)))
    top = int(round(min(max(cy - side / 2.0, 0), frame_h - side)))
    return left, top, side, side


def center_box(frame_shape):
    """The largest centred square: the fallback crop when no face is found."""
    frame_h, frame_w = frame_shape[:2]
    side = min(frame_h, frame_w)
    return (frame_w - side) // 2, (frame_h - side) // 2, side, side


def crop_square(image, box, size=DEFAULT_IMAGE_SIZE):
    """Cut ``box`` (already square and inside the frame) and resize it to size x size."""
    x, y, w, h = box
    face = image[y : y + h, x : x + w]
    interpolation = cv2.INTER_AREA if w >= size else cv2.INTER_CUBIC
    return cv2.resize(face, (size, size), interpolation=interpolation)

"""Eye-levelled face crops from landmarks (crop.py --align eyes, and predict.py for such models).

The crop is the square a Haar crop would be, turned so that the eyes are level:
its side is ``ALIGN_SIDE`` eye distances and its centre ``ALIGN_DOWN`` eye distances
below the midpoint of the eyes, both measured, not assumed.  Framing matters: the
FER2013 network learnt on loosely framed faces (forehead to chin), and the product's
fer2013 transfer lost accuracy on tighter eye-levelled crops (issue 10), so a levelled
crop keeps the framing of the Haar crops the models were trained and measured on.

Measured on the Haar crops of ``efr.faces.detect`` (square box, no margin) with the eye
centres of ``efr.faces.landmarks`` (bench/accuracy_cv.py prints the same figures):

============  ======  ===========================  ===========================
set           faces   side / eye distance (median)  centre below eyes (median)
============  ======  ===========================  ===========================
JAFFE          213    2.52                          0.26
RaFD frames      8    2.61                          0.24
synthetic       32    2.56                          0.28
============  ======  ===========================  ===========================
"""

import cv2
import numpy as np

from efr.faces.landmarks import eye_angle, eye_centres

ALIGN_MODES = ("none", "eyes")
ALIGN_SIDE = 2.55  # crop side in eye distances (eye centre to eye centre)
ALIGN_DOWN = 0.25  # crop centre below the eyes' midpoint, in eye distances


def aligned_matrix(points, size, margin=0.0, side_ratio=ALIGN_SIDE, down_ratio=ALIGN_DOWN):
    """2x3 affine map from the photo to a size x size crop with the eyes level.

    ``margin`` grows the square by that fraction of its side on each side, as
    ``efr.faces.detect.square_box`` does for Haar crops.
    """
    right, left = eye_centres(points)
    distance = float(np.hypot(*(left - right)))
    if distance <= 0:
        raise ValueError("the two eye centres coincide")
    angle = eye_angle(points)
    mid = (right + left) / 2.0
    theta = np.radians(angle)
    # "down" in the levelled face is perpendicular to the eye line, pointing to the chin.
    centre = mid + down_ratio * distance * np.array([-np.sin(theta), np.cos(theta)])
    side = side_ratio * distance * (1.0 + 2.0 * margin)
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), size / side)
    matrix[0, 2] += size / 2.0 - centre[0]
    matrix[1, 2] += size / 2.0 - centre[1]
    return matrix


def transform_points(points, matrix):
    """Apply a 2x3 affine map to (n, 2+) points; a third (depth) column is scaled alike."""
    points = np.asarray(points, dtype=np.float32)
    out = points.copy()
    out[:, :2] = points[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    if points.shape[1] > 2:
        out[:, 2:] = points[:, 2:] * float(np.hypot(matrix[0, 0], matrix[0, 1]))
    return out


def align_crop(image, points, size, margin=0.0):
    """(size x size eye-levelled crop, the landmarks in crop pixels).

    Parts of the square outside the photo are filled by repeating its edge, so a face
    near the border gives no black wedge.
    """
    matrix = aligned_matrix(points, size, margin)
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    if scale < 0.5:  # shrink in steps: warpAffine's INTER_AREA is bilinear, which aliases when shrinking a lot
        factor = 0.5 / scale
        image = cv2.resize(image, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
        points = np.asarray(points, dtype=np.float32) / np.float32(factor)
        matrix = aligned_matrix(points, size, margin)
        interpolation = cv2.INTER_LINEAR
    crop = cv2.warpAffine(image, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    return crop, transform_points(points, matrix)


def crop_matrix(box, size):
    """The 2x3 map of an axis-aligned square crop (x, y, side, side) resized to size x size."""
    x, y, w, _ = box
    scale = size / float(w)
    return np.array([[scale, 0.0, -x * scale], [0.0, scale, -y * scale]], dtype=np.float64)

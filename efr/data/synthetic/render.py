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

    python -m efr.data.synthetic.render --out data/synthetic --subjects 10 --gaze all
"""

import argparse
import dataclasses
import math
import numbers
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np
from tqdm import tqdm

from efr.io.emotions import EMOTIONS, canonical_emotion
from efr.io.errors import EFRError
from efr.io.imageio import encode_image, write_bytes_atomic
from efr.io.rafd import ANGLES, FRONTAL_ANGLE, GAZES, format_rafd_name

RAFD_SIZE = (681, 1024)  # (width, height) of a RaFD photo
JPEG_QUALITY = 95
# Written beside the photos, so that reports made from them can say the data is synthetic.
MARKER_NAME = "EFR_SYNTHETIC.txt"
MARKER_TEXT = ("These photos were drawn by efr.data.synthetic.render (cartoon faces, not people). Models trained or\n"
               "evaluated on them show that the code works, not how it does on real photos.\n")


class SyntheticFaceError(EFRError):
    """Arguments that cannot describe a synthetic photo (bad gaze, angle, size...)."""


# ----------------------------------------------------------------------------------
# Who is in the photo: one identity per subject number.
#
# Geometry is in "head units": the skull outline is an ellipse 2 units wide centred
# on (0, 0), u grows to the image's right and v downwards.  Colours are BGR floats.


@dataclass(frozen=True)
class Identity:
    subject: int
    ethnicity: str  # as in RaFD file names: "Caucasian" or "Moroccan"
    gender: str  # "male" or "female"
    head_scale: float  # head half-width as a fraction of the frame width
    head_height: float  # half-height of the skull ellipse
    jaw_square: float  # 0 = round chin, 1 = square jaw
    chin_narrow: float  # how much the face narrows towards the chin
    eye_spacing: float  # distance of each eye centre from the midline
    eye_level: float  # eye line (0 = middle of the skull)
    eye_width: float  # half-width of one eye
    eye_tilt: float  # outer corners higher by this fraction of eye_width
    brow_level: float
    brow_thickness: float
    brow_arch: float
    nose_width: float  # half-width of the nose wings
    nose_level: float  # bottom of the nose
    mouth_width: float  # half-width of the closed mouth
    mouth_level: float
    upper_lip: float  # lip thicknesses
    lower_lip: float
    ear_size: float
    neck_width: float
    shoulder_width: float
    skin: tuple
    hair: tuple
    iris: tuple
    lips: tuple
    background: tuple
    shirt: tuple
    hair_style: str  # "short", "side", "long", "curly" or "receding"
    hairline: float  # v of the hairline at the midline
    stubble: float  # 0 = none, 1 = dark stubble
    resting_smile: float  # how this face sits at rest: a bias added to every photo
    resting_brow: float
    resting_eyes: float
    expressiveness: float  # scales every expression of this subject
    contempt_side: int  # which mouth corner rises in contempt: -1 left, +1 right
    texture_seed: int  # hair strands and other per-person details


def _mix(a, b, t):
    """Blend two BGR colours: t=0 gives a, t=1 gives b."""
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))


def _scale(color, k):
    return tuple(float(min(255.0, c * k)) for c in color)


_LIGHT_SKIN, _MID_SKIN, _OLIVE_SKIN, _BROWN_SKIN = (
    (176, 196, 238), (122, 150, 205), (112, 145, 192), (70, 100, 150))
_HAIR_COLOURS = {  # name: (BGR, weight for Caucasian, weight for Moroccan)
    "black": ((24, 24, 28), 0.05, 0.6),
    "dark brown": ((28, 38, 58), 0.3, 0.4),
    "brown": ((40, 62, 92), 0.3, 0.0),
    "light brown": ((68, 98, 138), 0.15, 0.0),
    "blond": ((105, 155, 196), 0.12, 0.0),
    "red": ((38, 66, 140), 0.05, 0.0),
    "grey": ((140, 142, 146), 0.03, 0.0),
}
_IRIS_COLOURS = ((30, 52, 92), (20, 30, 48), (150, 112, 62), (88, 118, 78), (48, 88, 110))


def subject_identity(subject, seed=0):
    """The look of subject number ``subject``: the same for every photo of them."""
    subject, seed = _check_number("subject", subject), _check_number("seed", seed)
    rng = np.random.default_rng([seed, subject, 0x1D])
    moroccan = rng.random() < 0.3  # RaFD's Moroccan-Dutch models are all men
    ethnicity = "Moroccan" if moroccan else "Caucasian"
    gender = "male" if moroccan or rng.random() < 0.5 else "female"
    male = gender == "male"
    u = rng.uniform

    if moroccan:
        skin = _mix(_OLIVE_SKIN, _BROWN_SKIN, u(0.0, 0.7))
    else:
        skin = _mix(_LIGHT_SKIN, _MID_SKIN, u(0.0, 0.6))
    names = list(_HAIR_COLOURS)
    weights = np.array([_HAIR_COLOURS[n][2 if moroccan else 1] for n in names])
    hair = _HAIR_COLOURS[names[rng.choice(len(names), p=weights / weights.sum())]][0]
    hair = _scale(hair, u(0.85, 1.15))
    iris = _IRIS_COLOURS[0 if moroccan else rng.integers(len(_IRIS_COLOURS))]
    lips = (skin[0] * 0.72, skin[1] * 0.64, min(255.0, skin[2] * 0.92))
    grey = u(222, 242)
    background = tuple(float(grey + t) for t in rng.uniform(-5, 5, 3))
    shirt = _scale((28, 28, 30), u(0.7, 1.6))

    if male:
        style = rng.choice(["short", "short", "side", "curly", "receding"])
    else:
        style = rng.choice(["long", "long", "side", "curly"])
    hairline = {"receding": u(-1.08, -0.98)}.get(style, u(-0.9, -0.78))

    return Identity(
        subject=int(subject),
        ethnicity=ethnicity,
        gender=gender,
        head_scale=u(0.2, 0.225) * (1.0 if male else 0.96),
        head_height=u(1.26, 1.4),
        jaw_square=u(0.4, 1.0) if male else u(0.0, 0.5),
        chin_narrow=u(0.12, 0.3),
        eye_spacing=u(0.37, 0.43),
        eye_level=u(-0.04, 0.04),
        eye_width=u(0.17, 0.2),
        eye_tilt=u(-0.05, 0.15),
        brow_level=u(-0.36, -0.3),
        brow_thickness=u(0.07, 0.095) if male else u(0.05, 0.07),
        brow_arch=u(0.02, 0.06) if male else u(0.04, 0.08),
        nose_width=u(0.15, 0.2) if male else u(0.13, 0.17),
        nose_level=u(0.4, 0.46),
        mouth_width=u(0.3, 0.37),
        mouth_level=u(0.72, 0.78),
        upper_lip=u(0.045, 0.065) if male else u(0.06, 0.08),
        lower_lip=u(0.06, 0.08) if male else u(0.075, 0.095),
        ear_size=u(0.9, 1.1),
        neck_width=u(0.48, 0.56) if male else u(0.4, 0.46),
        shoulder_width=u(2.5, 2.9) if male else u(2.2, 2.5),
        skin=skin,
        hair=hair,
        iris=iris,
        lips=lips,
        background=background,
        shirt=shirt,
        hair_style=str(style),
        hairline=hairline,
        stubble=u(0.0, 0.5) if male and rng.random() < 0.35 else 0.0,
        resting_smile=u(-0.15, 0.15),
        resting_brow=u(-0.1, 0.1),
        resting_eyes=u(-0.1, 0.1),
        expressiveness=u(0.6, 1.1),
        contempt_side=int(rng.choice([-1, 1])),
        texture_seed=int(rng.integers(2**31)),
    )


# ----------------------------------------------------------------------------------
# What the face does: each emotion is a set of facial actions, loosely after FACS.

@dataclass(frozen=True)
class Expression:
    """Strengths of facial actions; 1.0 is a clear, typical expression."""

    brow_raise: float = 0.0  # whole brows up (surprise)
    brow_inner: float = 0.0  # inner ends of the brows up (sadness, fear)
    brow_lower: float = 0.0  # brows down and together (anger)
    eye_open: float = 0.0  # signed: > 0 wide open, < 0 narrowed
    lid_tight: float = 0.0  # upper lids pressed down into a glare
    cheek_raise: float = 0.0  # cheeks push the lower lids up (a real smile)
    smile: float = 0.0  # signed: > 0 mouth corners up, < 0 down
    smile_one_side: float = 0.0  # one corner up and out (contempt)
    mouth_open: float = 0.0  # jaw drop
    mouth_round: float = 0.0  # an O rather than a slit
    mouth_stretch: float = 0.0  # signed: > 0 lips pulled wide, < 0 narrowed
    upper_lip_raise: float = 0.0  # upper lip lifted off the teeth (disgust)
    lip_press: float = 0.0  # lips pressed thin (anger)
    nose_wrinkle: float = 0.0
    chin_raise: float = 0.0  # lower lip pushed up (sadness)
    nostril_flare: float = 0.0


_SIGNED_ACTIONS = {"eye_open", "smile", "mouth_stretch"}

EMOTION_EXPRESSIONS = {
    "Angry": Expression(brow_lower=1.0, eye_open=-0.1, lid_tight=0.8, lip_press=1.0,
                        mouth_stretch=-0.15, nostril_flare=0.6, smile=-0.15),
    "Contemptuous": Expression(smile_one_side=1.0, eye_open=-0.1, lip_press=0.3),
    "Disgusted": Expression(nose_wrinkle=1.0, upper_lip_raise=1.0, brow_lower=0.6, eye_open=-0.35,
                            cheek_raise=0.5, smile=-0.4, chin_raise=0.3, nostril_flare=0.4),
    "Fearful": Expression(brow_raise=0.6, brow_inner=0.8, brow_lower=0.3, eye_open=0.8,
                          mouth_open=0.45, mouth_stretch=0.35, smile=-0.3),
    "Happy": Expression(smile=1.0, cheek_raise=0.8, eye_open=-0.3, mouth_open=0.25, mouth_stretch=0.25),
    "Neutral": Expression(),
    "Sad": Expression(brow_inner=1.0, brow_lower=0.35, smile=-0.8, eye_open=-0.2, lid_tight=0.2,
                      chin_raise=0.7, mouth_stretch=-0.05),
    "Surprised": Expression(brow_raise=1.0, eye_open=0.8, mouth_open=1.0, mouth_round=0.8,
                            mouth_stretch=-0.25),
}

def _photo_expression(identity, emotion, rng):
    """The emotion's actions at this subject's and this photo's strength, plus twitches."""
    base = EMOTION_EXPRESSIONS[emotion]
    strength = identity.expressiveness * rng.uniform(0.8, 1.15)
    values = {}
    for field in dataclasses.fields(Expression):
        value = getattr(base, field.name)
        value = value * strength + rng.normal(0.0, 0.08 if value else 0.04)
        values[field.name] = value if field.name in _SIGNED_ACTIONS else max(0.0, value)
    values["smile"] += identity.resting_smile
    values["brow_raise"] = max(0.0, values["brow_raise"] + identity.resting_brow)
    values["eye_open"] += identity.resting_eyes
    return Expression(**values)


# ----------------------------------------------------------------------------------
# Where the head is: projection from head units to pixels.


class _Head:
    """Maps head units to pixels for a head at (cx, cy) turned by yaw and tilted by roll.

    Points on the face lie on an ellipsoid (half-height ``height``), so turning the
    head slides them sideways and squashes them; points on the outline are scaled only.
    """

    def __init__(self, cx, cy, radius, yaw, roll, height, depth=1.0):
        self.cx, self.cy, self.r, self.height = cx, cy, radius, height
        self.cos_yaw, self.sin_yaw = math.cos(yaw), math.sin(yaw)
        self.cos_roll, self.sin_roll = math.cos(roll), math.sin(roll)
        self.depth = depth
        self.outline_width = math.hypot(self.cos_yaw, depth * self.sin_yaw)

    def _pixels(self, x, y):
        xr = x * self.cos_roll - y * self.sin_roll
        yr = x * self.sin_roll + y * self.cos_roll
        return np.stack([self.cx + self.r * xr, self.cy + self.r * yr], axis=-1)

    def surface(self, u, v, dz=0.0):
        """Pixels of face points (u, v); dz lifts a point off the surface (nose tip)."""
        u, v = np.broadcast_arrays(np.asarray(u, float), np.asarray(v, float))
        z = self.depth * np.sqrt(np.clip(1.0 - u * u - (v / self.height) ** 2, 0.0, 1.0)) + dz
        return self._pixels(u * self.cos_yaw + z * self.sin_yaw, v)

    def outline(self, u, v):
        """Pixels of silhouette points (u, v): the outline widens as the head turns."""
        u, v = np.broadcast_arrays(np.asarray(u, float), np.asarray(v, float))
        return self._pixels(u * self.outline_width, v)

    def facing(self, u, v=0.0):
        """> 0 where the surface at (u, v) faces the camera."""
        z = self.depth * math.sqrt(max(0.0, 1.0 - u * u - (v / self.height) ** 2))
        return -u * self.sin_yaw + z * self.cos_yaw

    def units(self, k):
        """A length of k head units in pixels."""
        return k * self.r


@dataclass(frozen=True)
class _Pose:
    cx: float
    cy: float
    radius: float
    yaw: float  # radians, 0 = facing the camera
    roll: float
    light_gain: float
    light_x: float  # direction of the main light, for the face shading
    light_y: float


def _photo_pose(identity, angle, size, rng):
    width, height = size
    radius = identity.head_scale * width * rng.uniform(0.97, 1.03)
    yaw = math.radians(int(angle) - 90) + math.radians(rng.normal(0.0, 1.5))
    return _Pose(
        cx=width * (0.5 + rng.uniform(-0.015, 0.015)),
        cy=height * (0.385 + rng.uniform(-0.012, 0.012)),
        radius=radius,
        yaw=yaw,
        roll=math.radians(rng.normal(0.0, 2.0)),
        light_gain=rng.uniform(0.92, 1.05),
        light_x=rng.uniform(-0.35, 0.35),
        light_y=rng.uniform(-0.35, -0.1),
    )


# ----------------------------------------------------------------------------------
# Drawing helpers: sub-pixel, anti-aliased OpenCV primitives.

_SHIFT = 4  # fractional bits for cv2 drawing coordinates
_ONE = 1 << _SHIFT


def _fixed(points):
    return np.round(np.asarray(points, float) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _fill(img, points, color):
    cv2.fillPoly(img, [_fixed(points)], color, cv2.LINE_AA, _SHIFT)


def _line(img, points, color, thickness):
    thickness = max(1, int(round(thickness)))
    cv2.polylines(img, [_fixed(points)], False, color, thickness, cv2.LINE_AA, _SHIFT)


def _circle(img, center, radius, color):
    center = tuple(int(round(c * _ONE)) for c in center)
    cv2.circle(img, center, max(1, int(round(radius * _ONE))), color, -1, cv2.LINE_AA, _SHIFT)


def _ellipse(img, center, axes, color):
    center = tuple(int(round(c * _ONE)) for c in center)
    axes = tuple(max(1, int(round(a * _ONE))) for a in axes)
    cv2.ellipse(img, center, axes, 0, 0, 360, color, -1, cv2.LINE_AA, _SHIFT)


def _draw_clipped(img, clip_points, draw):
    """Run draw(patch, origin) on a copy of the area under clip_points, keep it inside only.

    Used for what a face shows through an opening: irises inside the eyelids, teeth
    inside the lips.
    """
    clip_points = np.asarray(clip_points, float)
    height, width = img.shape[:2]
    x0, y0 = np.floor(clip_points.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(clip_points.max(axis=0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return
    origin = np.array([x0, y0], float)
    region = img[y0:y1, x0:x1]
    patch = region.copy()
    draw(patch, origin)
    mask = np.zeros(patch.shape[:2], np.uint8)
    _fill(mask, clip_points - origin, 255)
    np.copyto(region, patch, where=mask[..., None] > 127)


def _ellipse_points(u0, v0, au, av, n=40, start=0.0, stop=2 * math.pi):
    t = np.linspace(start, stop, n)
    return u0 + au * np.cos(t), v0 + av * np.sin(t)


# ----------------------------------------------------------------------------------
# The parts of a portrait, back to front.


def _background(size, identity, pose):
    width, height = size
    ramp = np.linspace(1.03, 0.95, height, dtype=np.float32)[:, None] * pose.light_gain
    column = np.clip(ramp * np.array(identity.background, np.float32), 0, 255).astype(np.uint8)
    return cv2.repeat(column[:, None, :], 1, width)


def _skull_outline(identity, expr, n=90):
    """The head outline in head units: an egg, squarer at the jaw, longer when the jaw drops."""
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    lower = s > 0
    chin = identity.head_height + 0.12 * expr.mouth_open
    exponent = np.where(lower, 2.0 / (2.0 + 1.4 * identity.jaw_square), 1.0)
    u = np.sign(c) * np.abs(c) ** exponent
    v = np.where(lower, chin, identity.head_height) * s
    u = u * (1.0 - np.where(lower, identity.chin_narrow * s**2, 0.0))
    return u, v


def _neck_base(identity, pose):
    return pose.cy + pose.radius * (identity.head_height + 0.45)


def _neck(img, identity, pose, skin):
    """The neck does not turn or tilt with the head."""
    cx, r = pose.cx, pose.radius
    neck_w = identity.neck_width * r
    base_y = _neck_base(identity, pose)
    neck = [(cx - neck_w, pose.cy + 0.3 * r), (cx + neck_w, pose.cy + 0.3 * r),
            (cx + neck_w * 1.05, base_y), (cx + neck_w * 1.25, base_y + 0.6 * r),
            (cx - neck_w * 1.25, base_y + 0.6 * r), (cx - neck_w * 1.05, base_y)]
    _fill(img, neck, _scale(skin, 0.86))


def _shirt(img, identity, pose):
    """A dark T-shirt, as RaFD's models wear, drawn over the bottom of the neck."""
    height = img.shape[0]
    cx, r = pose.cx, pose.radius
    neck_w = identity.neck_width * r
    base_y = _neck_base(identity, pose)
    shoulder = identity.shoulder_width * r
    t = np.linspace(0.0, 1.0, 24)
    slope_x = neck_w * 1.15 + (shoulder - neck_w * 1.15) * t
    slope_y = base_y + 0.1 * r + 0.85 * r * t**1.6 - 0.15 * r * np.sin(np.pi * t)
    collar_t = np.linspace(-1.0, 1.0, 24)
    collar_x = cx + neck_w * 1.15 * collar_t
    collar_y = base_y + 0.1 * r + 0.38 * r * (1.0 - collar_t**2) ** 0.8
    right = np.stack([cx + slope_x, slope_y], 1)
    left = np.stack([cx - slope_x, slope_y], 1)[::-1]
    shirt = np.concatenate([
        [(cx - shoulder - 0.3 * r, height + 5)], left,
        np.stack([collar_x, collar_y], 1), right,
        [(cx + shoulder + 0.3 * r, height + 5)]])
    _fill(img, shirt, identity.shirt)
    _line(img, np.stack([collar_x, collar_y], 1), _scale(identity.shirt, 1.6), 0.03 * r)


def _back_hair(img, head, identity):
    """Long hair falls behind the head to the shoulders."""
    if identity.hair_style != "long":
        return
    b = identity.head_height
    u1, v1 = _ellipse_points(0.0, -0.05, 1.18, b * 1.05, 40, math.pi * 0.95, math.pi * 2.05)
    u = np.concatenate([[-1.25, -1.3], u1, [1.3, 1.25]])
    v = np.concatenate([[b + 0.9, 0.2], v1, [0.2, b + 0.9]])
    _fill(img, head.outline(u, v), _scale(identity.hair, 0.8))


def _ears(img, head, identity, skin, near_only):
    """Ears peek out behind the cheeks; on a turned head the near ear is seen whole."""
    size = identity.ear_size
    for side in (-1, 1):
        near = head.facing(side * 0.98) > 0.25
        if near_only != near:
            continue
        if near:
            center = head.surface(side * 1.0, 0.14)
            axes = np.array([0.05 + 0.08 * abs(head.sin_yaw), 0.24]) * size * head.r
            _ellipse(img, center, axes, _scale(skin, 0.93))
            t = np.linspace(-0.6 * math.pi, 0.6 * math.pi, 12) + (math.pi if side * head.sin_yaw > 0 else 0)
            rim = center + 0.6 * np.stack([axes[0] * np.cos(t), axes[1] * np.sin(t)], 1)
            _line(img, rim, _scale(skin, 0.7), head.units(0.02))
            continue
        t = np.linspace(-math.pi / 2, math.pi / 2, 20)
        u = side * (0.93 + 0.17 * size * np.cos(t))
        v = 0.14 + 0.24 * size * np.sin(t)
        _fill(img, head.surface(u, v), _scale(skin, 0.93))
        inner = head.surface(side * (0.95 + 0.09 * size * np.cos(t[3:-3])), 0.15 + 0.15 * size * np.sin(t[3:-3]))
        _line(img, inner, _scale(skin, 0.72), head.units(0.02))


def _hairline(identity):
    """The hairline from the right temple over the forehead to the left temple."""
    style = identity.hair_style
    side_v = -0.25 if style == "receding" else -0.1
    s = np.linspace(0.0, 1.0, 30)
    u = 0.98 * np.cos(math.pi * s)
    v = side_v + (identity.hairline - side_v) * np.sin(math.pi * s) ** 0.6
    if style == "side":  # a fringe swept to one side, lower on that side
        v = v + 0.16 * np.sin(math.pi * s) * np.clip((s - 0.35) * 3, 0, 1)
    if style == "receding":  # the temples recede further than the middle
        v = v - 0.12 * np.sin(2 * math.pi * s) ** 2
    return u, v


def _hair_cap(img, head, identity, rng):
    """Hair over the top (and, on a turned head, the back) of the head, in the subject's style."""
    b = identity.head_height
    style = identity.hair_style
    volume = {"curly": 1.16, "long": 1.08, "receding": 1.02}.get(style, 1.06)
    t = np.linspace(math.pi * 1.02, math.pi * 1.98, 50)
    bumps = 0.04 * np.sin(t * 22.0) if style == "curly" else 0.0
    outer_u = (volume + bumps) * np.cos(t)
    outer_v = -0.04 + (b * volume + bumps) * np.sin(t)
    line_u, line_v = _hairline(identity)
    inner = head.surface(line_u, line_v)
    # Where the hairline runs round the far side of a turned head, the hair's edge is
    # the head's front outline instead.
    hidden = np.array([head.facing(u, v) < 0.05 for u, v in zip(line_u, line_v)])
    if abs(head.sin_yaw) > 0.2 and hidden.any():
        front = math.copysign(1.0, head.sin_yaw)
        front_u = front * np.sqrt(np.clip(1.0 - (line_v / b) ** 2, 0.0, 1.0))
        inner[hidden] = head.outline(front_u, line_v)[hidden]
    color = identity.hair
    _fill(img, np.concatenate([head.outline(outer_u, outer_v), inner]), color)

    if abs(head.sin_yaw) > 0.2:  # the back of a turned head, down to the nape
        back = -math.copysign(1.0, head.sin_yaw)
        v = np.linspace(-0.7, 0.3, 12)
        edge_u = back * volume * np.sqrt(np.clip(1.0 - (v / (b * volume)) ** 2, 0.0, 1.0))
        _fill(img, np.concatenate([head.outline(edge_u, v), head.surface(back * np.ones_like(v), v)[::-1]]),
              color)
    elif style != "receding":  # hair in front of the ears
        for side in (-1, 1):
            burn = head.surface([side * 1.0, side * 0.88, side * 0.95, side * 1.0], [-0.25, -0.25, 0.02, 0.05])
            _fill(img, burn, color)

    # A few lighter and darker strands, from the crown to just short of the hairline.
    order = np.argsort(line_u)
    for _ in range(14):
        u0 = rng.uniform(-0.85, 0.85)
        top = float(np.interp(u0, outer_u, outer_v)) + 0.05
        bottom = float(np.interp(u0, line_u[order], line_v[order])) - 0.03
        length = rng.uniform(0.5, 0.95)
        shade = rng.choice([0.7, 0.8, 1.25, 1.4])
        drift = rng.uniform(-0.08, 0.08)
        if bottom <= top or head.facing(u0, bottom) < 0.1:
            continue
        k = np.linspace(0.0, 1.0, 8)
        strand = head.surface(u0 * (1.0 + 0.05 * k) + drift * k, top + (bottom - top) * length * k)
        _line(img, strand, _scale(color, shade), head.units(0.018))


def _skin(img, head, identity, expr, skin):
    u, v = _skull_outline(identity, expr)
    _fill(img, head.outline(u, v), skin)


def _brows(img, head, identity, expr, color):
    raise_ = expr.brow_raise
    inner = expr.brow_inner
    lower = expr.brow_lower
    level = identity.brow_level - 0.13 * raise_ + 0.06 * lower
    arch = identity.brow_arch + 0.05 * raise_ - 0.03 * lower - 0.02 * inner
    t = np.linspace(0.0, 1.0, 16)
    for side in (-1, 1):
        if head.facing(side * 0.4) < 0.15:
            continue
        inner_u = 0.13 - 0.04 * lower + 0.01 * raise_
        outer_u = identity.eye_spacing + identity.eye_width * 1.35
        u = side * (inner_u + (outer_u - inner_u) * t)
        inner_lift = -0.11 * inner + 0.09 * lower
        v = level + inner_lift * (1.0 - t) ** 1.5 - arch * np.sin(np.pi * t**0.8) + 0.03 * t
        thick = identity.brow_thickness * (1.1 - 0.55 * t)
        top = head.surface(u, v - thick / 2)
        bottom = head.surface(u, v + thick / 2)
        _fill(img, np.concatenate([top, bottom[::-1]]), color)
    if lower > 0.45:  # vertical frown lines between the brows
        for side in (-1, 1):
            u = side * np.array([0.055, 0.07])
            v = np.array([level - 0.06, level + 0.1])
            _line(img, head.surface(u, v), _scale(identity.skin, 0.72), head.units(0.012 * min(lower, 1.4)))
    if raise_ > 0.45:  # forehead wrinkles
        for k in range(3):
            t2 = np.linspace(-1.0, 1.0, 12)
            u = 0.45 * t2
            v = level - 0.16 - 0.08 * k - 0.03 * (1 - t2**2)
            _line(img, head.surface(u, v), _scale(identity.skin, 0.8), head.units(0.01 * min(raise_, 1.4)))


def _eyes(img, head, identity, expr, gaze):
    lid_color = _scale(_mix(identity.hair, (20, 20, 20), 0.6), 0.8)
    crease_color = _scale(identity.skin, 0.72)
    sclera = (212, 220, 228)
    look = {"frontal": 0.0, "left": -1.0, "right": 1.0}[gaze]
    open_ = expr.eye_open
    width = identity.eye_width
    upper_h = width * 0.5 * (1.0 + 0.55 * open_) * (1.0 - 0.35 * expr.lid_tight)
    lower_h = width * 0.32 * (1.0 + 0.3 * max(open_, 0.0)) * (1.0 - 0.55 * min(expr.cheek_raise, 1.2))
    upper_h = max(upper_h, width * 0.12)
    lower_h = max(lower_h, width * 0.06)
    t = np.linspace(0.0, 1.0, 24)
    for side in (-1, 1):
        center_u = side * identity.eye_spacing
        if head.facing(center_u) < 0.15:
            continue
        # Corners: t=0 inner, t=1 outer; the outer corner sits a little higher.
        u = center_u + side * width * (2 * t - 1)
        base_v = identity.eye_level + width * identity.eye_tilt * (0.5 - t)
        up_shape = np.sin(np.pi * t**0.9) ** 0.8
        if expr.lid_tight > 0.3:  # a glare: the upper lid runs flatter and lower
            up_shape = up_shape ** (1.0 + expr.lid_tight)
        upper_v = base_v - upper_h * up_shape
        lower_v = base_v + lower_h * np.sin(np.pi * t) ** 1.1
        upper = head.surface(u, upper_v)
        lower = head.surface(u, lower_v)
        opening = np.concatenate([upper, lower[::-1]])
        _fill(img, opening, sclera)

        iris_r = width * 0.44
        iris_u = center_u + look * width * 0.45 - side * 0.02
        iris_v = identity.eye_level + 0.01
        iris_center = head.surface(iris_u, iris_v)
        iris_axes = np.array([max(0.2, head.facing(iris_u)), 1.0]) * head.units(iris_r)
        pupil = 0.42 + 0.12 * max(open_, 0.0)  # wide-open eyes also get larger pupils

        def draw_iris(patch, origin):
            center = iris_center - origin
            _ellipse(patch, center, iris_axes, identity.iris)
            _ellipse(patch, center, iris_axes * pupil, (12, 12, 14))
            _circle(patch, center + np.array([-0.3, -0.35]) * iris_axes[1], iris_axes[1] * 0.16, (235, 240, 245))

        _draw_clipped(img, opening, draw_iris)
        _line(img, upper, lid_color, head.units(0.028))
        _line(img, lower, _scale(identity.skin, 0.65), head.units(0.012))
        crease_v = upper_v - 0.06 - 0.35 * upper_h * up_shape + 0.03 * expr.brow_lower
        _line(img, head.surface(u[3:-2], crease_v[3:-2]), crease_color, head.units(0.012))
        if expr.cheek_raise > 0.5:  # crow's feet at the outer corner
            for k in (-1, 0, 1):
                a = center_u + side * (width + 0.05)
                cu = [a, a + side * 0.09]
                cv = [identity.eye_level + 0.02 * k, identity.eye_level + 0.05 * k]
                _line(img, head.surface(cu, cv), crease_color, head.units(0.01))


def _nose(img, head, identity, expr):
    skin = identity.skin
    wide = identity.nose_width * (1.0 + 0.15 * expr.nostril_flare)
    base = identity.nose_level - 0.04 * expr.upper_lip_raise - 0.02 * expr.nose_wrinkle
    if abs(head.sin_yaw) > 0.3:  # turned head: the nose shows as a ridge off the face
        bridge = head.surface(0.0, [identity.eye_level - 0.05, base - 0.06, base, base + 0.03],
                              dz=np.array([0.02, 0.28, 0.2, 0.0]))
        _fill(img, bridge, skin)
        _line(img, bridge[1:], _scale(skin, 0.7), head.units(0.015))
    for side in (-1, 1):
        if head.facing(side * 0.1) < 0.2:
            continue
        nostril = _ellipse_points(side * wide * 0.45, base - 0.015, 0.05 * (1 + 0.3 * expr.nostril_flare), 0.026)
        _fill(img, head.surface(*nostril, dz=0.1), _scale(skin, 0.38))
        t = np.linspace(-0.6 * math.pi, 0.7 * math.pi, 12)
        wing_u = side * (wide * 0.72 + 0.07 * np.cos(t))
        wing_v = base - 0.06 + 0.06 * np.sin(t)
        _line(img, head.surface(wing_u, wing_v, dz=0.05), _scale(skin, 0.68), head.units(0.016))
    if expr.nose_wrinkle > 0.4:
        for k in range(3):
            u = np.linspace(-0.1, 0.1, 8)
            v = identity.eye_level + 0.08 + 0.05 * k - 0.02 * (1 - (u / 0.1) ** 2)
            _line(img, head.surface(u, v, dz=0.05), _scale(skin, 0.72),
                  head.units(0.011 * min(expr.nose_wrinkle, 1.4)))


def _mouth_shape(identity, expr):
    """The lip outline and the opening between the lips, in head units."""
    stretch = expr.mouth_stretch + 0.1 * max(expr.smile, 0.0) - 0.2 * expr.mouth_round - 0.12 * expr.lip_press
    half_w = identity.mouth_width * (1.0 + 0.3 * stretch)
    level = identity.mouth_level + 0.03 * expr.mouth_open
    t = np.linspace(-1.0, 1.0, 41)
    left_lift = -0.11 * expr.smile
    right_lift = -0.11 * expr.smile
    one_side = expr.smile_one_side
    if identity.contempt_side > 0:
        right_lift -= 0.12 * one_side
    else:
        left_lift -= 0.12 * one_side
    lift = np.where(t < 0, left_lift, right_lift) * np.abs(t) ** 2.2
    # The pulled corner also moves outwards.
    u = half_w * t * (1.0 + 0.12 * one_side * (np.sign(t) == identity.contempt_side) * np.abs(t) ** 3)
    line_v = level + lift - 0.05 * expr.chin_raise * (1.0 - t**2)

    open_ = expr.mouth_open
    roundness = 0.9 - 0.45 * min(expr.mouth_round, 1.0)
    gap_up = 0.13 * open_ + 0.05 * expr.upper_lip_raise + 0.025 * max(expr.smile, 0.0)
    gap_lo = 0.2 * open_ + 0.01 * expr.upper_lip_raise + 0.025 * max(expr.smile, 0.0)
    up_shape = (1.0 - np.abs(t) ** (4 if expr.upper_lip_raise > 0.5 else 2)) ** roundness
    lo_shape = (1.0 - t**2) ** roundness
    open_top = line_v - gap_up * up_shape
    open_bottom = line_v + gap_lo * lo_shape

    press = 1.0 - 0.6 * min(expr.lip_press, 1.2)
    upper_th = identity.upper_lip * press * (1.0 - 0.3 * min(open_, 1.0))
    lower_th = identity.lower_lip * press * (1.0 + 0.3 * expr.chin_raise) * (1.0 - 0.3 * min(open_, 1.0))
    cupid = 1.0 - 0.35 * np.exp(-((t / 0.12) ** 2))
    lip_top = open_top - upper_th * (1.0 - t**2) ** 0.5 * cupid
    lip_bottom = open_bottom + lower_th * (1.0 - t**2) ** 0.6
    return u, line_v, open_top, open_bottom, lip_top, lip_bottom


def _band(head, u, top_v, bottom_v):
    """Pixels of the closed outline between two curves over the same u samples."""
    return head.surface(np.concatenate([u, u[::-1]]), np.concatenate([top_v, bottom_v[::-1]]))


def _mouth(img, head, identity, expr):
    u, line_v, open_top, open_bottom, lip_top, lip_bottom = _mouth_shape(identity, expr)
    _fill(img, _band(head, u, lip_top, lip_bottom), identity.lips)
    line_color = _scale(identity.lips, 0.4)
    if np.max(open_bottom - open_top) > 0.025:
        opening = _band(head, u, open_top, open_bottom)
        teeth_h = min(0.07, 0.5 * float(np.max(open_bottom - open_top)))
        show_lower = expr.mouth_open > 0.3 and expr.mouth_round < 0.5

        def draw_teeth(patch, origin):
            patch[:] = (28, 26, 60)  # the dark inside of the mouth
            teeth = (205, 215, 222)
            _fill(patch, _band(head, u, open_top - 0.01, open_top + 0.8 * teeth_h) - origin, teeth)
            if show_lower:
                lower_teeth = _band(head, u, open_bottom - 0.5 * teeth_h, open_bottom + 0.01)
                _fill(patch, lower_teeth - origin, _scale(teeth, 0.85))

        _draw_clipped(img, opening, draw_teeth)
        _line(img, opening, line_color, head.units(0.012))
    else:
        _line(img, head.surface(u, line_v), line_color, head.units(0.022 + 0.01 * expr.lip_press))
    corner_color = _scale(identity.skin, 0.66)
    for i in (0, -1):  # corner dimples make the corner direction readable
        du = np.sign(u[i]) * 0.04
        lift = 0.5 * (line_v[i] - identity.mouth_level)
        _line(img, head.surface([u[i], u[i] + du], [line_v[i], line_v[i] + lift - 0.005]),
              corner_color, head.units(0.016))


def _nasolabial_folds(img, head, identity, expr):
    depth = 0.25 + 0.6 * expr.cheek_raise + 0.6 * max(expr.smile, 0.0) + 0.6 * expr.upper_lip_raise
    if depth < 0.35:
        return
    u, line_v, *_ = _mouth_shape(identity, expr)
    color = _scale(identity.skin, 1.0 - 0.12 * min(depth, 1.5))
    for side, i in ((-1, 0), (1, -1)):
        t = np.linspace(0.0, 1.0, 10)
        start = np.array([side * (identity.nose_width + 0.06), identity.nose_level - 0.08])
        end = np.array([u[i] + side * 0.06, line_v[i] + 0.08])
        bow = side * 0.06 * np.sin(np.pi * t)
        fu = start[0] + (end[0] - start[0]) * t + bow
        fv = start[1] + (end[1] - start[1]) * t
        _line(img, head.surface(fu, fv), color, head.units(0.02))


def _stubble(img, head, identity, expr):
    if identity.stubble <= 0.0:
        return
    u, v = _skull_outline(identity, expr, 60)
    lower = v > identity.nose_level + 0.05
    beard = head.outline(u[lower], v[lower])
    mu, mline, *_ = _mouth_shape(identity, expr)
    upper_edge = head.surface(mu[::-1] * 1.25, mline[::-1] + 0.17)
    region = np.concatenate([beard, upper_edge])
    overlay = img.copy()
    _fill(overlay, region, _scale(identity.skin, 0.6))
    cv2.addWeighted(overlay, identity.stubble * 0.5, img, 1.0 - identity.stubble * 0.5, 0, dst=img)


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


def _check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise SyntheticFaceError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


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
        prog="python -m efr.data.synthetic.render",
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


if __name__ == "__main__":
    sys.exit(main())

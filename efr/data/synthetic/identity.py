"""Who is drawn and how: a subject's identity (face shape, skin, hair, proportions), an emotion's
expression (brows, eyelids, mouth) and a photo's head pose, all from seeded random numbers."""

import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np

from efr.io.errors import EFRError


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

def _check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise SyntheticFaceError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)

"""Label-preserving image transforms, and the two augmentation recipes data_aug.py offers.

Every transform is a plain function on an 8-bit BGR array (H, W, 3) that returns a new
8-bit BGR array; the ones that keep the label (flip, small rotations, shifts, zooms,
lighting, mild blur and noise, greyscale) also keep the shape, so training code can
reuse them on the fly.  Randomness never hides inside a transform: parameters are
drawn up front by ``draw_default_params`` from a numpy Generator and applied by
``apply_default_params``, so a seed fixes the result and a parameter set can be
written to the manifest and replayed.

Two recipes:

- ``default``: ``copies`` random combinations of the label-preserving transforms per
  photo, with ranges small enough that an expression stays recognisable.
- ``original``: the seed project's twelve fixed outputs per photo (flips, 90/270
  degree rotations, thresholds, greyscale, box blur, binarised median-blurred grey),
  kept for comparison.  Several of them (upside-down faces, binary images) change
  what a face looks like far more than any photo the model will be shown; the
  comparison in docs/augment.md measures what that does to accuracy.

Importing this module does not import TensorFlow.
"""

import hashlib

import cv2
import numpy as np

DEFAULT_RECIPE = "default"
ORIGINAL_RECIPE = "original"
RECIPES = (DEFAULT_RECIPE, ORIGINAL_RECIPE)
DEFAULT_COPIES = 4  # variants per photo for the default recipe: 5x the data, still one quick pass

# Ranges of the default recipe.  Chosen so that the mouth, eyes and brows stay where a
# face detector would put them: +-15 degrees is about how far people tilt their heads
# in RaFD-like photos; +-8 % shift and 0.9-1.1 zoom stay within a detector's box jitter.
MAX_ROTATION_DEG = 15.0
MAX_SHIFT_FRACTION = 0.08
ZOOM_RANGE = (0.9, 1.1)
CONTRAST_RANGE = (0.8, 1.2)
BRIGHTNESS_RANGE = (-25.0, 25.0)
GAMMA_RANGE = (0.8, 1.25)
BLUR_SIGMA_RANGE = (0.5, 1.2)
NOISE_SIGMA_RANGE = (2.0, 8.0)

# How often each part of the default recipe is used in one variant.
P_FLIP = 0.5
P_AFFINE = 0.8
P_LIGHT = 0.6
P_GAMMA = 0.4
P_BLUR = 0.2
P_NOISE = 0.2
P_GREY = 0.15

# Where geometric transforms need pixels from outside the frame they take a mirror
# image of the border (hair, background), not black corners a model could learn.
BORDER_MODE = cv2.BORDER_REFLECT


# --- label-preserving transforms (shape and dtype kept) -------------------------------

def flip_horizontal(image):
    """Mirror left-right.  Faces are nearly symmetric, so the expression is unchanged."""
    return cv2.flip(image, 1)


def affine(image, angle=0.0, scale=1.0, shift=(0.0, 0.0), border=BORDER_MODE):
    """Rotate by ``angle`` degrees (counter-clockwise) and zoom by ``scale`` about the
    centre, then shift by ``shift`` = (dx, dy) pixels, in one resampling.

    The output has the input's shape; pixels from outside the frame are filled by
    ``border`` (mirrored by default).
    """
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), float(angle), float(scale))
    matrix[0, 2] += float(shift[0])
    matrix[1, 2] += float(shift[1])
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=border)


def rotate(image, angle, border=BORDER_MODE):
    """Rotate by ``angle`` degrees counter-clockwise about the centre, same shape."""
    return affine(image, angle=angle, border=border)


def brightness_contrast(image, contrast=1.0, brightness=0.0):
    """``contrast * pixel + brightness``, rounded and saturated to 0..255, through a lookup table."""
    # A 256-entry table (cv2.LUT) is exact and faster than float arithmetic on the image.
    table = np.clip(np.arange(256, dtype=np.float32) * contrast + brightness, 0, 255).round().astype(np.uint8)
    return cv2.LUT(image, table)


def gamma_table(gamma):
    """The 256-entry lookup table of ``255 * (v / 255) ** gamma`` (gamma < 1 brightens)."""
    values = np.arange(256, dtype=np.float64) / 255.0
    return np.clip(np.round(255.0 * values**gamma), 0, 255).astype(np.uint8)


def adjust_gamma(image, gamma):
    """Gamma correction through a lookup table (cv2.LUT); keeps black and white fixed."""
    return cv2.LUT(image, gamma_table(gamma))


def gaussian_blur(image, sigma):
    """Mild Gaussian blur (kernel size chosen by OpenCV from ``sigma``), like a soft focus."""
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT_101)


def gaussian_noise(image, sigma, rng):
    """Add zero-mean Gaussian noise of standard deviation ``sigma`` (grey levels) from ``rng``."""
    noise = rng.normal(0.0, float(sigma), size=image.shape).astype(np.float32)
    return np.clip(image.astype(np.float32) + noise, 0, 255).round().astype(np.uint8)


def to_grey(image):
    """Greyscale, returned as 3 equal BGR channels so every image has the same mode."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


# --- the default recipe: draw parameters, then apply them ------------------------------

def photo_rng(seed, parent, copy_index):
    """A Generator for copy ``copy_index`` of photo ``parent`` (a relative posix path).

    Derived from a hash of (seed, parent, copy) alone, so a photo's variants do not
    depend on which worker ran it, in what order, or how many copies were asked for
    (asking for 6 after 4 keeps the first 4).
    """
    digest = hashlib.sha256(f"{int(seed)}\0{parent}\0{int(copy_index)}".encode("utf-8")).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest[:16], "little")))


def draw_default_params(rng):
    """Draw one variant of the default recipe: a dict of the transforms used and their
    parameters, in the order they are applied.  At least one transform is always used.

    Shifts (dx, dy) are fractions of the image's width and height, so parameters can
    be drawn before the image is read and replayed on any size.
    """
    while True:
        params = {}
        if rng.random() < P_FLIP:
            params["flip"] = True
        if rng.random() < P_AFFINE:
            params["affine"] = {
                "angle": round(float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)), 2),
                "scale": round(float(rng.uniform(*ZOOM_RANGE)), 3),
                "dx": round(float(rng.uniform(-MAX_SHIFT_FRACTION, MAX_SHIFT_FRACTION)), 4),
                "dy": round(float(rng.uniform(-MAX_SHIFT_FRACTION, MAX_SHIFT_FRACTION)), 4),
            }
        if rng.random() < P_LIGHT:
            params["light"] = {
                "contrast": round(float(rng.uniform(*CONTRAST_RANGE)), 3),
                "brightness": round(float(rng.uniform(*BRIGHTNESS_RANGE)), 1),
            }
        if rng.random() < P_GAMMA:
            # log-uniform, so darkening and brightening are equally likely
            low, high = np.log(GAMMA_RANGE)
            params["gamma"] = round(float(np.exp(rng.uniform(low, high))), 3)
        if rng.random() < P_BLUR:
            params["blur"] = round(float(rng.uniform(*BLUR_SIGMA_RANGE)), 2)
        if rng.random() < P_NOISE:
            params["noise"] = {
                "sigma": round(float(rng.uniform(*NOISE_SIGMA_RANGE)), 2),
                "seed": int(rng.integers(0, 2**63 - 1)),
            }
        if rng.random() < P_GREY:
            params["grey"] = True
        if params:
            return params


def apply_default_params(image, params):
    """Apply a parameter dict from ``draw_default_params``; same shape and dtype out."""
    out = image
    if params.get("flip"):
        out = flip_horizontal(out)
    if "affine" in params:
        a = params["affine"]
        height, width = out.shape[:2]
        out = affine(out, angle=a["angle"], scale=a["scale"], shift=(a["dx"] * width, a["dy"] * height))
    if "light" in params:
        out = brightness_contrast(out, params["light"]["contrast"], params["light"]["brightness"])
    if "gamma" in params:
        out = adjust_gamma(out, params["gamma"])
    if "blur" in params:
        out = gaussian_blur(out, params["blur"])
    if "noise" in params:
        out = gaussian_noise(out, params["noise"]["sigma"], np.random.default_rng(params["noise"]["seed"]))
    if params.get("grey"):
        out = to_grey(out)
    return out if out is not image else out.copy()


def params_short_name(params):
    """Transform names joined by '_' for a file name, e.g. 'flip_affine_gamma'."""
    return "_".join(params)


def params_description(params):
    """A one-line readable record of a parameter set for the manifest's transform column."""
    parts = []
    for name, value in params.items():
        if value is True:
            parts.append(name)
        elif isinstance(value, dict):
            inner = ",".join(f"{k}={v}" for k, v in value.items())
            parts.append(f"{name}({inner})")
        else:
            parts.append(f"{name}({value})")
    return ";".join(parts)


def random_variant(image, rng):
    """One random label-preserving variant of ``image``: (augmented image, params)."""
    params = draw_default_params(rng)
    return apply_default_params(image, params), params


# --- the original project's twelve outputs ----------------------------------------------

def flip_vertical(image):
    """Upside down (cv2.flip code 0).  Original recipe only: faces are never upside down."""
    return cv2.flip(image, 0)


def rotate_90(image):
    """Exact quarter turn counter-clockwise (cv2.rotate; the whole image, shape (W, H)).

    The seed project used warpAffine into an (H, W) canvas, which cuts off and pads a
    non-square image; a 90-degree turn needs no interpolation, so cv2.rotate is exact.
    """
    return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)


def rotate_270(image):
    """Exact three-quarter turn counter-clockwise (= a quarter turn clockwise)."""
    return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)


def threshold(image, kind, thresh=127, maxval=255):
    """cv2.threshold on each BGR channel, as the seed project did (``kind`` e.g. cv2.THRESH_BINARY)."""
    return cv2.threshold(image, thresh, maxval, kind)[1]


def box_blur(image, size=5):
    """Mean over a ``size`` x ``size`` box (cv2.blur)."""
    return cv2.blur(image, (size, size))


def median_grey(image, size=5):
    """Grey image smoothed by a ``size`` median filter: the input of the three binarisations."""
    return cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), size)


def _grey_to_bgr(grey):
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def median_binary(image, thresh=150):
    """Median-blurred grey, global binary threshold at ``thresh``, as 3-channel BGR."""
    return _grey_to_bgr(cv2.threshold(median_grey(image), thresh, 255, cv2.THRESH_BINARY)[1])


def median_adaptive(image, method, block_size=11, c=2):
    """Median-blurred grey, adaptive binary threshold (``method`` mean or Gaussian), as BGR."""
    return _grey_to_bgr(cv2.adaptiveThreshold(median_grey(image), 255, method, cv2.THRESH_BINARY, block_size, c))


# name -> transform, in the seed project's order.  The names become file-name suffixes.
ORIGINAL_TRANSFORMS = {
    "flip_lr": flip_horizontal,
    "flip_ud": flip_vertical,
    "rot90": rotate_90,
    "rot270": rotate_270,
    "thresh_binary": lambda im: threshold(im, cv2.THRESH_BINARY),
    "thresh_trunc": lambda im: threshold(im, cv2.THRESH_TRUNC),
    "thresh_tozero": lambda im: threshold(im, cv2.THRESH_TOZERO),
    "grey": to_grey,
    "box_blur5": box_blur,
    "median_binary150": median_binary,
    "median_adaptive_mean": lambda im: median_adaptive(im, cv2.ADAPTIVE_THRESH_MEAN_C),
    "median_adaptive_gaussian": lambda im: median_adaptive(im, cv2.ADAPTIVE_THRESH_GAUSSIAN_C),
}


def original_variants(image):
    """The seed project's twelve outputs of ``image``: a list of (name, BGR image)."""
    return [(name, transform(image)) for name, transform in ORIGINAL_TRANSFORMS.items()]

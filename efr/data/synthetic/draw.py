"""Drawing primitives in fixed point (OpenCV's shift), clipped to the canvas; the background."""

import math

import cv2
import numpy as np

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

"""The parts of a synthetic face, each drawn onto the canvas: skull, neck, shirt, hair, ears, skin,
brows, eyes, nose, mouth, folds, stubble."""

import math

import cv2
import numpy as np

from efr.data.synthetic.draw import _circle, _draw_clipped, _ellipse, _ellipse_points, _fill, _line
from efr.data.synthetic.identity import _mix, _scale


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


# Contempt's one raised mouth corner (head units): up, and out as a share of the half-width.  At 0.12
# and 0.12 the smirk moved the corner by about a pixel in the demo's 64 px crops, and models confused
# Contemptuous with Neutral (recall 0.0-0.67 over seeds); RaFD's own smirk is plainly visible.
CONTEMPT_LIFT, CONTEMPT_OUT = 0.22, 0.2


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
        right_lift -= CONTEMPT_LIFT * one_side
    else:
        left_lift -= CONTEMPT_LIFT * one_side
    lift = np.where(t < 0, left_lift, right_lift) * np.abs(t) ** 2.2
    # The pulled corner also moves outwards.
    u = half_w * t * (1.0 + CONTEMPT_OUT * one_side * (np.sign(t) == identity.contempt_side) * np.abs(t) ** 3)
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

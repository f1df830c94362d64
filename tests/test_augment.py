"""The transforms of efr/data/augment.py: shapes, exact values where they are defined, randomness under a seed."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from efr.data import augment


def face_like(height=48, width=48, seed=0):
    """A smooth gradient with random texture: not constant, so every transform changes it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


LABEL_PRESERVING = {
    "flip": augment.flip_horizontal,
    "affine": lambda im: augment.affine(im, angle=12.0, scale=1.08, shift=(3.0, -2.0)),
    "rotate": lambda im: augment.rotate(im, -15.0),
    "light": lambda im: augment.brightness_contrast(im, 1.2, -20.0),
    "gamma": lambda im: augment.adjust_gamma(im, 0.8),
    "blur": lambda im: augment.gaussian_blur(im, 1.0),
    "noise": lambda im: augment.gaussian_noise(im, 5.0, np.random.default_rng(1)),
    "grey": augment.to_grey,
}


@pytest.mark.parametrize("name", sorted(LABEL_PRESERVING))
@pytest.mark.parametrize("shape", [(48, 48), (40, 64)])
def test_label_preserving_transforms_keep_shape_and_dtype_and_change_the_image(name, shape):
    image = face_like(*shape)
    out = LABEL_PRESERVING[name](image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert np.array_equal(image, face_like(*shape)), "input modified in place"


def test_flip_matches_cv2_and_undoes_itself():
    image = face_like(40, 64)
    assert np.array_equal(augment.flip_horizontal(image), cv2.flip(image, 1))
    assert np.array_equal(augment.flip_horizontal(augment.flip_horizontal(image)), image)


def test_affine_with_no_motion_is_the_identity_and_quarter_turn_turns_counter_clockwise():
    image = face_like(48, 48)
    assert np.array_equal(augment.affine(image), image)
    turned = augment.rotate(image, 90.0).astype(int)
    # Counter-clockwise as seen, i.e. np.rot90; edges differ by interpolation at most.
    assert np.abs(turned - np.rot90(image).astype(int))[2:-2, 2:-2].max() <= 1


def test_gamma_and_lighting_tables():
    table = augment.gamma_table(0.5)
    assert table[0] == 0 and table[255] == 255 and table[64] == round(255 * (64 / 255) ** 0.5)
    image = face_like()
    assert np.array_equal(augment.adjust_gamma(image, 1.0), image)
    assert augment.adjust_gamma(image, 0.8).mean() > image.mean() > augment.adjust_gamma(image, 1.25).mean()
    assert np.array_equal(augment.brightness_contrast(image, 1.0, 0.0), image)
    brighter = augment.brightness_contrast(image, 1.0, 20.0).astype(int)
    assert np.array_equal(brighter, np.minimum(image.astype(int) + 20, 255))


def test_grey_has_three_equal_channels():
    grey = augment.to_grey(face_like())
    assert np.array_equal(grey[:, :, 0], grey[:, :, 1]) and np.array_equal(grey[:, :, 1], grey[:, :, 2])


def test_photo_rng_depends_on_seed_parent_and_copy_only():
    def draw(*key):
        return augment.photo_rng(*key).random(4).tolist()

    assert draw(0, "Train/Happy/a.png", 0) == draw(0, "Train/Happy/a.png", 0)
    assert draw(0, "Train/Happy/a.png", 0) != draw(1, "Train/Happy/a.png", 0)
    assert draw(0, "Train/Happy/a.png", 0) != draw(0, "Train/Happy/b.png", 0)
    assert draw(0, "Train/Happy/a.png", 0) != draw(0, "Train/Happy/a.png", 1)
    assert draw(-3, "x", 0) == draw(-3, "x", 0)  # negative seeds are fine


def test_default_params_stay_in_range_and_always_do_something():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(500):
        params = augment.draw_default_params(rng)
        assert params
        seen.update(params)
        if "affine" in params:
            a = params["affine"]
            assert abs(a["angle"]) <= augment.MAX_ROTATION_DEG
            assert augment.ZOOM_RANGE[0] <= a["scale"] <= augment.ZOOM_RANGE[1]
            assert abs(a["dx"]) <= augment.MAX_SHIFT_FRACTION and abs(a["dy"]) <= augment.MAX_SHIFT_FRACTION
        if "gamma" in params:
            assert augment.GAMMA_RANGE[0] - 1e-3 <= params["gamma"] <= augment.GAMMA_RANGE[1] + 1e-3
        assert augment.params_short_name(params).replace("_", "").isalnum()
    assert seen == {"flip", "affine", "light", "gamma", "blur", "noise", "grey"}


def test_default_variants_repeat_under_a_seed_and_keep_shape():
    image = face_like(40, 64)
    first = [augment.random_variant(image, augment.photo_rng(7, "p", k)) for k in range(8)]
    again = [augment.random_variant(image, augment.photo_rng(7, "p", k)) for k in range(8)]
    for (a, pa), (b, pb) in zip(first, again):
        assert pa == pb and np.array_equal(a, b)
        assert a.shape == image.shape and a.dtype == np.uint8
    assert len({augment.params_description(p) for _, p in first}) == 8


def test_original_recipe_has_the_twelve_named_outputs():
    image = face_like(48, 48)
    outputs = dict(augment.original_variants(image))
    assert list(outputs) == [
        "flip_lr", "flip_ud", "rot90", "rot270", "thresh_binary", "thresh_trunc", "thresh_tozero",
        "grey", "box_blur5", "median_binary150", "median_adaptive_mean", "median_adaptive_gaussian",
    ]
    for name, out in outputs.items():
        assert out.dtype == np.uint8 and out.shape == image.shape, name
    assert np.array_equal(outputs["flip_lr"], cv2.flip(image, 1))
    assert np.array_equal(outputs["flip_ud"], image[::-1])
    assert np.array_equal(outputs["thresh_binary"], np.where(image > 127, 255, 0).astype(np.uint8))
    assert np.array_equal(outputs["thresh_trunc"], np.minimum(image, 127))
    assert np.array_equal(outputs["thresh_tozero"], np.where(image > 127, image, 0))
    assert np.array_equal(outputs["box_blur5"], cv2.blur(image, (5, 5)))
    median = cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), 5)
    assert np.array_equal(outputs["median_binary150"][:, :, 0], np.where(median > 150, 255, 0))
    expected = cv2.adaptiveThreshold(median, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 11, 2)
    assert np.array_equal(outputs["median_adaptive_gaussian"][:, :, 2], expected)
    for name in ("median_binary150", "median_adaptive_mean", "median_adaptive_gaussian", "thresh_binary"):
        assert set(np.unique(outputs[name])) <= {0, 255}, name


def test_original_rotations_keep_the_whole_of_a_non_square_image():
    image = face_like(40, 64)  # height 40, width 64
    outputs = dict(augment.original_variants(image))
    assert outputs["rot90"].shape == (64, 40, 3)
    assert np.array_equal(outputs["rot90"], np.rot90(image))  # nothing cut off, nothing padded
    assert np.array_equal(outputs["rot270"], np.rot90(image, -1))
    for name, out in outputs.items():
        if name not in ("rot90", "rot270"):
            assert out.shape == image.shape, name


def test_importing_the_augmentation_code_does_not_import_tensorflow():
    code = "import sys, efr.data.augment, efr.data.augment_stage; sys.exit('tensorflow' in sys.modules)"
    repo = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=repo, check=False).returncode == 0

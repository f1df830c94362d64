"""read_image turns every common image mode into 8-bit BGR and refuses damaged files by name."""

import re

import cv2
import numpy as np
import pytest
from PIL import Image

from efr import imageio
from efr.errors import EFRError
from efr.imageio import (
    IMAGE_EXTENSIONS,
    PNG_WRITERS,
    UnreadableImageError,
    atomic_path,
    default_png_writer,
    encode_image,
    is_image_file,
    list_images,
    read_image,
    write_image,
    write_text_atomic,
)


def _gradient(height=24, width=32):
    """A BGR test picture with distinct channels."""
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 90)]).astype(np.uint8)


def test_colour_png_round_trips_exactly(tmp_path):
    image = _gradient()
    write_image(tmp_path / "a.png", image)
    assert np.array_equal(read_image(tmp_path / "a.png"), image)


def _noisy(channels, dtype=np.uint8, seed=0):
    """A picture with structure and noise (neither trivially compressible nor random)."""
    top = np.iinfo(dtype).max
    base = np.dstack([_gradient(40, 56)] + [_gradient(40, 56)[:, :, :1]] * (channels - 3)).astype(np.float64) / 255
    noise = np.random.default_rng(seed).normal(0, 0.1, base.shape)
    return (np.clip(base + noise, 0, 1) * top).round().astype(dtype)


def _decode(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("channels", [3, 4])
def test_both_png_writers_keep_every_pixel_in_other_bytes(channels):
    pytest.importorskip("fpng")
    image = _noisy(channels)
    encoded = {writer: encode_image(image, ".png", png_writer=writer) for writer in PNG_WRITERS}
    for writer, data in encoded.items():
        assert np.array_equal(_decode(data), image), writer
    assert encoded["fpng"] != encoded["opencv"]  # two writers, really


def test_fpng_writes_pngs_by_default_when_installed(tmp_path):
    pytest.importorskip("fpng")
    image = _noisy(3)
    assert default_png_writer() == "fpng"
    write_image(tmp_path / "a.png", image)
    assert (tmp_path / "a.png").read_bytes() == encode_image(image, ".png", png_writer="fpng")


def test_without_fpng_opencv_writes_every_png(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "fpng", None)
    image = _noisy(3)
    assert default_png_writer() == "opencv"
    write_image(tmp_path / "a.png", image)
    assert (tmp_path / "a.png").read_bytes() == cv2.imencode(".png", image)[1].tobytes()
    with pytest.raises(EFRError, match="pip install fpng"):
        encode_image(image, ".png", png_writer="fpng")
    with pytest.raises(EFRError, match="unknown PNG writer"):
        encode_image(image, ".png", png_writer="libspng")


@pytest.mark.parametrize("image", [_noisy(3)[:, :, 0], _noisy(3, np.uint16)], ids=["grey", "16-bit"])
def test_grey_and_16_bit_pngs_keep_their_mode(image):
    # fpng takes only 8-bit colour; these go through OpenCV whatever the writer.
    decoded = _decode(encode_image(image, ".png"))
    assert decoded.dtype == image.dtype and np.array_equal(decoded, image)


def test_tensorflow_decodes_written_pngs_exactly():
    # Training reads the Dataset with tf.io.decode_image, not OpenCV.
    tf = pytest.importorskip("tensorflow")
    image = _noisy(3)
    decoded = tf.io.decode_png(encode_image(image, ".png"), channels=3).numpy()
    assert np.array_equal(decoded, image[:, :, ::-1])


def test_grey_png_becomes_three_equal_channels(tmp_path):
    grey = _gradient()[:, :, 0]
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    image = read_image(tmp_path / "grey.png")
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert all(np.array_equal(image[:, :, c], grey) for c in range(3))


def test_palette_png_is_expanded_to_its_colours(tmp_path):
    rgb = cv2.cvtColor(_gradient(), cv2.COLOR_BGR2RGB)
    palette = Image.fromarray(rgb).quantize(colors=16)
    palette.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    image = read_image(tmp_path / "palette.png")
    expected = cv2.cvtColor(np.asarray(palette.convert("RGB")), cv2.COLOR_RGB2BGR)
    assert image.shape == (24, 32, 3) and np.array_equal(image, expected)


def test_rgba_png_is_composited_over_white(tmp_path):
    bgra = np.dstack([_gradient(), np.zeros((24, 32), np.uint8)])
    bgra[:, 16:, 3] = 255  # left half transparent, right half opaque
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    image = read_image(tmp_path / "rgba.png")
    assert image.shape == (24, 32, 3)
    assert (image[:, :16] == 255).all()
    assert np.array_equal(image[:, 16:], _gradient()[:, 16:])


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_is_scaled_to_8_bit(tmp_path, channels):
    image8 = _gradient() if channels == 3 else _gradient()[:, :, 0]
    cv2.imwrite(str(tmp_path / "deep.png"), image8.astype(np.uint16) * 257)
    assert cv2.imread(str(tmp_path / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    image = read_image(tmp_path / "deep.png")
    assert image.dtype == np.uint8 and image.shape == (24, 32, 3)
    assert np.array_equal(image[:, :, 0], image8 if channels == 1 else image8[:, :, 0])


@pytest.mark.parametrize("ext", [".bmp", ".tif", ".jpg"])
def test_other_formats_read_as_bgr(tmp_path, ext):
    cv2.imwrite(str(tmp_path / f"a{ext}"), _gradient())
    image = read_image(tmp_path / f"a{ext}")
    assert image.shape == (24, 32, 3)
    assert np.abs(image.astype(int) - _gradient()).mean() < 4  # jpg is lossy


def test_truncated_jpeg_is_unreadable_and_named(tmp_path):
    ok, data = cv2.imencode(".jpg", _gradient(64, 64))
    (tmp_path / "cut.jpg").write_bytes(data.tobytes()[: len(data) // 2])
    with pytest.raises(UnreadableImageError, match=r"cut\.jpg.*truncated"):
        read_image(tmp_path / "cut.jpg")


def test_truncated_png_is_unreadable(tmp_path):
    ok, data = cv2.imencode(".png", _gradient(64, 64))
    (tmp_path / "cut.png").write_bytes(data.tobytes()[:-40])
    with pytest.raises(UnreadableImageError, match=r"cut\.png"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("content", [b"these are my notes, not a photo\n", b""])
def test_non_image_with_image_extension_is_unreadable(tmp_path, content):
    (tmp_path / "notes.jpg").write_bytes(content)
    with pytest.raises(UnreadableImageError, match=r"notes\.jpg"):
        read_image(tmp_path / "notes.jpg")


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(UnreadableImageError, match="gone.png"):
        read_image(tmp_path / "gone.png")


def test_list_images_recurses_and_skips_hidden_partial_and_other_files(tmp_path):
    for name in ("b.jpg", "sub/a.PNG", "sub/deeper/c.tiff", "notes.txt", ".hidden.jpg", "sub/.x.123.partial.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["b.jpg", "sub/a.PNG", "sub/deeper/c.tiff"]
    assert not is_image_file(tmp_path / "notes.txt") and ".bmp" in IMAGE_EXTENSIONS


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out" / "a.png"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []
    write_text_atomic(target, "done")
    assert target.read_text() == "done" and [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


@pytest.mark.parametrize(
    "mode,ext",
    [("L", ".tif"), ("P", ".tif"), ("LA", ".png"), ("RGBA", ".tif"), ("1", ".png"), ("CMYK", ".jpg"), ("CMYK", ".tif")],
)
def test_pillow_modes_read_as_8_bit_bgr(tmp_path, mode, ext):
    # JAFFE ships grey and palette TIFFs; scanners write CMYK JPEGs; masks come as 1-bit.
    rgb = Image.fromarray(cv2.cvtColor(_gradient(), cv2.COLOR_BGR2RGB))
    rgb.convert(mode).save(tmp_path / f"a{ext}")
    image = read_image(tmp_path / f"a{ext}")
    expected = cv2.cvtColor(np.asarray(rgb.convert(mode).convert("RGB")), cv2.COLOR_RGB2BGR)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - expected).mean() < 6  # CMYK and JPEG round differently


def test_jpeg_exif_rotation_is_applied(tmp_path):
    # Phone photos are stored sideways with an EXIF Orientation tag; faces must come out upright.
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :10] = 255  # a white band on the left
    photo = Image.fromarray(image)
    exif = photo.getexif()
    exif[274] = 6  # Orientation: rotate 90 degrees clockwise to display
    photo.save(tmp_path / "phone.jpg", exif=exif)
    upright = read_image(tmp_path / "phone.jpg")
    assert upright.shape == (40, 20, 3)
    assert upright[:10].mean() > 200 and upright[-10:].mean() < 50  # the band is now on top


@pytest.mark.parametrize("name, content, what", [
    ("notes.png", b"meeting at 10\nbring photos\n", "not an image (a text file)"),
    ("page.jpg", b"<!DOCTYPE html><html><body>404</body></html>", "not an image (an HTML page"),
    ("doc.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"\x00" * 40, "not an image (a PDF document)"),
    ("archive.png", b"PK\x03\x04" + b"\x00" * 60, "not an image (a ZIP archive)"),
    ("empty.jpg", b"", "file is empty"),
])
def test_a_file_that_is_no_image_is_called_what_it_is(tmp_path, name, content, what):
    from efr.data import quick_check_image
    from efr.imageio import diagnose_file

    path = tmp_path / name
    path.write_bytes(content)
    assert diagnose_file(path).startswith(what)
    assert quick_check_image(path).startswith(what)  # efe_cnn.py's check says the same
    with pytest.raises(UnreadableImageError, match=re.escape(what)):
        read_image(path)


def test_a_png_named_jpg_is_read_by_its_content(tmp_path):
    from efr.imageio import diagnose_file

    path = tmp_path / "really_a.jpg"
    path.write_bytes(cv2.imencode(".png", np.full((8, 8, 3), 90, np.uint8))[1].tobytes())
    assert diagnose_file(path) == "" and read_image(path).shape == (8, 8, 3)

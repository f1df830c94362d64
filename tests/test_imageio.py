"""read_image turns every common image mode into 8-bit BGR and refuses damaged files by name."""

import re

import cv2
import numpy as np
import pytest
from PIL import Image

from efr.io import imageio
from efr.io.errors import EFRError
from efr.io.imageio import (
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
    from efr.data.pipelines import quick_check_image
    from efr.io.imageio import diagnose_file

    path = tmp_path / name
    path.write_bytes(content)
    assert diagnose_file(path).startswith(what)
    assert quick_check_image(path).startswith(what)  # efe_cnn.py's check says the same
    with pytest.raises(UnreadableImageError, match=re.escape(what)):
        read_image(path)


def test_a_png_named_jpg_is_read_by_its_content(tmp_path):
    from efr.io.imageio import diagnose_file

    path = tmp_path / "really_a.jpg"
    path.write_bytes(cv2.imencode(".png", np.full((8, 8, 3), 90, np.uint8))[1].tobytes())
    assert diagnose_file(path) == "" and read_image(path).shape == (8, 8, 3)


# ---------------------------------------------------------------------------------------
# The fast PNG path (decode_simple_png): the crops EFR writes, decoded without OpenCV


def _png(rows, width, height, colour, extra_chunks=()):
    """A PNG of already-filtered ``rows`` (bytes, one filter byte first per row), by hand."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    body = b"".join(chunk(kind, payload) for kind, payload in extra_chunks)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + body
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def _up_filtered(pixels):
    """Rows of ``pixels`` (H, W*C uint8) under PNG's Up filter (row 0: None), as fpng writes them."""
    above = np.vstack([np.zeros_like(pixels[:1]), pixels[:-1]])
    filtered = (pixels.astype(np.int16) - above).astype(np.uint8)
    return [bytes([0 if y == 0 else 2]) + filtered[y].tobytes() for y in range(len(pixels))]


def _row_filters(data):
    import zlib

    chunks = imageio._png_chunks(data)
    raw = zlib.decompress(b"".join(payload for kind, payload in chunks if kind == b"IDAT"))
    height = int.from_bytes(data[20:24], "big")  # IHDR: width, then height
    return set(raw[:: len(raw) // height])


@pytest.mark.parametrize("channels", [3, 4])
def test_the_pngs_efr_writes_take_the_fast_path_and_decode_as_opencv_does(channels):
    pytest.importorskip("fpng")
    smooth = np.dstack([_gradient(64, 64)] + [_gradient(64, 64)[:, :, :1]] * (channels - 3))
    filters = set()
    for image in [_noisy(channels, seed=seed) for seed in range(3)] + [smooth]:
        data = encode_image(image, ".png", png_writer="fpng")
        filters |= _row_filters(data)
        fast = imageio.decode_simple_png(data)
        assert fast is not None, "fpng's PNGs must not fall back to OpenCV"
        assert fast.dtype == np.uint8 and np.array_equal(fast, _decode(data)) and np.array_equal(fast, image)
    assert filters == {0, 2}  # fpng chose None rows for some images and Up rows for others: both were decoded


def test_grey_and_colour_pngs_under_the_up_filter_decode_exactly():
    rng = np.random.default_rng(1)
    for colour, channels in ((0, 1), (2, 3), (6, 4)):
        pixels = rng.integers(0, 256, (37, 29 * channels), dtype=np.uint8)
        data = _png(_up_filtered(pixels), 29, 37, colour)
        fast = imageio.decode_simple_png(data)
        assert fast is not None and np.array_equal(fast, _decode(data)), colour


def test_pngs_the_fast_path_cannot_undo_go_to_opencv_and_none_rows_restart_the_sum(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (20, 16 * 3), dtype=np.uint8)
    rows = _up_filtered(pixels)
    sub_row = [rows[0], b"\x01" + rows[1][1:]] + rows[2:]  # a Sub-filtered row
    none_later = rows[:5] + [b"\x00" + pixels[5].tobytes()] + rows[6:]  # Up rows restarted by a None row
    with_trns = _png(rows, 16, 20, 2, [(b"tRNS", b"\x00\x01\x00\x02\x00\x03")])
    assert imageio.decode_simple_png(_png(sub_row, 16, 20, 2)) is None
    assert np.array_equal(imageio.decode_simple_png(_png(none_later, 16, 20, 2)), _decode(_png(none_later, 16, 20, 2)))
    assert imageio.decode_simple_png(with_trns) is None
    monkeypatch.setattr(imageio, "_PNG_MAX_BYTES", 100)  # too big for the 32-bit running sums
    assert imageio.decode_simple_png(_png(rows, 16, 20, 2)) is None
    monkeypatch.undo()
    # read_image gives OpenCV's answer for every one of them
    for name, data in (("sub", _png(sub_row, 16, 20, 2)), ("none", _png(none_later, 16, 20, 2))):
        (tmp_path / f"{name}.png").write_bytes(data)
        assert np.array_equal(read_image(tmp_path / f"{name}.png"), _decode(data)), name


def test_a_damaged_png_is_refused_as_before(tmp_path):
    pytest.importorskip("fpng")
    data = bytearray(encode_image(_noisy(3), ".png", png_writer="fpng"))
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the image data: its CRC no longer matches
    assert imageio.decode_simple_png(bytes(data)) is None
    (tmp_path / "bad.png").write_bytes(bytes(data))
    assert _decode(bytes(data)) is None  # OpenCV refuses it too
    with pytest.raises(UnreadableImageError, match="bad.png"):
        read_image(tmp_path / "bad.png")


def test_without_isal_pythons_zlib_inflates_the_same_pixels(monkeypatch):
    import zlib

    pytest.importorskip("fpng")
    image = _noisy(3)
    data = encode_image(image, ".png", png_writer="fpng")
    monkeypatch.setattr(imageio, "inflate_lib", zlib)
    assert np.array_equal(imageio.decode_simple_png(data), image)

"""Reading photos of any common mode as 8-bit BGR, and writing outputs atomically.

Face photos arrive as grey, palette, RGBA, 16-bit or CMYK files; every stage wants
one thing, an 8-bit 3-channel BGR array, so ``read_image`` is the one place that
normalises them.  Outputs go to a temporary name and are renamed into place, so an
interrupted run never leaves half an image or half a model behind.
"""

import contextlib
import os
from pathlib import Path

import cv2
import numpy as np

from efr.errors import EFRError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Temporary files end in this suffix, never in an image extension, so that no image
# reader (ours, Keras') ever picks up a half-written file.
PARTIAL_SUFFIX = ".partial"


class UnreadableImageError(EFRError):
    """A file that is not an image, or a damaged one."""


def is_image_file(path):
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder, recursive=True):
    """Image files under ``folder``, sorted, hidden and partial files left out."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and is_image_file(p))


def _looks_truncated(data, suffix):
    # OpenCV decodes a truncated JPEG or PNG into a partly grey image with only a
    # warning on stderr; checking the end markers turns that into a clear error.
    if suffix in (".jpg", ".jpeg"):
        return not data.rstrip(b"\x00").endswith(b"\xff\xd9")
    if suffix == ".png":
        return b"IEND" not in data[-32:]
    return False


def to_bgr8(image):
    """Convert a decoded image of any mode (grey, BGRA, 16-bit, float) to 8-bit BGR."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = image.astype(np.float32)
        top = 1.0 if image.max(initial=0.0) <= 1.0 else 255.0
        image = np.clip(image / top * 255.0, 0, 255).round().astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 4:
        # Composite over white: transparent margins become plain background, not black.
        colour = image[:, :, :3].astype(np.float32)
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        return (colour * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(image[:, :, :3])


def read_image(path):
    """Read ``path`` as an 8-bit BGR array of shape (H, W, 3).

    Accepts grey, palette, RGBA and 16-bit files.  Raises UnreadableImageError for a
    missing, empty, truncated or non-image file, naming the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UnreadableImageError(f"{path}: cannot read file ({err.strerror})") from err
    if not data:
        raise UnreadableImageError(f"{path}: file is empty")
    if _looks_truncated(data, path.suffix.lower()):
        raise UnreadableImageError(f"{path}: image is truncated (file ends early); re-copy or re-export it")
    # JPEGs have no alpha and (in practice) 8 bits, and phone photos store their
    # rotation as an EXIF tag that only IMREAD_COLOR applies; other formats keep
    # alpha and 16 bits for to_bgr8 to convert properly.
    flags = cv2.IMREAD_COLOR if path.suffix.lower() in (".jpg", ".jpeg") else cv2.IMREAD_UNCHANGED
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise UnreadableImageError(f"{path}: not an image OpenCV can decode (jpg, png, bmp, tif expected)")
    return to_bgr8(image)


@contextlib.contextmanager
def atomic_path(path, keep_suffix=False):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary name starts with a dot and ends in ``.partial``, so no folder reader
    (ours or Keras') takes a half-written file for an image.  ``keep_suffix`` keeps the
    final extension after that, for writers that insist on one (Keras wants ``.keras``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}" + (path.suffix if keep_suffix else ""))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def write_text_atomic(path, text):
    write_bytes_atomic(path, text.encode("utf-8"))


def encode_image(image, ext=".png", jpeg_quality=95):
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buffer = cv2.imencode(ext, image, params)
    if not ok:
        raise EFRError(f"OpenCV could not encode an image as {ext}")
    return buffer.tobytes()


def write_image(path, image, jpeg_quality=95):
    """Encode ``image`` by the path's extension and write it atomically."""
    path = Path(path)
    write_bytes_atomic(path, encode_image(image, path.suffix, jpeg_quality))

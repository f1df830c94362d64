"""Reading photos of any common mode as 8-bit BGR, and writing outputs atomically.

Face photos arrive as grey, palette, RGBA, 16-bit or CMYK files; every stage wants
one thing, an 8-bit 3-channel BGR array, so ``read_image`` is the one place that
normalises them.  Outputs go to a temporary name and are renamed into place, so an
interrupted run never leaves half an image or half a model behind.
"""

import contextlib
import os
import struct
from pathlib import Path

import cv2
import numpy as np

from efr.io.errors import EFRError

try:
    # fpng writes 8-bit colour PNGs about 10x faster than libpng (OpenCV's writer) for
    # files 12-20 % larger (BENCHMARKS.md), and PNG encoding is most of the work of crop.py and
    # data_aug.py.  Without it (a platform with no wheel) OpenCV writes every PNG.
    import fpng
except ImportError:
    fpng = None

try:
    # ISA-L's inflate reads PNG data ~2x faster than zlib (BENCHMARKS.md), and decoding the
    # 256 px crops is most of predict.py --faces-only's work.  Without it Python's zlib inflates.
    from isal import isal_zlib as inflate_lib
except ImportError:
    import zlib as inflate_lib

PNG_WRITERS = ("fpng", "opencv")


def default_png_writer():
    """The PNG writer used unless one is asked for: fpng when installed, else OpenCV."""
    return "fpng" if fpng is not None else "opencv"


def check_png_writer(png_writer=None):
    """``png_writer`` (None: the default) checked to be known and installed; its name."""
    png_writer = png_writer or default_png_writer()
    if png_writer not in PNG_WRITERS:
        raise EFRError(f"unknown PNG writer {png_writer!r}: choose from {', '.join(PNG_WRITERS)}")
    if png_writer == "fpng" and fpng is None:
        raise EFRError("the fpng PNG writer is not installed: pip install fpng, or use the opencv writer")
    return png_writer

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


# Image formats by their first bytes (the name's extension may lie).
_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"BM", "bmp"), (b"GIF87a", "gif"),
    (b"GIF89a", "gif"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
)
# Common files that are not images, for a diagnosis that says what the file is.
_OTHER_SIGNATURES = (
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "a program (ELF)"), (b"Rar!", "a RAR archive"), (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"\x1aE\xdf\xa3", "a video (Matroska/WebM)"), (b"OggS", "an Ogg audio/video file"),
    (b"ID3", "an MP3 audio file"), (b"\x00\x00\x01\x00", "an icon (.ico)"),
)


def image_format(head):
    """The image format the leading bytes show ("png", "jpeg", "bmp", "gif", "tiff", "webp"), or None."""
    for signature, name in _IMAGE_SIGNATURES:
        if head.startswith(signature):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def describe_non_image(head):
    """What a file that is no image is, from its leading bytes: 'a text file', 'a PDF document', ..."""
    if not head:
        return "an empty file"
    for signature, name in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return name
    if head[4:8] == b"ftyp":
        return "a video or HEIC photo (ISO media), which OpenCV does not read as an image"
    sample = head.lstrip(b"\xef\xbb\xbf")
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        lowered = text.lstrip().lower()
        if lowered.startswith(("<!doctype html", "<html")):
            return "an HTML page, e.g. a web page saved under an image name"
        if lowered.startswith(("<?xml", "<svg")):
            return "an XML/SVG text file"
        return "a text file"
    return "not a known image format"


def diagnose_file(path, head=None, tail=None):
    """Why ``path`` is not a usable image, from its first and last bytes, or "" when it looks like one.

    The one diagnosis every stage uses: a text file named .png is "not an image (a text
    file)", not "truncated".  ``head``/``tail``: bytes already read (else read here).
    """
    if head is None or tail is None:
        path = Path(path)
        try:
            size = path.stat().st_size
            with open(path, "rb") as handle:
                head = handle.read(64)
                handle.seek(max(0, size - 32))
                tail = handle.read()
        except OSError as err:
            return f"cannot read file ({err.strerror})"
    if not head:
        return "file is empty"
    kind = image_format(head)
    if kind is None:
        return f"not an image ({describe_non_image(head)})"
    if kind == "png" and b"IEND" not in tail[-32:]:
        return "PNG is truncated (file ends early; no end marker)"
    if kind == "jpeg" and not tail.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "JPEG is truncated (file ends early; no end marker)"
    return ""


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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 6: 4}  # colour types the fast path takes: grey, RGB, RGBA (8-bit)
_PNG_TO_OPENCV = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}
_PNG_MAX_BYTES = (2**31 - 1) // 255  # larger images would overflow the 32-bit integral image below


def _png_chunks(data):
    """[(type, payload), ...] of the chunks before IEND; None if a CRC is wrong or IEND never comes."""
    view = memoryview(data)
    chunks, pos, end = [], len(_PNG_SIGNATURE), len(data)
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        if pos + 12 + length > end:
            return None
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if inflate_lib.crc32(view[pos + 4 : pos + 8 + length]) != crc:
            return None
        kind = bytes(view[pos + 4 : pos + 8])
        if kind == b"IEND":
            return chunks
        chunks.append((kind, view[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return None


def decode_simple_png(data):
    """Decode the PNGs crop.py and data_aug.py write; None for any other PNG (left to OpenCV).

    The same array ``cv2.imdecode(..., IMREAD_UNCHANGED)`` gives (grey, BGR or BGRA), about
    twice as fast: fpng, EFR's PNG writer, filters every row with None or Up only, so
    decoding is inflating (``inflate_lib``, ISA-L when installed) and one running sum down
    the columns (OpenCV's integral image).  Anything else (16-bit, palette, interlaced,
    a transparency chunk, Sub/Average/Paeth rows, a bad CRC, a cut file) returns None.
    """
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    channels = _PNG_CHANNELS.get(colour)
    if depth != 8 or channels is None or interlace or not 0 < width * height * channels <= _PNG_MAX_BYTES:
        return None
    chunks = _png_chunks(data)
    if not chunks or any(kind in (b"tRNS", b"PLTE") for kind, _ in chunks):
        return None
    stride = width * channels + 1
    try:
        idat = [payload for kind, payload in chunks if kind == b"IDAT"]
        raw = inflate_lib.decompress(idat[0] if len(idat) == 1 else b"".join(idat))
    except inflate_lib.error:
        return None
    if len(raw) != stride * height:
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride)
    filters = rows[:, 0]
    if ((filters != 0) & (filters != 2)).any():
        return None  # Sub, Average or Paeth rows: a running sum down the columns cannot undo them
    if not filters.any():
        pixels = rows[:, 1:].copy()
    else:
        # Up filter: each byte adds the one above, so a pixel is its column's running sum
        # modulo 256 (the integral image's step along x, cast to 8 bits) ...
        sums = cv2.integral(rows[:, 1:], sdepth=cv2.CV_32S)[1:]
        pixels = cv2.subtract(sums[:, 1:], sums[:, :-1]).astype(np.uint8)
        # ... restarted at every later None row: take off the sum up to the row before it.
        if not filters[1:].all():
            restart = np.maximum.accumulate(np.where(filters == 0, np.arange(height), 0))
            later = restart > 0
            pixels[later] -= pixels[restart[later] - 1]
    pixels = pixels.reshape(height, width, channels)
    return cv2.cvtColor(pixels, _PNG_TO_OPENCV[channels]) if channels > 1 else pixels[:, :, 0]


def read_image(path):
    """Read ``path`` as an 8-bit BGR array of shape (H, W, 3).

    Accepts grey, palette, RGBA and 16-bit files.  Raises UnreadableImageError for a
    missing, empty, truncated or non-image file, naming the file.
    """
    path = path if isinstance(path, Path) else Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UnreadableImageError(f"{path}: cannot read file ({err.strerror})") from err
    problem = diagnose_file(path, data[:64], data[-32:])
    if problem:
        raise UnreadableImageError(f"{path}: {problem}; replace it with a photo, re-copy it, or remove it")
    return decode_image(data, path)


def decode_image(data, name):
    """The bytes of an image file (checked by ``diagnose_file`` already) as 8-bit BGR (H, W, 3).

    ``name``: the file's name (a Path, or a label such as an upload's), for its suffix and for
    the message of the UnreadableImageError raised when OpenCV cannot decode it.
    """
    # JPEGs have no alpha and (in practice) 8 bits, and phone photos store their
    # rotation as an EXIF tag that only IMREAD_COLOR applies; other formats keep
    # alpha and 16 bits for to_bgr8 to convert properly.
    flags = cv2.IMREAD_COLOR if Path(str(name)).suffix.lower() in (".jpg", ".jpeg") else cv2.IMREAD_UNCHANGED
    image = decode_simple_png(data) if flags == cv2.IMREAD_UNCHANGED else None
    if image is None:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise UnreadableImageError(f"{name}: not an image OpenCV can decode (jpg, png, bmp, tif expected)")
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
    except OSError as err:
        if err.filename is None:  # a write() that failed (a full disk) names no file: name the one being written
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def write_text_atomic(path, text):
    write_bytes_atomic(path, text.encode("utf-8"))


def _fpng_encode(image):
    """PNG bytes of an 8-bit BGR or BGRA array, written by fpng (which wants RGB order)."""
    code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    data = fpng.from_ndarray(cv2.cvtColor(image, code)) if image.size else b""
    if not data:  # fpng's only failure signal
        raise EFRError(f"fpng could not encode an image of shape {image.shape} as PNG")
    return data


def encode_image(image, ext=".png", jpeg_quality=95, png_writer=None):
    """``image`` (a BGR, BGRA or grey array) encoded as ``ext``.

    PNGs of 8-bit colour go through ``png_writer`` ("fpng" or "opencv", default
    ``default_png_writer()``); both are lossless, so the pixels read back are the
    same whichever wrote them, but the bytes differ.  Other depths and grey images,
    which fpng does not take, always go through OpenCV.
    """
    ext = ext.lower()
    png_writer = check_png_writer(png_writer)
    if (ext == ".png" and png_writer == "fpng" and image.dtype == np.uint8
            and image.ndim == 3 and image.shape[2] in (3, 4)):
        return _fpng_encode(image)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ext in (".jpg", ".jpeg") else []
    ok, buffer = cv2.imencode(ext, image, params)
    if not ok:
        raise EFRError(f"OpenCV could not encode an image as {ext}")
    return buffer.tobytes()


def write_image(path, image, jpeg_quality=95, png_writer=None):
    """Encode ``image`` by the path's extension (see ``encode_image``) and write it atomically."""
    path = Path(path)
    write_bytes_atomic(path, encode_image(image, path.suffix, jpeg_quality, png_writer))

"""What a request to `efr serve` may send, and uploads checked and decoded in memory.

Every refusal is an ``UploadError`` carrying its HTTP status (4xx) and one line saying what was
wrong and what the limit is; the app turns it into ``{"error": ...}`` and keeps serving.  Nothing
from a request is written to disk: the body is read into memory, parsed there
(``parse_multipart``) and decoded there (``decode_upload``).
"""

import io
from dataclasses import dataclass

from efr.io.imageio import UnreadableImageError, decode_image, diagnose_file, image_format

MB = 1024 * 1024
DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_PIXELS = 40_000_000  # a 7300 x 5500 photo; a decompression bomb is refused before decoding
DEFAULT_MAX_IMAGES = 16
FIELD = "files"  # the multipart form field that carries the images


class UploadError(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = int(status)
        self.message = str(message)


@dataclass(frozen=True)
class Limits:
    """The limits on one request (the body, its images, their pixels)."""

    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * MB)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = DEFAULT_MAX_IMAGES

    def check(self):
        """These limits, or a ValueError naming the one that is not a positive number."""
        for name in ("max_upload_bytes", "max_pixels", "max_images"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        return self

    def describe(self):
        return {"max_upload_mb": round(self.max_upload_bytes / MB, 3), "max_pixels": self.max_pixels,
                "max_images": self.max_images}


def too_large(limits):
    return UploadError(413, f"the upload is larger than the server's limit of {limits.max_upload_bytes / MB:g} MB "
                            "(efr serve --max-upload-mb)")


def check_length(header, limits):
    """Refuse a request whose Content-Length already says it is too large (before reading it)."""
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise UploadError(400, f"Content-Length {header!r} is not a number") from None
    if length > limits.max_upload_bytes:
        raise too_large(limits)


def parse_multipart(body, content_type, limits):
    """[(file name, bytes)] of the ``files`` fields of a multipart/form-data body, parsed in memory."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(400, f"send the images as multipart/form-data in the field {FIELD!r} "
                               f"(e.g. curl -F {FIELD}=@photo.jpg), not {content_type or 'no Content-Type'}")
    parts, part = [], {}

    def begin():
        part.clear()
        part.update(headers={}, field=b"", value=b"", data=[])

    def header_field(data, start, end):
        part["field"] += data[start:end]

    def header_value(data, start, end):
        part["value"] += data[start:end]

    def header_end():
        part["headers"][part["field"].decode("latin-1").lower()] = part["value"].decode("utf-8", "replace")
        part["field"], part["value"] = b"", b""

    def data(data, start, end):
        part["data"].append(data[start:end])

    def end():
        disposition = part["headers"].get("content-disposition", "")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename", b"").decode("utf-8", "replace")
        if name == FIELD:
            if len(parts) >= limits.max_images:
                raise UploadError(413, f"more than {limits.max_images} images in one request "
                                       "(efr serve --max-images); send them in several requests")
            parts.append((filename or f"image {len(parts) + 1}", b"".join(part["data"])))

    callbacks = {"on_part_begin": begin, "on_header_field": header_field, "on_header_value": header_value,
                 "on_header_end": header_end, "on_part_data": data, "on_part_end": end}
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except MultipartParseError as err:
        raise UploadError(400, f"the multipart body is malformed ({err})") from None
    if not parts:
        raise UploadError(400, f"no images: send one or more in the form field {FIELD!r}")
    return parts


def image_size(data):
    """(width, height) from an image's header, without decoding its pixels; None when unknown."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - Pillow may not know the format; OpenCV decides then
        return None


def decode_upload(name, data, limits):
    """One uploaded image as 8-bit BGR, or an UploadError: 415 not an image, 422 damaged, 413 too many pixels."""
    label = str(name)[:200]
    problem = diagnose_file(label, data[:64], data[-32:])
    if problem:
        kind = image_format(data[:64])
        raise UploadError(422 if kind else 415, f"{label}: {problem}")
    size = image_size(data)
    if size is not None and size[0] * size[1] > limits.max_pixels:
        raise UploadError(413, f"{label}: {size[0]} x {size[1]} pixels is more than the server's limit of "
                               f"{limits.max_pixels} (efr serve --max-pixels)")
    suffix = ".jpg" if image_format(data[:64]) == "jpeg" else ".img"  # JPEG: EXIF rotation applied
    try:
        image = decode_image(data, "upload" + suffix)
    except UnreadableImageError:
        raise UploadError(422, f"{label}: not an image OpenCV can decode (jpg, png, bmp, tif, webp expected)") from None
    if image.shape[0] * image.shape[1] > limits.max_pixels:
        raise UploadError(413, f"{label}: {image.shape[1]} x {image.shape[0]} pixels is more than the server's "
                               f"limit of {limits.max_pixels} (efr serve --max-pixels)")
    return image

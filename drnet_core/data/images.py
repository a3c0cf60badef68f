"""Image intake: uploaded bytes -> the (1, 1, 28, 28) input a Fashion-MNIST DRNet expects.

Uploads are whatever people have on their disk, so every step assumes hostile input:

1. size: empty uploads and uploads over `MAX_UPLOAD_BYTES` are refused without parsing anything;
2. format: the real format is sniffed from the leading bytes (the file name is never trusted), and
   only `ACCEPTED_FORMATS` reach Pillow, with Pillow restricted to that one decoder;
3. decompression bombs: `Image.open` reads only the header, and a declared pixel count over
   `MAX_PIXELS` is refused before a single pixel is decoded;
4. decoding: any decoder failure (truncated, corrupt) becomes a `CorruptImage`;
5. normalising the picture: first frame of animations, EXIF rotation honoured, every mode
   (16-bit, CMYK, palette, alpha) converted to 8-bit grayscale;
6. Fashion-MNIST geometry: pad to a square with the background colour, resize to 28x28, invert
   when the background is light (the dataset shows light garments on black), normalise with
   `data.to_model_input`.

Every refusal is an `ImageRejected` subclass whose message says what was wrong and what is accepted.
Nothing here touches global state (no Pillow settings are changed), so concurrent sessions are safe.
"""
from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from drnet_core.data.datasets import to_model_input
from drnet_core.defaults import MAX_UPLOAD_MB

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES: int = MAX_UPLOAD_MB * 2**20
MAX_PIXELS: int = 40_000_000  # 40 megapixels: any real photo fits; a bomb declaring more is refused unread
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
IMAGE_SIZE = 28
# Very large or very elongated pictures are shrunk to this long side before padding to a square,
# so a 1x5000 strip never becomes a 5000x5000 canvas.
WORKING_SIZE = 1024

_IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "jpe", "jfif", "webp", "bmp", "gif")
_ACCEPTED_TEXT = f"Accepted: PNG, JPEG, WebP, BMP or GIF images up to {MAX_UPLOAD_MB} MB and 40 megapixels."

# Signatures of the accepted formats (what the bytes are, whatever the name says).
_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
# Signatures of common non-image (or unsupported image) files, named in the refusal.
_OTHER_SIGNATURES = (
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a zip archive (or an Office document)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x00\x00\x01\x00", "a Windows icon"),
    (b"8BPS", "a Photoshop document"),
    (b"\x7fELF", "a program (ELF executable)"),
    (b"MZ", "a Windows program"),
)


class ImageRejected(ValueError):
    """Base of every intake refusal; the message says what was wrong and what is accepted."""


class EmptyUpload(ImageRejected):
    """The upload holds zero bytes."""


class UploadTooLarge(ImageRejected):
    """The upload is over MAX_UPLOAD_BYTES."""


class UnsupportedFormat(ImageRejected):
    """Not one of ACCEPTED_FORMATS (text, HTML, SVG, PDF, zip, ...), whatever the file name says."""


class CorruptImage(ImageRejected):
    """Looks like an accepted image format but cannot be decoded (truncated or damaged)."""


class ImageTooLarge(ImageRejected):
    """Declares more than MAX_PIXELS pixels (a decompression bomb); refused before decoding."""


@dataclass
class PreparedImage:
    original: Image.Image   # first frame, EXIF rotation applied, RGB or L, for display
    grayscale: Image.Image  # grayscale, padded to square (before resize), for display
    pixels: torch.Tensor    # (28, 28) uint8, after resize and (optional) inversion: what the model sees
    inverted: bool
    model_input: torch.Tensor  # (1, 1, 28, 28) float, normalised with data.to_model_input


# ---- bytes -> decoded first frame -------------------------------------------------------------

def _describe(filename: str | None) -> str:
    return f"'{filename}'" if filename else "The upload"


def sniff_format(data: bytes) -> str | None:
    """The accepted image format the bytes really are, or None."""
    for signature, name in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def describe_non_image(data: bytes) -> str:
    """A person's name for what a refused file is: 'a PDF document', 'an SVG drawing', ..."""
    for signature, name in _OTHER_SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF":
        return "a RIFF file (audio or video, not WebP)"
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in head:
        return "an SVG drawing (vector graphics are not accepted; export it as PNG)"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:512]:
        return "an HTML page"
    if head.startswith(b"<?xml") or head.startswith(b"<"):
        return "an XML or markup file"
    try:
        data[:4096].decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "binary data of no recognised format"


def _check_size(data: bytes, filename: str | None) -> None:
    if len(data) == 0:
        raise EmptyUpload(f"{_describe(filename)} is empty (0 bytes). {_ACCEPTED_TEXT}")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadTooLarge(f"{_describe(filename)} is {len(data) / 2**20:.1f} MB, over the "
                             f"{MAX_UPLOAD_MB} MB upload limit. {_ACCEPTED_TEXT}")


def _as_bytes(data) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if hasattr(data, "getvalue"):  # an uploaded-file or BytesIO object
        return bytes(data.getvalue())
    raise TypeError(f"expected the upload's bytes, got {type(data).__name__}")


def _open_header(data: bytes, kind: str, filename: str | None) -> Image.Image:
    """Image.open reads only the header; refuse bombs here, before any pixel is decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=[kind])
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{_describe(filename)} declares an enormous picture (a decompression bomb); "
                            f"refused before decoding. {_ACCEPTED_TEXT}") from None
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as error:
        raise CorruptImage(f"{_describe(filename)} starts like a {kind} image but is truncated or damaged "
                           f"({_reason(error)}). Save it again and re-upload. {_ACCEPTED_TEXT}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptImage(f"{_describe(filename)} declares an empty {width}x{height} picture. {_ACCEPTED_TEXT}")
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(f"{_describe(filename)} declares {width}x{height} pixels "
                            f"({width * height / 1e6:.0f} megapixels), over the {MAX_PIXELS // 1_000_000} megapixel "
                            f"limit; refused before decoding. {_ACCEPTED_TEXT}")
    return image


def _reason(error: BaseException) -> str:
    if isinstance(error, Image.UnidentifiedImageError):
        return "its header cannot be read"  # Pillow's own text names an in-memory object, useless to a person
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__


def decode_upload(data: bytes, filename: str | None = None) -> Image.Image:
    """Bytes -> the first frame, EXIF rotation applied, in mode RGB or L. Raises ImageRejected subclasses."""
    data = _as_bytes(data)
    _check_size(data, filename)
    kind = sniff_format(data)
    if kind is None:
        extension = filename.rsplit(".", 1)[-1].lower() if filename and "." in filename else ""
        named = f", although its name ends in .{extension}" if extension in _IMAGE_EXTENSIONS else ""
        raise UnsupportedFormat(f"{_describe(filename)} is {describe_non_image(data)}, not a supported image{named}. "
                                f"{_ACCEPTED_TEXT}")
    image = _open_header(data, kind, filename)
    try:
        image.seek(0)  # the first frame of an animation
        if kind == "JPEG":
            image.draft(None, (WORKING_SIZE, WORKING_SIZE))  # decode big photos at a reduced DCT scale
        image.load()
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{_describe(filename)} is too large to decode. {_ACCEPTED_TEXT}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as error:
        raise CorruptImage(f"{_describe(filename)} is a damaged or truncated {kind} image and cannot be decoded "
                           f"({_reason(error)}). Save it again and re-upload. {_ACCEPTED_TEXT}") from None
    image = _apply_exif_rotation(image)
    try:
        return to_display_mode(image)
    except (ValueError, OSError) as error:
        raise UnsupportedFormat(f"{_describe(filename)} uses the {image.mode} colour mode, which cannot be converted "
                                f"to grayscale ({_reason(error)}). {_ACCEPTED_TEXT}") from None


def _apply_exif_rotation(image: Image.Image) -> Image.Image:
    try:
        rotated = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error) as error:
        # A broken EXIF block should not cost the picture: use it unrotated.
        logger.warning("ignoring unreadable EXIF orientation: %s", _reason(error))
        return image
    return rotated if rotated is not None else image


# ---- mode conversion ----------------------------------------------------------------------------

def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale -> 8-bit L by scaling (Pillow's convert clips at 255)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.min(initial=0) >= 0
                                         and values.max(initial=0) <= 65535):
        scaled = values / 257.0  # 16-bit full range -> 8-bit full range
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite a picture with transparency onto a plain background that contrasts with its content.

    Dark content (a drawing, a product shot) goes on white; light content (a white garment on a
    transparent background) goes on black, so it is not erased by the background.
    """
    rgba = image.convert("RGBA")
    pixels = np.asarray(rgba, dtype=np.float64)
    alpha = pixels[..., 3] / 255.0
    luma = pixels[..., :3] @ np.array([0.299, 0.587, 0.114])
    content = float((luma * alpha).sum() / alpha.sum()) if alpha.sum() > 0 else 0.0
    background = (0, 0, 0, 255) if content > 127.5 else (255, 255, 255, 255)
    flattened = Image.alpha_composite(Image.new("RGBA", rgba.size, background), rgba)
    return flattened.convert("L" if image.mode in ("LA", "La") else "RGB")


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info


def to_display_mode(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB or L, converting colour spaces and bit depths correctly."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_l(image)
    if _has_transparency(image):
        return _flatten_alpha(image)
    if mode == "P":
        return image.convert("RGB")
    # CMYK, YCbCr, LAB, HSV: Pillow's converters (CMYK from Adobe JPEGs is already un-inverted on read).
    return image.convert("RGB")


# ---- decoded picture -> model input -------------------------------------------------------------

def _shrink_to_working_size(image: Image.Image) -> Image.Image:
    width, height = image.size
    longest = max(width, height)
    if longest <= WORKING_SIZE:
        return image
    scale = WORKING_SIZE / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BOX)  # BOX: exact area average, cheap on big reductions


def border_value(gray: Image.Image) -> int:
    """Median grey level of the outermost rows and columns: the picture's background."""
    pixels = np.asarray(gray)
    border = np.concatenate([pixels[0, :], pixels[-1, :], pixels[:, 0], pixels[:, -1]])
    return int(np.median(border))


def pad_to_square(gray: Image.Image, fill: int) -> Image.Image:
    width, height = gray.size
    side = max(width, height)
    if width == height:
        return gray
    canvas = Image.new("L", (side, side), fill)
    canvas.paste(gray, ((side - width) // 2, (side - height) // 2))
    return canvas


def prepare_image(image: Image.Image, invert: bool | None = None) -> PreparedImage:
    """A decoded picture -> what the model sees. invert=None: invert when the background is light."""
    original = to_display_mode(image)
    gray = _shrink_to_working_size(original).convert("L")
    background = border_value(gray)
    square = pad_to_square(gray, background)
    small = square.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    inverted = background > 127 if invert is None else bool(invert)
    pixels = torch.from_numpy(np.array(small, dtype=np.uint8))
    if inverted:
        pixels = 255 - pixels
    return PreparedImage(original=original, grayscale=square, pixels=pixels, inverted=inverted,
                         model_input=to_model_input(pixels.unsqueeze(0)))


def image_from_bytes(data: bytes, filename: str | None = None, invert: bool | None = None) -> PreparedImage:
    """Uploaded bytes -> PreparedImage, or an ImageRejected subclass with a message for a person."""
    return prepare_image(decode_upload(data, filename), invert=invert)


def prepare_dataset_image(pixels: torch.Tensor) -> PreparedImage:
    """A (28, 28) uint8 Fashion-MNIST image (gallery): already in the model's geometry, never inverted."""
    pixels = torch.as_tensor(pixels)
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE) or pixels.dtype != torch.uint8:
        raise ValueError(f"expected a (28, 28) uint8 image, got {tuple(pixels.shape)} {pixels.dtype}")
    pixels = pixels.detach().cpu().clone()
    picture = Image.fromarray(pixels.numpy())
    return PreparedImage(original=picture, grayscale=picture.copy(), pixels=pixels, inverted=False,
                         model_input=to_model_input(pixels.unsqueeze(0)))

"""Image intake against a corpus of hostile and odd uploads, all generated here.

Each corpus entry is (bytes, file name) and has one exact expected outcome: accepted as a
(1, 1, 28, 28) float input with finite values in the normalised pixel range, or refused with one
exact `ImageRejected` subclass.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFile

from drnet_core.data import images
from drnet_core.data.datasets import DATASETS
from drnet_core.data.images import (CorruptImage, EmptyUpload, ImageRejected, ImageTooLarge, UnsupportedFormat,
                               UploadTooLarge)

(MEAN,), (STD,) = DATASETS["fashion-mnist"].normalisation
LOW, HIGH = (0.0 - MEAN) / STD, (1.0 - MEAN) / STD
ACCEPTED = "accepted"

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


# ---- builders -----------------------------------------------------------------------------------

def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def garment(size=(60, 80), background=255, ink=0, mode="L") -> Image.Image:
    """A dark (or light) rectangle 'garment' on a plain background."""
    image = Image.new("L", size, background)
    width, height = size
    ImageDraw.Draw(image).rectangle([width // 4, height // 4, 3 * width // 4, 3 * height // 4], fill=ink)
    return image.convert(mode)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header declares width x height pixels: a decompression bomb's header."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def gif_declaring(width: int, height: int) -> bytes:
    """A tiny GIF whose logical screen declares width x height."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00" + b"\x3b")


def interlaced_png() -> bytes:
    """Pillow writes no interlaced PNGs; re-encode a garment's scanlines in Adam7 order by hand."""
    pixels = np.asarray(garment((16, 16)))
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    raw = b"".join(b"".join(b"\x00" + row.tobytes() for row in pixels[y0::dy, x0::dx])
                   for y0, x0, dy, dx in passes if pixels[y0::dy, x0::dx].size)
    header = struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def sixteen_bit_gradient() -> bytes:
    values = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    return encode(image, "PNG")


def cmyk_jpeg() -> bytes:
    image = Image.new("CMYK", (64, 64), (0, 0, 0, 0))  # white paper
    ImageDraw.Draw(image).rectangle([16, 16, 48, 48], fill=(0, 0, 0, 255))  # black ink
    return encode(image, "JPEG", quality=95)


def palette_with_transparency() -> bytes:
    image = Image.new("P", (48, 48), 0)
    image.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)  # index 0 red (transparent), index 1 black
    ImageDraw.Draw(image).rectangle([12, 12, 36, 36], fill=1)
    return encode(image, "PNG", transparency=0)


def rgba(ink=(0, 0, 0, 255)) -> bytes:
    image = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse([8, 8, 40, 40], fill=ink)
    return encode(image, "PNG")


def la_image() -> bytes:
    image = Image.new("LA", (40, 40), (255, 0))
    ImageDraw.Draw(image).rectangle([10, 10, 30, 30], fill=(0, 255))
    return encode(image, "PNG")


def animation_frames() -> list[Image.Image]:
    first = garment((48, 48), background=255, ink=0).convert("RGB")  # dark square on white
    second = Image.new("RGB", (48, 48), (0, 0, 0))                   # all black
    third = Image.new("RGB", (48, 48), (128, 128, 128))
    return [first, second, third]


def animated(fmt: str) -> bytes:
    frames = animation_frames()
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_rotated_jpeg() -> bytes:
    """Stored 40 wide x 20 tall, left half black; EXIF orientation 6 = display rotated 90 degrees clockwise."""
    image = Image.new("L", (40, 20), 255)
    ImageDraw.Draw(image).rectangle([0, 0, 19, 19], fill=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95)


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("shirt.png", encode(garment(), "PNG"))
    return buffer.getvalue()


PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
       b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
       b'<rect width="28" height="28" fill="black"/></svg>\n')
HTML = b"<!DOCTYPE html>\n<html><body><img src='shirt.png'></body></html>\n"
TEXT = b"This is a note about a shirt, not a picture of one.\n" * 4


def accepted_corpus(png: bytes, jpeg: bytes, webp: bytes, gif: bytes) -> dict[str, tuple[bytes, str]]:
    return {
        "png_garment_on_white": (png, "shirt.png"),
        "png_light_garment_on_black": (encode(garment(background=0, ink=230), "PNG"), "shirt.png"),
        "jpeg_rgb": (jpeg, "shirt.jpg"),
        "jpeg_progressive": (encode(garment().convert("RGB"), "JPEG", progressive=True), "shirt.jpeg"),
        "jpeg_grayscale": (encode(garment(), "JPEG"), "shirt.jpg"),
        "webp": (webp, "shirt.webp"),
        "bmp": (encode(garment().convert("RGB"), "BMP"), "shirt.bmp"),
        "gif": (gif, "shirt.gif"),
        "png_interlaced": (interlaced_png(), "interlaced.png"),
        "png_1bit": (encode(garment(mode="1"), "PNG"), "bilevel.png"),
        "png_16bit_gray": (sixteen_bit_gradient(), "gradient16.png"),
        "jpeg_cmyk": (cmyk_jpeg(), "print.jpg"),
        "png_palette_transparency": (palette_with_transparency(), "palette.png"),
        "png_rgba_dark_ink": (rgba(), "cutout.png"),
        "png_rgba_light_ink": (rgba((255, 255, 255, 255)), "cutout_white.png"),
        "png_la": (la_image(), "la.png"),
        "gif_animated": (animated("GIF"), "anim.gif"),
        "webp_animated": (animated("WEBP"), "anim.webp"),
        "jpeg_exif_rotated": (exif_rotated_jpeg(), "phone.jpg"),
        "png_1x1": (encode(Image.new("L", (1, 1), 77), "PNG"), "dot.png"),
        "png_1x5000": (encode(Image.new("L", (1, 5000), 200), "PNG"), "strip.png"),
        "png_5000x1": (encode(Image.new("L", (5000, 1), 20), "PNG"), "strip_wide.png"),
        "png_named_jpg": (png, "actually_png.jpg"),
        "jpeg_named_txt": (jpeg, "notes.txt"),
        "jpeg_photo_3000x2000": (encode(Image.new("RGB", (3000, 2000), (200, 180, 160)), "JPEG"), "photo.jpg"),
    }


def refused_corpus(png: bytes, jpeg: bytes, webp: bytes, gif: bytes) -> dict[str, tuple[bytes, str]]:
    noise = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    photo_jpeg = encode(Image.fromarray(noise), "JPEG", quality=90)
    return {
        "zero_bytes": (b"", "empty.png"),
        "over_upload_limit": (png + b"\x00" * (images.MAX_UPLOAD_BYTES + 1 - len(png)), "huge.png"),
        "png_truncated": (png[: len(png) // 2], "cut.png"),
        "png_signature_only": (png[:8], "cut.png"),
        "jpeg_truncated_in_header": (jpeg[:40], "cut.jpg"),
        "jpeg_truncated_in_scan": (photo_jpeg[: len(photo_jpeg) * 2 // 3], "cut.jpg"),
        "gif_truncated": (gif[:30], "cut.gif"),
        "webp_truncated": (webp[:30], "cut.webp"),
        "bmp_garbage_after_magic": (b"BM" + bytes(range(256)) * 2, "bad.bmp"),
        "text": (TEXT, "notes.txt"),
        "text_named_png": (TEXT, "notes.png"),
        "html": (HTML, "page.html"),
        "html_named_png": (HTML, "page.png"),
        "svg": (SVG, "drawing.svg"),
        "svg_named_png": (SVG, "drawing.png"),
        "pdf": (PDF, "scan.pdf"),
        "pdf_named_png": (PDF, "scan.png"),
        "zip": (zip_bytes(), "shirts.zip"),
        "zip_named_png": (zip_bytes(), "shirts.png"),
        "tiff": (encode(garment(), "TIFF"), "scan.tiff"),
        "random_bytes_named_png": (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "x.png"),
        "png_bomb_header_100000x100000": (png_declaring(100_000, 100_000), "bomb.png"),
        "png_bomb_header_8000x8000": (png_declaring(8000, 8000), "bomb.png"),
        "png_bomb_real_8000x8000": (encode(Image.new("1", (8000, 8000), 0), "PNG", optimize=True), "bomb.png"),
        "gif_bomb_header_65535x65535": (gif_declaring(65535, 65535), "bomb.gif"),
    }


def build_corpus() -> dict[str, tuple[bytes, str]]:
    """Every upload case by name: (bytes, file name), the accepted ones first."""
    encoded = dict(png=encode(garment(), "PNG"), jpeg=encode(garment().convert("RGB"), "JPEG", quality=90),
                   webp=encode(garment().convert("RGB"), "WEBP"), gif=encode(garment(), "GIF"))
    return {**accepted_corpus(**encoded), **refused_corpus(**encoded)}


EXPECTED = {
    "png_garment_on_white": ACCEPTED, "png_light_garment_on_black": ACCEPTED, "jpeg_rgb": ACCEPTED,
    "jpeg_progressive": ACCEPTED, "jpeg_grayscale": ACCEPTED, "webp": ACCEPTED, "bmp": ACCEPTED, "gif": ACCEPTED,
    "png_interlaced": ACCEPTED, "png_1bit": ACCEPTED, "png_16bit_gray": ACCEPTED, "jpeg_cmyk": ACCEPTED,
    "png_palette_transparency": ACCEPTED, "png_rgba_dark_ink": ACCEPTED, "png_rgba_light_ink": ACCEPTED,
    "png_la": ACCEPTED, "gif_animated": ACCEPTED, "webp_animated": ACCEPTED, "jpeg_exif_rotated": ACCEPTED,
    "png_1x1": ACCEPTED, "png_1x5000": ACCEPTED, "png_5000x1": ACCEPTED, "png_named_jpg": ACCEPTED,
    "jpeg_named_txt": ACCEPTED, "jpeg_photo_3000x2000": ACCEPTED,
    "zero_bytes": EmptyUpload,
    "over_upload_limit": UploadTooLarge,
    "png_truncated": CorruptImage, "png_signature_only": CorruptImage, "jpeg_truncated_in_header": CorruptImage,
    "jpeg_truncated_in_scan": CorruptImage, "gif_truncated": CorruptImage, "webp_truncated": CorruptImage,
    "bmp_garbage_after_magic": CorruptImage,
    "text": UnsupportedFormat, "text_named_png": UnsupportedFormat, "html": UnsupportedFormat,
    "html_named_png": UnsupportedFormat, "svg": UnsupportedFormat, "svg_named_png": UnsupportedFormat,
    "pdf": UnsupportedFormat, "pdf_named_png": UnsupportedFormat, "zip": UnsupportedFormat,
    "zip_named_png": UnsupportedFormat, "tiff": UnsupportedFormat, "random_bytes_named_png": UnsupportedFormat,
    "png_bomb_header_100000x100000": ImageTooLarge, "png_bomb_header_8000x8000": ImageTooLarge,
    "png_bomb_real_8000x8000": ImageTooLarge, "gif_bomb_header_65535x65535": ImageTooLarge,
}


@pytest.fixture(scope="module")
def corpus() -> dict[str, tuple[bytes, str]]:
    return build_corpus()


def test_corpus_is_large_and_fully_specified(corpus):
    assert len(corpus) >= 30
    assert set(corpus) == set(EXPECTED)


def assert_valid_input(prepared: images.PreparedImage) -> None:
    assert prepared.model_input.shape == (1, 1, 28, 28)
    assert prepared.model_input.dtype == torch.float32
    assert torch.isfinite(prepared.model_input).all()
    assert prepared.model_input.min() >= LOW - 1e-5 and prepared.model_input.max() <= HIGH + 1e-5
    assert prepared.pixels.shape == (28, 28) and prepared.pixels.dtype == torch.uint8
    assert prepared.original.mode in ("RGB", "L")
    assert prepared.grayscale.mode == "L" and prepared.grayscale.width == prepared.grayscale.height


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_corpus_outcome(corpus, case):
    data, filename = corpus[case]
    expected = EXPECTED[case]
    if expected is ACCEPTED:
        assert_valid_input(images.image_from_bytes(data, filename))
        return
    with pytest.raises(ImageRejected) as caught:
        images.image_from_bytes(data, filename)
    assert type(caught.value) is expected, f"{case}: {type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    assert filename in message and "Accepted: PNG, JPEG" in message  # names the file and what is accepted
    assert "Traceback" not in message


@pytest.mark.parametrize("case", ["pdf_named_png", "zip_named_png", "svg_named_png", "html_named_png", "text_named_png"])
def test_renamed_files_are_named_for_what_they_are(corpus, case):
    kind = {"pdf": "PDF", "zip": "zip", "svg": "SVG", "html": "HTML", "text": "text"}[case.split("_")[0]]
    with pytest.raises(UnsupportedFormat, match=kind):
        images.decode_upload(*corpus[case])


@pytest.mark.parametrize("case", ["png_bomb_real_8000x8000", "png_bomb_header_8000x8000", "png_bomb_header_100000x100000",
                                  "gif_bomb_header_65535x65535"])
def test_bombs_are_refused_before_any_pixel_is_decoded(corpus, case, monkeypatch):
    decoded = []
    real_load = ImageFile.ImageFile.load

    def recording_load(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    with pytest.raises(ImageTooLarge):
        images.decode_upload(*corpus[case])
    assert decoded == []


def test_real_bomb_is_small_on_disk(corpus):
    data, _ = corpus["png_bomb_real_8000x8000"]
    assert len(data) < 100_000  # 64 megapixels in a few kilobytes: what makes it a bomb


def test_intake_leaves_pillow_global_limits_alone(corpus):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    for data, filename in corpus.values():
        try:
            images.image_from_bytes(data, filename)
        except ImageRejected:
            pass
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


# ---- accepted files: the picture the model sees is the right one -------------------------------

def test_dark_on_light_is_inverted_to_fashion_mnist_polarity(corpus):
    prepared = images.image_from_bytes(*corpus["png_garment_on_white"])
    assert prepared.inverted
    assert prepared.pixels[0, 0] < 20 and prepared.pixels[14, 14] > 235  # black background, light garment


def test_light_on_dark_is_left_as_is(corpus):
    prepared = images.image_from_bytes(*corpus["png_light_garment_on_black"])
    assert not prepared.inverted
    assert prepared.pixels[0, 0] < 20 and prepared.pixels[14, 14] > 200


def test_explicit_invert_overrides_auto(corpus):
    data, name = corpus["png_garment_on_white"]
    auto = images.image_from_bytes(data, name)
    forced = images.image_from_bytes(data, name, invert=False)
    assert not forced.inverted and torch.equal(forced.pixels, 255 - auto.pixels)


def test_sixteen_bit_gray_keeps_its_full_range(corpus):
    prepared = images.image_from_bytes(*corpus["png_16bit_gray"])
    assert prepared.original.mode == "L"
    assert prepared.original.getextrema() == (0, 255)
    # A clipping conversion would make almost every pixel 255; scaling keeps the gradient.
    assert 100 < np.asarray(prepared.original).mean() < 155


def test_cmyk_ink_is_dark(corpus):
    prepared = images.image_from_bytes(*corpus["jpeg_cmyk"])
    gray = np.asarray(prepared.original.convert("L"))
    assert gray[0, 0] > 200 and gray[32, 32] < 60
    assert prepared.inverted and prepared.pixels[14, 14] > 180


@pytest.mark.parametrize("case", ["png_palette_transparency", "png_rgba_dark_ink", "png_la"])
def test_dark_content_on_transparency_goes_on_white(corpus, case):
    prepared = images.image_from_bytes(*corpus[case])
    gray = np.asarray(prepared.original.convert("L"))
    assert gray[0, 0] == 255 and gray[gray.shape[0] // 2, gray.shape[1] // 2] < 30
    assert prepared.inverted and prepared.pixels[14, 14] > 200


def test_light_content_on_transparency_goes_on_black(corpus):
    prepared = images.image_from_bytes(*corpus["png_rgba_light_ink"])
    gray = np.asarray(prepared.original.convert("L"))
    assert gray[0, 0] == 0 and gray[24, 24] == 255
    assert not prepared.inverted and prepared.pixels[14, 14] > 200


@pytest.mark.parametrize("case", ["gif_animated", "webp_animated"])
def test_animation_gives_its_first_frame(corpus, case):
    prepared = images.image_from_bytes(*corpus[case])
    expected = images.prepare_image(animation_frames()[0])
    assert prepared.inverted == expected.inverted
    assert (prepared.pixels.int() - expected.pixels.int()).abs().max() <= 40  # lossy WebP/GIF palettes
    assert prepared.pixels[0, 0] < 30 and prepared.pixels[14, 14] > 200      # not the black or grey frame


def test_exif_rotation_is_honoured(corpus):
    picture = images.decode_upload(*corpus["jpeg_exif_rotated"])
    assert picture.size == (20, 40)  # stored 40x20, displayed rotated
    gray = np.asarray(picture.convert("L"), dtype=float)
    assert gray[:20].mean() < 60 and gray[20:].mean() > 200  # the black half is now on top


def test_extreme_aspect_ratios_are_padded_not_stretched(corpus):
    tall = images.image_from_bytes(*corpus["png_1x5000"])
    assert tall.grayscale.width == tall.grayscale.height <= images.WORKING_SIZE
    # A light 1-pixel strip padded with its own colour stays uniform.
    assert int(tall.pixels.max()) - int(tall.pixels.min()) <= 1
    wide = images.image_from_bytes(*corpus["png_5000x1"])
    assert int(wide.pixels.max()) - int(wide.pixels.min()) <= 1


def test_one_pixel_image(corpus):
    prepared = images.image_from_bytes(*corpus["png_1x1"])
    assert not prepared.inverted and torch.all(prepared.pixels == 77)


def test_uploaded_file_objects_are_read():
    data = encode(garment(), "PNG")
    assert_valid_input(images.image_from_bytes(io.BytesIO(data), "shirt.png"))


def test_dataset_image_is_used_unchanged():
    pixels = torch.randint(0, 256, (28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    prepared = images.prepare_dataset_image(pixels)
    assert not prepared.inverted and torch.equal(prepared.pixels, pixels)
    assert_valid_input(prepared)
    with pytest.raises(ValueError):
        images.prepare_dataset_image(torch.zeros(32, 32, dtype=torch.uint8))

"""Decode any image into the RGB frame a browser shows: EXIF orientation applied, any mode to RGB."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


class ImageError(ValueError):
    """An image that cannot be used: unreadable, truncated, too large.

    `problem` completes a sentence about the file (`is empty`); `about(subject)` says it of a named
    source, e.g. `about("the file at https://x/a.jpg")`.
    """

    def __init__(self, problem: str, subject: str = "the file"):
        super().__init__(problem, subject)  # both in args: the error pickles back as it was
        self.problem = problem
        self.subject = subject

    def __str__(self) -> str:
        return self.about(self.subject)

    def about(self, subject: str) -> str:
        return f"{subject} {self.problem}"


def open_image(source: str | Path | bytes | Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, check size, apply EXIF orientation, convert to RGB. Raises ImageError with a reason."""
    if isinstance(source, Image.Image):
        image, subject = source, "the image"
    else:
        data = source if isinstance(source, bytes) else None
        subject = "the file"  # callers name their source (a URL, a path): ImageError.about
        if data is not None and len(data) == 0:
            raise ImageError("is empty", subject)
        _leave_the_pixel_limit_to_us()
        try:
            image = Image.open(io.BytesIO(data) if data is not None else source)
        except FileNotFoundError:
            raise ImageError("does not exist", subject) from None
        except UnidentifiedImageError:
            raise ImageError(f"is not a readable image (PIL does not know its format{_looks_like(data)})", subject) from None
        except Exception as exc:  # PIL raises OSError, SyntaxError, ... on a damaged header
            raise ImageError(f"is not a readable image ({_reason(exc)})", subject) from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"is an image too large to process: {width}x{height} = {width * height:,} pixels exceeds the limit "
            f"of {max_pixels:,} (MAX_IMAGE_PIXELS)",
            subject,
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except Exception as exc:  # truncated data surfaces only on load()
        raise ImageError(f"is a damaged or truncated image ({_reason(exc)})", subject) from None


def _leave_the_pixel_limit_to_us() -> None:
    """Turn PIL's own decompression-bomb check off: `open_image` checks `max_pixels` itself, from the
    header, before a pixel is decoded. PIL's check (a warning above 89 M pixels, an error above 179 M)
    would refuse what MAX_IMAGE_PIXELS allows and print warnings into the log for what we refuse anyway.
    """
    Image.MAX_IMAGE_PIXELS = None


def _reason(exc: Exception) -> str:
    """`OSError: image file is truncated`, with Python object reprs (`<_io.BytesIO object at 0x...>`) removed."""
    text = " ".join(_OBJECT_REPR.sub("", str(exc)).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _looks_like(data: bytes | None) -> str:
    """`; it starts with "<!DOCTYPE html>"` when the bytes are text (an error page saved as .jpg)."""
    text = " ".join((data or b"")[:40].decode("utf-8", "ignore").split())  # "ignore": a character cut at 40
    if not text or not text.isprintable():
        return ""
    return f'; it is text starting with "{text}"'


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency composited on white, high bit depths rescaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # PIL's convert() clips these to 0..255 (a 16-bit scan turns white); rescale instead.
        array = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and array.max(initial=0) > 255):
            array = array / (65535.0 if array.max(initial=0) > 255 else 255.0) * 255.0
        elif mode == "F":
            lo, hi = float(array.min(initial=0.0)), float(array.max(initial=0.0))
            array = (array - lo) / (hi - lo or 1.0) * 255.0
        gray = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")

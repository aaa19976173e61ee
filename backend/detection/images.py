"""Decode any image into the RGB frame a browser shows: EXIF orientation applied, any mode to RGB."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Refuse decompression bombs with a clear error rather than PIL's warning-then-error.
DEFAULT_MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """An image that cannot be used: unreadable, truncated, too large."""


def open_image(source: str | Path | bytes | Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, check size, apply EXIF orientation, convert to RGB. Raises ImageError with a reason."""
    if isinstance(source, Image.Image):
        image = source
    else:
        data = source if isinstance(source, bytes) else None
        if data is not None and len(data) == 0:
            raise ImageError("the image file is empty")
        try:
            image = Image.open(io.BytesIO(data) if data is not None else source)
        except FileNotFoundError:
            raise ImageError(f"image file not found: {source}") from None
        except Image.DecompressionBombError as exc:
            raise ImageError(f"image too large: {exc}") from None
        except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
            raise ImageError(f"not a readable image ({type(exc).__name__}: {exc})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"image too large: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,}"
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except ImageError:
        raise
    except Exception as exc:  # truncated data surfaces only on load()
        raise ImageError(f"image data is damaged or truncated ({type(exc).__name__}: {exc})") from None


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

"""Small encoded images made in memory, for media hosts, local-files roots and request bodies."""
from __future__ import annotations

from io import BytesIO

from PIL import Image


def jpeg_bytes(size=(64, 48), color=(200, 30, 30), exif_orientation: int | None = None) -> bytes:
    image = Image.new("RGB", size, color)
    # a second colour block, so the image is not flat
    image.paste((20, 40, 220), (0, 0, size[0] // 2, size[1] // 3))
    out = BytesIO()
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(out, "JPEG", exif=exif.tobytes())
    else:
        image.save(out, "JPEG")
    return out.getvalue()


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    out = BytesIO()
    image.save(out, "PNG", **kwargs)
    return out.getvalue()

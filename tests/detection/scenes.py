"""Drawn test images for the detection tests."""
from PIL import Image, ImageDraw


def scene(size=(640, 480)):
    image = Image.new("RGB", size, (30, 120, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle([50, 60, 300, 400], fill=(220, 40, 40))
    draw.ellipse([350, 100, 600, 350], fill=(240, 240, 20))
    return image

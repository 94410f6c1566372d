"""Decoding face images to fixed-size grayscale uint8 arrays (offline)."""

from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".pgm",
                    ".ppm", ".webp")


class ImageReadError(ValueError):
    """An image could not be decoded; `reason` says why."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def to_face_array(image: Image.Image, size: int) -> np.ndarray:
    """Any PIL image -> [size, size] uint8 grayscale.

    Palette ('P'), RGB(A), 16-bit and binary images all go through `convert('L')`;
    a non-square image is centre-cropped to a square first so faces keep their
    aspect ratio.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, np.float64)
        peak = values.max() if values.size else 0.0
        image = Image.fromarray(
            np.zeros(values.shape, np.uint8) if peak <= 0
            else np.round(values / peak * 255.0).astype(np.uint8))
    gray = image.convert("L")
    width, height = gray.size
    side = min(width, height)
    if width != height:
        left, top = (width - side) // 2, (height - side) // 2
        gray = gray.crop((left, top, left + side, top + side))
    if side != size:
        gray = gray.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(gray, np.uint8).copy()


def read_face_image(path: str, size: int) -> np.ndarray:
    """Decodes the image file at `path` to [size, size] uint8; ImageReadError if not."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.size[0] == 0 or image.size[1] == 0:
                raise ImageReadError(path, "empty image (zero size)")
            return to_face_array(image, size)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError, EOFError, MemoryError) as error:
        raise ImageReadError(path, f"undecodable image: {error}") from error


def face_from_pixels(pixels: np.ndarray, source: str, size: int) -> np.ndarray:
    """[h, w] uint8 pixels (e.g. a FER2013 CSV row) -> [size, size] uint8."""
    return to_face_array(Image.fromarray(np.asarray(pixels, np.uint8)), size)

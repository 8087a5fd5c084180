"""ADM / DiT center crop (guided-diffusion `center_crop_arr`, as DiT's train.py uses it).

Definition: while the short side is at least 2*size, halve both sides (integer division) with a BOX
filter; then resize with BICUBIC so that the short side is `size` (other side rounded with Python's
round); then cut the centred size x size window (offsets floor((side - size) / 2)).
"""
from __future__ import annotations

from PIL import Image


def adm_resize_plan(width: int, height: int, size: int) -> dict:
    """The sizes the ADM crop goes through, without touching pixels (useful to check and to log).

    Returns {"halvings": [(w, h), ...] (sizes after each BOX halving), "resized": (w, h) after the
    BICUBIC step, "box": (left, top, right, bottom) of the final crop in the resized image}.
    """
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    halvings = []
    w, h = width, height
    while min(w, h) >= 2 * size:
        w, h = w // 2, h // 2
        halvings.append((w, h))
    scale = size / min(w, h)
    rw, rh = round(w * scale), round(h * scale)
    left, top = (rw - size) // 2, (rh - size) // 2
    return {"halvings": halvings, "resized": (rw, rh), "box": (left, top, left + size, top + size)}


def center_crop_adm(pil_image: Image.Image, size: int) -> Image.Image:
    """ADM center crop of `pil_image` to size x size (mode kept; convert to RGB before calling)."""
    img = pil_image
    while min(img.size) >= 2 * size:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.BOX)
    scale = size / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), resample=Image.BICUBIC)
    left = (img.width - size) // 2
    top = (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))

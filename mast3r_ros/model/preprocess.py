"""Image preprocessing as the reference feeds MASt3R: resize, centre crop, normalise.

The reference (``load_images`` at size 512) resizes the long side to ``size`` with
PIL (LANCZOS when shrinking, BICUBIC otherwise; each new side ``round(side * size /
long_side)``), centre-crops both sides down to multiples of 16 (a square image is cropped
to a height of 3/4 of its width unless ``square_ok``), and normalises to [-1, 1] with
``(x / 255 - 0.5) / 0.5`` in float32.

``compute_transform`` is the pure geometric part (no pixels), so callers can map
coordinates and intrinsics without touching an image.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .types import ImageTransform

PATCH = 16


def _check_size(orig_h: int, orig_w: int, size: int) -> None:
    if orig_h <= 0 or orig_w <= 0:
        raise ValueError(f"image size must be positive, got {orig_h}x{orig_w} (HxW)")
    if size < PATCH:
        raise ValueError(f"size must be >= {PATCH}, got {size}")
    from mast3r_ros.limits import MAX_NETWORK_SIDE, check_image_pixels

    if size > MAX_NETWORK_SIDE:
        from mast3r_ros.errors import LimitError

        raise LimitError(f"size (network long side) {size} exceeds the ceiling of {MAX_NETWORK_SIDE} pixels")
    check_image_pixels(orig_h, orig_w)


def compute_transform(orig_h: int, orig_w: int, size: int = 512,
                      square_ok: bool = False) -> ImageTransform:
    """Resize + crop geometry of the reference preprocessing, without pixels.

    Args:
        orig_h, orig_w: original image size in pixels.
        size: target long side (512 for the official checkpoint).
        square_ok: keep square images square; otherwise a square image is cropped to
            a height of 3/4 of its width, as the reference does.

    Returns:
        The ``ImageTransform`` (resized size, crop corner, network size (h, w), both
        multiples of 16).

    Raises:
        ValueError: non-positive sizes, or an image so thin that a side crops to 0.
    """
    _check_size(orig_h, orig_w, size)
    long_side = max(orig_h, orig_w)
    # Python's round (half to even), exactly as the reference computes the new size.
    new_w = int(round(orig_w * size / long_side))
    new_h = int(round(orig_h * size / long_side))
    # Centre crop. The reference takes cx = W // 2 and half-width ((2 * cx) // 16) * 8,
    # which is the same as cropping (W - W16) // 2 pixels off the left, W16 = 16 * (W // 16).
    cx, cy = new_w // 2, new_h // 2
    half_w = ((2 * cx) // PATCH) * (PATCH // 2)
    half_h = ((2 * cy) // PATCH) * (PATCH // 2)
    if not square_ok and new_w == new_h:
        # Reference: half_h = 3 * half_w / 4. For size 512 this is 192 exactly (384x512);
        # we round down to a multiple of 8 so other sizes stay valid network inputs.
        half_h = (3 * half_w // 4) // (PATCH // 2) * (PATCH // 2)
    if half_w == 0 or half_h == 0:
        raise ValueError(
            f"image {orig_h}x{orig_w} (HxW) resized to {new_h}x{new_w} leaves no full 16-pixel "
            "patch on one side; use a less elongated image or a larger size"
        )
    x0, y0 = cx - half_w, cy - half_h
    return ImageTransform(
        orig_size=(int(orig_h), int(orig_w)),
        resized_size=(new_h, new_w),
        crop_xy=(x0, y0),
        network_size=(2 * half_h, 2 * half_w),
    )


def check_network_size(h: int, w: int) -> None:
    """Raise ValueError unless (h, w) are positive multiples of 16 (what --no-resize needs)."""
    bad = [f"{name} {v}" for name, v in (("height", h), ("width", w)) if v <= 0 or v % PATCH]
    if bad:
        raise ValueError(
            f"image {' and '.join(bad)} not a multiple of {PATCH} (image is {h}x{w}, HxW); "
            "resize/crop it first or drop --no-resize to use the reference preprocessing"
        )


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 in [-1, 1], reference op order."""
    t = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    t = t.to(torch.float32).div(255.0)
    t = t.sub(0.5).div(0.5)  # (3, H, W)
    return t.unsqueeze(0)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"image must be an (H, W, 3) RGB array, got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}; convert with np.uint8 first")


def resize_and_crop(image: np.ndarray, transform: ImageTransform) -> np.ndarray:
    """Apply ``transform`` (from ``compute_transform``) to an (H, W, 3) uint8 image."""
    pil = Image.fromarray(image)
    new_h, new_w = transform.resized_size
    if (new_h, new_w) != (image.shape[0], image.shape[1]):
        shrink = max(image.shape[:2]) > max(new_h, new_w)
        pil = pil.resize((new_w, new_h), Image.LANCZOS if shrink else Image.BICUBIC)
    x0, y0 = transform.crop_xy
    h, w = transform.network_size
    return np.asarray(pil.crop((x0, y0, x0 + w, y0 + h)))


def preprocess_image(image: np.ndarray, size: int = 512, square_ok: bool = False,
                     resize: bool = True) -> tuple[torch.Tensor, ImageTransform]:
    """Reference preprocessing of one image.

    Args:
        image: (H, W, 3) uint8 RGB.
        size: target long side.
        square_ok: see ``compute_transform``.
        resize: False feeds the image as it is (sides must be multiples of 16).

    Returns:
        img: (1, 3, h, w) float32 in [-1, 1].
        transform: network pixels <-> original pixels.
    """
    _check_image(image)
    H, W = image.shape[:2]
    if not resize:
        check_network_size(H, W)
        from mast3r_ros.limits import check_network_input

        check_network_input(H, W, "image fed without resizing")
        return normalize_image(image), ImageTransform.identity(H, W)
    transform = compute_transform(H, W, size=size, square_ok=square_ok)
    return normalize_image(resize_and_crop(image, transform)), transform

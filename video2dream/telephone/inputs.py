"""The telephone's input: what kind it is (image, folder, video), and a picture as the chain sees it:
8-bit RGB, transparency flattened onto white, fitted to the dream size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import media
from ..errors import UserError

if TYPE_CHECKING:
    from PIL import Image

BACKGROUND = (255, 255, 255)  # transparent pixels are flattened onto white


def input_kind(path: Path) -> str:
    """'image', 'folder' or 'video'; a clear error for anything else."""
    if not path.exists():
        raise UserError(f"input not found: {path}; check the path")
    if path.is_dir():
        return "folder"
    media.check_input_file(path, "input")
    if is_image(path):
        return "image"
    from PIL import Image

    if path.suffix.lower() in Image.registered_extensions():
        raise UserError(f"{path} is not an image Pillow can open (corrupt, cut short, or not really a "
                        f"{path.suffix} file?); give an image, a folder of images, or a video")
    try:
        media.probe(path)
    except UserError as e:
        if "no video stream" in str(e):
            raise
        raise UserError(f"{path} is neither an image Pillow can open nor a video ffmpeg can read; give an "
                        "image (PNG, JPEG, WebP, ...), a folder of images, or a video") from None
    return "video"


def is_image(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False


def load_image(path: Path) -> Image.Image:
    """Any picture Pillow opens, as 8-bit RGB: EXIF rotation applied, the first frame of an animation,
    16-bit and float greyscale scaled to 8 bits, transparency flattened onto white."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im) or im
            return to_rgb(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{path}: Pillow cannot decode this image (corrupt or cut short?): {e}") from None


def to_rgb(im: Image.Image) -> Image.Image:
    import numpy as np
    from PIL import Image

    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = a.max() if a.size else 0.0
        if im.mode == "F" and top <= 1.0:
            a = a * 255.0
        elif top > 255:
            a = a / 257.0 if top <= 65535 else a * (255.0 / top)
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


def fit(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scaled to cover size and centre-cropped: the aspect ratio is kept, never stretched."""
    from PIL import Image, ImageOps

    if im.size == size:
        return im
    return ImageOps.fit(im, size, Image.Resampling.LANCZOS)


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(images, skipped files) in a folder, sorted by name; hidden files are ignored."""
    images, skipped = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        (images if is_image(p) else skipped).append(p)
    return images, skipped

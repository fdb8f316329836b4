"""Finding image files and decoding them safely.

Decoding applies the EXIF orientation, so every coordinate autolabel writes refers to the
upright image as a viewer shows it, not to the stored pixel grid.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from autolabel.types import ImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

#: refuse images above this many pixels (decompression bombs): Pillow's own hard limit,
#: ~179 megapixels, larger than any camera photo.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def image_beside(path: Path) -> Path | None:
    """The image file with the same name as `path` but an image extension (e.g. the photo a
    300-W `.pts` file annotates), or None. Extensions are tried in a fixed order, lower case first."""
    path = Path(path)
    for ext in sorted(IMAGE_EXTENSIONS):
        for e in (ext, ext.upper()):
            if path.with_suffix(e).is_file():
                return path.with_suffix(e)
    return None


def discover(paths: list[Path], globs: list[str] | None = None, problems: bool = False) -> Iterator[tuple[Path, Path]]:
    """Yield (root, file) for image files under `paths`, in a deterministic order, each file once.

    Folders are walked recursively with sorted names; symlinked folders are followed once
    (a loop is detected by the real path), and a file reached again (overlapping inputs, a link
    to a file already found) is not yielded again. `globs` filter on the path relative to its
    root. Non-image files are not yielded; `count_non_images` tells how many there were.
    With `problems`, what cannot be read is yielded too, so that it gets an error row instead of
    going missing without a trace: a folder that cannot be listed, a symbolic link loop, a broken
    link named like an image (`load_image` says what each one is).
    """
    seen: set[str] = set()
    files: set[str] = set()
    for root in paths:
        root = Path(root)
        if root.is_file():
            if _matches(root.name, globs) and _first(root, files):
                yield root.parent, root
            continue
        yield from ((root, f) for f in _walk(root, root, seen, files, globs, problems))


def _first(path: Path, files: set[str]) -> bool:
    real = os.path.realpath(path)
    if real in files:
        return False
    files.add(real)
    return True


def _walk(root: Path, folder: Path, seen: set[str], files: set[str], globs, problems: bool) -> Iterator[Path]:
    real = os.path.realpath(folder)
    if real in seen:
        return
    seen.add(real)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        if problems:
            yield folder
        return
    for e in entries:
        p = Path(e.path)
        try:
            if e.is_dir(follow_symlinks=True):
                yield from _walk(root, p, seen, files, globs, problems)
                continue
            is_file = e.is_file(follow_symlinks=True)
        except OSError:  # a symbolic link loop
            if problems:
                yield p
            continue
        if not (is_image_name(p) and _matches(p.relative_to(root).as_posix(), globs)):
            continue
        broken = not is_file and problems and e.is_symlink()
        if broken or (is_file and _first(p, files)):
            yield p


def count_non_images(paths: list[Path]) -> int:
    """How many regular files under `paths` are not images (reported in the summary)."""
    n = 0
    for root in paths:
        root = Path(root)
        if root.is_file():
            n += not is_image_name(root)
            continue
        for dirpath, _dirs, files in os.walk(root, followlinks=False):
            n += sum(1 for f in files if not is_image_name(Path(f)))
    return n


def _matches(rel: str, globs: list[str] | None) -> bool:
    return not globs or any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(Path(rel).name, g) for g in globs)


def load_image(path: Path, max_pixels: int = MAX_PIXELS, gray: bool = False) -> Image.Image:
    """Decode an image upright, as RGB or L (8-bit). Raises ImageError with a clear reason.

    `gray`: a colour JPEG is decoded straight to its luma (libjpeg skips the chroma planes: about a
    third less CPU here). That is what converting its RGB to "L" gives, to within rounding, except
    where the RGB decode clips a saturated colour (there up to ~30 grey levels apart; on the
    benchmark photos a mean of 0.01 levels). Other images decode as without it. `load_gray` is
    this followed by the conversion."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we enforce max_pixels
            im = Image.open(path)
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"refused as a decompression bomb ({w}x{h} pixels is over the limit of {max_pixels})")
            if gray and im.format == "JPEG" and im.mode == "RGB":
                im.draft("L", None)
            im.load()
            im = ImageOps.exif_transpose(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"refused as a decompression bomb ({e})") from e
    except FileNotFoundError as e:
        raise ImageError(f"broken symbolic link (to {os.readlink(path)})" if path.is_symlink() else "file not found") from e
    except IsADirectoryError as e:  # discovery gives a folder only when it cannot list it
        raise ImageError(f"a folder that cannot be read ({_listing_error(path)})") from e
    except PermissionError as e:
        raise ImageError("permission denied") from e
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for truncated/corrupt data
        if getattr(e, "errno", None) == errno.ELOOP:
            raise ImageError("symbolic link loop") from e
        raise ImageError(f"cannot decode image ({e})") from e
    return to_8bit(im)


def load_gray(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """`load_image` as mode "L", the way every labelling path reads an image (see its `gray`)."""
    im = load_image(path, max_pixels, gray=True)
    return im if im.mode == "L" else im.convert("L")  # convert() would copy an "L" image once more


def _listing_error(folder: Path) -> str:
    try:
        with os.scandir(folder):
            return "it could not be listed"
    except OSError as e:
        return (e.strerror or str(e)).lower()


def to_8bit(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB"; alpha is dropped (composited on black)."""
    if im.mode in ("L", "RGB"):
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = a.max() if a.size else 0.0
        a = a * (255.0 / hi) if hi > 255 else a
        return Image.fromarray(a.clip(0, 255).astype(np.uint8), "L")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        return Image.fromarray(a.clip(0, 255).astype(np.uint8), "L")
    if im.mode in ("1", "LA", "La"):
        return im.convert("L")
    return im.convert("RGB")

"""Helpers shared by the test files (test files do not import each other)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from PIL import Image

from autolabel.resources import data_root

REPO = Path(__file__).resolve().parents[1]
DATA = data_root()
HELEN_TEST = DATA / "300w" / "helen" / "testset"
PHOTOS = DATA / "photos"


def cli(*args, check_rc=None, timeout=300) -> subprocess.CompletedProcess:
    """Run `autolabel ARGS` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "autolabel", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    if check_rc is not None:
        assert p.returncode == check_rc, p.stdout + p.stderr
    return p


def make_bomb_png(path: Path, w: int = 100_000, h: int = 100_000) -> None:
    """A tiny PNG whose header claims w x h pixels."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", w, h)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def link_faces(dest: Path, faces: list[Path]) -> Path:
    """A 300-W folder of symlinks to `faces` and their `.pts` files."""
    dest.mkdir(parents=True, exist_ok=True)
    for img in faces:
        os.symlink(img, dest / img.name)
        os.symlink(img.with_suffix(".pts"), dest / img.with_suffix(".pts").name)
    return dest

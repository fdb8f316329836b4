"""What every label reader returns (`LabelSet`), and the streaming writer that the single-file
interchange formats (COCO, dlib XML, CSV, Label Studio) share (`PartsWriter`).

Reading: a format's parser yields *records*, plain dicts, one per image (below); `collect`
checks them one by one and turns the good ones into ImageResults. A bad item (a face without
68 finite points, an image that cannot be found) is skipped with one message naming the file
and the item, and counted; bad content never raises. A file that is not in the format at all
raises FormatError (one line).

Writing: the records of finished images go into small part files (`OUT.parts/part-N.jsonl`,
each written atomically) while a run goes; `close()` merges the previous OUT (read back with
the format's own parser) and the parts, the newest record of an image winning, and renders OUT
streaming into a temporary file that replaces OUT atomically. A run killed at any moment
leaves OUT as it was or complete, and the parts let a rerun resume.

A record::

    {"image": name (posix, relative to the folder labelled), "ref": the path as the file spells
     it when that differs (dlib XML: relative to the XML), "abs_path", "file_size",
     "file_mtime_ns", "width", "height", "status": ok | no_face | error, "error",
     "item": how messages name the image,
     "faces": [{"box": [x0, y0, x1, y1] or None, "det_score", "points": (68, 2) 0-based pixel
                centres (NaN = missing), "confidence", "source", "model_version",
                "item": how messages name the face, "problem": why it is unusable, or absent}]}
"""

from __future__ import annotations

import contextlib
import os
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image

from autolabel.files import atomic_path, path_bytes, path_text
from autolabel.geometry import points_box
from autolabel.markup import GROUPS, N_POINTS
from autolabel.types import Box, Face, FormatError, ImageResult

#: the 68 point names for formats that name keypoints (COCO, Label Studio hints): group and the
#: 1-based position along it, e.g. "jaw_1" ... "jaw_17", "right_brow_1", ...
KEYPOINT_NAMES: tuple[str, ...] = tuple(f"{g}_{i - a + 1}" for g, (a, b, _) in GROUPS.items() for i in range(a, b + 1))
#: short point labels that sort in index order: dlib part names (dlib orders parts by name)
#: and Label Studio keypoint labels.
POINT_LABELS: tuple[str, ...] = tuple(f"{i:02d}" for i in range(N_POINTS))
_INDEX = {**{s: i for i, s in enumerate(POINT_LABELS)}, **{s: i for i, s in enumerate(KEYPOINT_NAMES)},
          **{str(i): i for i in range(N_POINTS)}}

Records = Callable[[], Iterator[dict]]


def point_index(label: str) -> int | None:
    """"07", "7" or "jaw_8" -> 7; None for a label that names no point."""
    return _INDEX.get(str(label).strip())


def message(source: Path, item: str, why: str) -> str:
    """One line naming the file and the item, as every reader reports a skipped item."""
    return f"{source}: {item}: {why}"


@dataclass
class LabelSet:
    """Labelled images read from a file or folder, in the file's order.

    `images`: (name, result) pairs; name is the image's path as the labels give it (posix,
    relative to the folder labelled), result.path the image file found on disk.
    `skipped`: one message per item that was left out (see `message`).
    """

    source: Path
    format: str
    images: list[tuple[str, ImageResult]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def n_faces(self) -> int:
        return sum(len(r.faces) for _, r in self.images)

    def faces(self) -> Iterator[tuple[str, int, ImageResult, Face]]:
        """(name, face index, image, face) for every face."""
        for name, r in self.images:
            for i, f in enumerate(r.faces):
                yield name, i, r, f

    def summary(self, examples: int = 5) -> str:
        lines = [f"read {self.n_faces} faces in {len(self.images)} images from {self.source} ({self.format})"
                 + (f"; skipped {len(self.skipped)} items" if self.skipped else "")]
        lines += [f"  skipped: {m}" for m in self.skipped[:examples]]
        if len(self.skipped) > examples:
            lines.append(f"  ... and {len(self.skipped) - examples} more")
        return "\n".join(lines)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the upright image (EXIF orientation applied) from its header only."""
    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
            w, h = h, w
    return w, h


def raw_path(raw) -> Path | None:
    """The path a record's `abs_path_bytes` names (the raw bytes of a name that is not valid
    UTF-8, as bytes or hex text); None when absent or not hex."""
    if isinstance(raw, (bytes, bytearray)) and raw:
        return Path(os.fsdecode(bytes(raw)))
    try:
        return Path(os.fsdecode(bytes.fromhex(raw))) if isinstance(raw, str) and raw else None
    except ValueError:
        return None


def resolve_image(rec: dict, base: Path, root: Path | None) -> tuple[Path | None, list[Path]]:
    """The image file of a record, and the places looked: under `root` (images moved), at the
    absolute path it was labelled at, then relative to the labels file's folder."""
    ref = rec.get("ref") or rec["image"]
    cands = [root / rec["image"]] if root is not None else []
    raw = raw_path(rec.get("abs_path_bytes"))
    if raw is not None:
        cands.append(raw)
    if rec.get("abs_path"):
        cands.append(Path(rec["abs_path"]))
    cands.append(base / ref)
    return next((c for c in cands if c.is_file()), None), cands


def collect(source: Path, fmt: str, records: Iterable[dict], skipped: list[str], root: Path | None = None,
            check_images: bool = True) -> LabelSet:
    """Check parsed records and build the LabelSet. `skipped` is the list the parser appends its
    own messages to (it is filled while `records` is consumed)."""
    source = Path(source)
    base = source.parent if source.is_file() else source
    out = LabelSet(source, fmt, skipped=skipped)
    for rec in records:
        item = rec.get("item") or f"image {rec['image']!r}"
        path, looked = resolve_image(rec, base, root)
        if path is None:
            if check_images:
                where = ", ".join(str(p) for p in dict.fromkeys(looked))
                skipped.append(message(source, item, f"image not found (looked for {where}); pass the images' folder as --root"))
                continue
            path = looked[-1]
        w, h = int(rec.get("width") or 0), int(rec.get("height") or 0)
        if (not w or not h) and path.is_file() and rec.get("status") != "error":
            try:
                w, h = image_size(path)
            except OSError as e:
                skipped.append(message(source, item, f"cannot read the image's size ({e})"))
                continue
        faces = []
        for f in rec.get("faces", ()):
            face, why = _face(f)
            if face is None:
                skipped.append(message(source, f"{item}, {f.get('item', 'face')}", why))
            else:
                faces.append(face)
        error = (rec.get("error") or "unknown error") if rec.get("status") == "error" else None
        out.images.append((rec["image"], ImageResult(path, w, h, tuple(faces), error)))
    return out


def read_with(parse: Callable[[Path, list[str]], Iterator[dict]], fmt: str, path: Path, root: Path | None = None,
              check_images: bool = True) -> LabelSet:
    """Run a format's parser through `collect`."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    skipped: list[str] = []
    return collect(path, fmt, parse(path, skipped), skipped, root, check_images)


def _face(f: dict) -> tuple[Face | None, str]:
    if f.get("problem"):
        return None, f["problem"]
    try:
        pts = np.asarray(f["points"], np.float64)
    except (KeyError, TypeError, ValueError):
        return None, "no readable points"
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) != N_POINTS:
        n = len(pts) if pts.ndim else 0
        return None, f"{n} points, expected {N_POINTS}"
    bad = np.flatnonzero(~np.isfinite(pts).all(axis=1))
    if len(bad):
        return None, f"points {', '.join(map(str, bad[:12]))}{' ...' if len(bad) > 12 else ''} missing ({N_POINTS - len(bad)} of {N_POINTS} given)"
    box = f.get("box")
    b = None
    if box is not None and len(box) == 4 and all(_finite(v) for v in box) and box[2] > box[0] and box[3] > box[1]:
        b = Box(float(box[0]), float(box[1]), float(box[2]), float(box[3]), _num(f.get("det_score"), 0.0))
    if b is None:
        p = points_box(pts)
        b = Box(p.x0, p.y0, p.x1, p.y1, _num(f.get("det_score"), 0.0))
    occ = f.get("occluded")
    occ = tuple(bool(v) for v in occ) if isinstance(occ, (list, tuple)) and len(occ) == N_POINTS and any(occ) else None
    unc = f.get("point_uncertainty")
    try:
        unc = np.asarray(unc, np.float32) if unc is not None else None
    except (TypeError, ValueError):
        unc = None
    if unc is not None and (unc.shape != (N_POINTS,) or not np.isfinite(unc).all()):
        unc = None
    return Face(b, pts.astype(np.float32), _num(f.get("confidence"), float("nan")), str(f.get("source") or "labels"),
                str(f.get("model_version") or ""), point_uncertainty=unc, occluded=occ), ""


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _num(v, default: float) -> float:
    return float(v) if _finite(v) else default


def as_int(v) -> int | None:
    """An integer field read from text (XML attribute, CSV cell), or None."""
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def json_num(v: float | None, digits: int = 6) -> float | None:
    """A float for JSON: NaN and None become null (JSON has no NaN)."""
    return round(float(v), digits) if _finite(v) else None


# ----------------------------------------------------------------------------------- writing
def record_of(r: ImageResult, rel: str, stat: tuple[int, int] | None) -> dict:
    """ImageResult -> record (JSON-serialisable). A path that is not valid UTF-8 is kept as text
    (`files.path_text`, the resume key) and as its raw bytes in hex (`abs_path_bytes`)."""
    raw = path_bytes(r.path.absolute())
    return {"image": rel, "abs_path": path_text(r.path.absolute()), "abs_path_bytes": raw.hex() if raw else None,
            "file_size": stat[0] if stat else None,
            "file_mtime_ns": stat[1] if stat else None, "width": r.width, "height": r.height, "status": r.status,
            "error": r.error,
            "faces": [{"box": [float(v) for v in f.box.as_list()], "det_score": json_num(f.box.score),
                       "points": np.asarray(f.points, np.float64).round(4).tolist(), "confidence": json_num(f.confidence),
                       "source": f.source, "model_version": f.model_id,
                       **({"occluded": [bool(v) for v in f.occluded]} if f.occluded and any(f.occluded) else {})} for f in r.faces]}


class PartFiles:
    """The `OUT.parts/` folder of a streaming writer: numbered part files, each written
    atomically, that hold finished batches until `close()` merges them into OUT."""

    def __init__(self, out: Path, suffix: str, overwrite: bool = False):
        self.folder = Path(out).with_name(Path(out).name + ".parts")
        self.suffix = suffix
        if overwrite:
            for p in self.files():
                p.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        for tmp in self.folder.glob(".*.tmp"):  # left by a run killed mid-write
            tmp.unlink()
        existing = self.files()
        self.n = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0

    def files(self) -> list[Path]:
        return sorted(self.folder.glob(f"part-*{self.suffix}")) if self.folder.is_dir() else []

    @contextlib.contextmanager
    def new(self) -> Iterator[Path]:
        """A temporary path to write the next part to; it becomes the part on success."""
        with atomic_path(self.folder / f"part-{self.n:06d}{self.suffix}") as tmp:
            yield tmp
        self.n += 1

    def remove(self) -> None:
        """Delete the parts (merged into OUT) and the folder."""
        for p in self.files():
            p.unlink()
        try:
            self.folder.rmdir()
        except OSError:
            pass


class PartsWriter:
    """Base of the single-file writers: resumable (`done_keys`), crash-safe (atomic part files,
    atomic final OUT), flat in memory while labelling. Subclasses define `format`, `render`
    (records -> the file's text, streaming; `records()` may be called more than once) and
    `parse` (the format's reader, used to merge with a previous OUT)."""

    format = ""

    def __init__(self, out: Path, metadata: dict | None = None, overwrite: bool = False):
        self.out = Path(out)
        self.metadata = metadata or {}
        self.buf: list[dict] = []
        if overwrite:
            self.out.unlink(missing_ok=True)
        self.parts = PartFiles(self.out, ".jsonl", overwrite)

    # subclasses ------------------------------------------------------------------------
    def render(self, f: TextIO, records: Records) -> None:
        raise NotImplementedError

    @staticmethod
    def parse(path: Path, skipped: list[str]) -> Iterator[dict]:
        raise NotImplementedError

    # the Writer interface --------------------------------------------------------------
    def done_keys(self) -> dict[str, tuple[int, int]]:
        """abs_path -> (size, mtime_ns) of images already labelled (ok or no_face)."""
        keys: dict[str, tuple[int, int]] = {}
        for src in self._sources():
            for rec in self._records(src):
                p = rec.get("abs_path")
                if not p:
                    continue
                if rec.get("status") in ("ok", "no_face") and rec.get("file_size") is not None and rec.get("file_mtime_ns") is not None:
                    keys[p] = (int(rec["file_size"]), int(rec["file_mtime_ns"]))
                else:
                    keys.pop(p, None)
        return keys

    def write_result(self, r: ImageResult, rel: str, stat: tuple[int, int] | None) -> None:
        self.buf.append(record_of(r, rel, stat))
        if len(self.buf) >= 1024:  # a safety valve; the pipeline flushes per batch
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        with self.parts.new() as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.buf), encoding="utf-8")
        self.buf = []

    def close(self) -> None:
        """Merge OUT and the parts into a new OUT: a newer record of an image replaces older ones."""
        self.flush()
        sources = self._sources()
        newest: dict[str, int] = {}
        for i, src in enumerate(sources):
            for rec in self._records(src):
                newest[_key(rec)] = i

        def records() -> Iterator[dict]:
            for i, src in enumerate(sources):
                for rec in self._records(src):
                    if newest[_key(rec)] == i:
                        yield rec

        with atomic_path(self.out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            self.render(f, records)
        self.parts.remove()

    # ----------------------------------------------------------------------------------
    def _sources(self) -> list[Path]:
        return ([self.out] if self.out.is_file() else []) + self.parts.files()

    def _records(self, src: Path) -> Iterator[dict]:
        if src != self.out:
            with open(src, encoding="utf-8") as f:
                yield from (json.loads(line) for line in f if line.strip())
            return
        skipped: list[str] = []
        try:
            yield from self.parse(src, skipped)
        except FormatError as e:
            raise FormatError(f"{e}; cannot add to it: use --overwrite to start over, or another --out") from None


def _key(rec: dict) -> str:
    return rec.get("abs_path") or rec["image"]

"""The review corrections store (a folder), reading it back, and its export as 300-W.

- `journal.jsonl`: append-only, one JSON line per action (face key, status, 68 points in
  original-image pixels, box, timestamp, model version, revision), flushed and fsynced before
  the action is acknowledged. A line cut short or garbled is skipped with a warning.
- `corrections.parquet`: the current state (latest action per face), rebuilt from the journal
  on open, every `MATERIALIZE_EVERY` actions and on close; always written atomically.
- `store.json`: which labels file the store belongs to and its image root.

Each face has a revision (number of actions on it). An action carries the revision the person
saw; if another tab saved in between, the action is refused as a conflict, never silently
overwriting. `autolabel review` writes the store; `finetune` and `export` read it through
`read_corrections` without the UI.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from autolabel.files import atomic_path, atomic_write_text, is_inside, path_bytes, path_text, repair_journal
from autolabel.formats.labelset import LabelSet, read_with
from autolabel.formats.pts import FaceFileNames, write_pts
from autolabel.images import load_image
from autolabel.markup import N_POINTS
from autolabel.types import AutolabelError, ExportResult, FormatError, UsageError

log = logging.getLogger("autolabel.corrections")

STATUSES = ("accepted", "corrected", "rejected", "skipped")
JOURNAL = "journal.jsonl"
STATE = "corrections.parquet"
MATERIALIZE_EVERY = 25


class ConflictError(AutolabelError):
    """Another tab or person saved this face since it was loaded."""


def face_key(image: str, face_index: int | str) -> str:
    return f"{image}#{face_index}"


def _validate(rec: dict) -> None:
    if rec["status"] not in STATUSES:
        raise ValueError(f"unknown status {rec['status']!r}")
    pts = np.asarray(rec["points"], np.float64)
    if pts.shape != (N_POINTS, 2) or not np.isfinite(pts).all():
        raise ValueError("points are not 68 finite (x, y) pairs")
    int(rec["rev"])
    str(rec["image"])


def read_journal(path: Path) -> tuple[dict[str, dict], int]:
    """The latest valid record per face key in a journal, and how many lines were skipped
    (garbled, invalid, or cut short by a crash). Reads only; an absent journal is empty."""
    state: dict[str, dict] = {}
    skipped = 0
    if not path.is_file():
        return state, skipped
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            _validate(rec)
        except (ValueError, KeyError, TypeError) as e:
            skipped += 1
            log.warning("%s line %d skipped: %s", path, n, e)
            continue
        state[rec["key"]] = rec
    return state, skipped


class CorrectionStore:
    """Durable, append-only record of review actions. Thread-safe."""

    def __init__(self, folder: Path, labels: Path | None = None, root: Path | None = None):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / ".write-test"
            probe.write_text("x")
            probe.unlink()
        except OSError as e:
            raise UsageError(f"cannot write corrections to {self.folder}: {e.strerror or e}") from None
        self.lock = threading.Lock()
        journal = self.folder / JOURNAL
        cut = repair_journal(journal)  # a crash mid-append: keep what is whole
        if cut:
            log.warning("%s: an unfinished last line was dropped (%d bytes)", journal, len(cut))
        self.state, skipped = read_journal(journal)
        self.skipped_lines = skipped + bool(cut)
        info = self.folder / "store.json"
        if labels is not None:
            meta = {"labels": str(Path(labels).absolute()), "root": str(root.absolute()) if root else None}
            if not info.is_file() or json.loads(info.read_text()) != meta:
                atomic_write_text(info, json.dumps(meta, indent=1))
        self._since = 0
        self._journal = open(self.folder / JOURNAL, "a", encoding="utf-8")
        self.materialize()

    def rev(self, key: str) -> int:
        return int(self.state.get(key, {}).get("rev", 0))

    def status(self, key: str) -> str | None:
        rec = self.state.get(key)
        return rec["status"] if rec else None

    def statuses(self) -> dict[str, str]:
        return {k: v["status"] for k, v in self.state.items()}

    def record(self, key: str, status: str, points: np.ndarray, base_rev: int, *, image: str, abs_path: str | os.PathLike,
               box: list[float], model_version: str, width: int, height: int, source: str = "detector",
               occluded: list[bool] | None = None, user: str = "") -> dict:
        """Append one action; raises ConflictError if `base_rev` is stale. `occluded`: 68 flags
        (points hidden behind something, placed where they would be); `user`: who reviewed.
        `abs_path` whose name is not valid UTF-8 is kept as text (`files.path_text`) and as its
        raw bytes (hex, `abs_path_hex`)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        pts = np.asarray(points, np.float64)
        if pts.shape != (N_POINTS, 2) or not np.isfinite(pts).all():
            raise ValueError(f"expected 68 finite (x, y) points, got shape {pts.shape}")
        occ = [False] * N_POINTS if occluded is None else [bool(v) for v in occluded]
        if len(occ) != N_POINTS:
            raise ValueError(f"expected {N_POINTS} occluded flags, got {len(occ)}")
        with self.lock:
            cur = self.rev(key)
            if int(base_rev) != cur:
                raise ConflictError(f"{key} was changed elsewhere (now revision {cur}, you loaded {base_rev}); reload to see it")
            raw = path_bytes(abs_path)
            rec = {"key": key, "image": image, "abs_path": path_text(abs_path), **({"abs_path_hex": raw.hex()} if raw else {}), "status": status,
                   "points": np.round(pts, 3).tolist(), "box": [float(v) for v in box], "width": int(width), "height": int(height),
                   "model_version": model_version, "source": source, "rev": cur + 1, "ts": time.time(),
                   "occluded": occ, "user": user}
            self._journal.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._journal.flush()
            os.fsync(self._journal.fileno())
            self.state[key] = rec
            self._since += 1
            if self._since >= MATERIALIZE_EVERY:
                self._materialize_locked()
        return rec

    def materialize(self) -> Path:
        with self.lock:
            return self._materialize_locked()

    def _materialize_locked(self) -> Path:
        recs = list(self.state.values())
        table = pa.table({
            "key": [r["key"] for r in recs],
            "image": [r["image"] for r in recs],
            "abs_path": [r["abs_path"] for r in recs],
            "abs_path_bytes": pa.array([_raw(r.get("abs_path_hex")) for r in recs], pa.binary()),
            "status": [r["status"] for r in recs],
            "points": pa.array([np.asarray(r["points"], np.float32).reshape(-1).tolist() for r in recs], pa.list_(pa.float32(), 2 * N_POINTS)),
            "box": pa.array([r["box"] for r in recs], pa.list_(pa.float32(), 4)),
            "width": pa.array([r.get("width", 0) for r in recs], pa.int32()),
            "height": pa.array([r.get("height", 0) for r in recs], pa.int32()),
            "model_version": [r["model_version"] for r in recs],
            "source": [r.get("source", "detector") for r in recs],
            "rev": pa.array([r["rev"] for r in recs], pa.int32()),
            "ts": pa.array([r["ts"] for r in recs], pa.float64()),
            "occluded": pa.array([r.get("occluded") or [False] * N_POINTS for r in recs], pa.list_(pa.bool_(), N_POINTS)),
            "user": [r.get("user", "") for r in recs],
        })
        path = self.folder / STATE
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        self._since = 0
        return path

    def close(self) -> None:
        self.materialize()
        self._journal.close()


def _raw(hex_text) -> bytes | None:
    """The bytes a record's `abs_path_hex` holds; None when absent or not hex (a hand-edited journal)."""
    try:
        return bytes.fromhex(hex_text) if isinstance(hex_text, str) and hex_text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Correction:
    """A face's current state in a corrections store: what the person decided and its points."""

    key: str
    image: str  # path relative to the labelled folder (posix)
    abs_path: str
    status: str  # one of STATUSES
    points: np.ndarray  # (68, 2) float64, upright image pixels
    box: tuple[float, ...]  # the detector's box, or the box drawn for an added face
    source: str  # "detector" or "added" (a face the detector missed)
    model_version: str
    rev: int
    occluded: tuple[bool, ...] = (False,) * N_POINTS  # per point: hidden, placed where it would be
    user: str = ""  # who reviewed it
    abs_path_hex: str = ""  # the raw bytes of a path that is not valid UTF-8, as hex

    @property
    def path(self) -> Path:
        """The image file (by its raw bytes when its name is not valid UTF-8)."""
        raw = _raw(self.abs_path_hex)
        return Path(os.fsdecode(raw)) if raw else Path(self.abs_path)

    @classmethod
    def from_record(cls, rec: dict) -> Correction:
        return cls(rec["key"], rec["image"], rec["abs_path"], rec["status"], np.asarray(rec["points"], np.float64),
                   tuple(float(v) for v in rec.get("box") or ()), rec.get("source", "detector"), rec.get("model_version", ""),
                   int(rec["rev"]), tuple(bool(v) for v in rec.get("occluded") or (False,) * N_POINTS), rec.get("user", ""),
                   str(rec.get("abs_path_hex") or ""))


def read_corrections(folder: Path, include_rejected: bool = False) -> list[Correction]:
    """The current state of a corrections folder (from its journal, the source of truth):
    accepted and corrected faces (and rejected ones if asked); skipped faces never."""
    folder = Path(folder)
    if not (folder / JOURNAL).is_file():
        raise FormatError(f"{folder}: not an autolabel corrections folder (no {JOURNAL})")
    state, _ = read_journal(folder / JOURNAL)
    keep = {"accepted", "corrected"} | ({"rejected"} if include_rejected else set())
    return [Correction.from_record(r) for r in state.values() if r["status"] in keep]


def export_300w(folder: Path, out: Path) -> ExportResult:
    """Write accepted and corrected faces as a 300-W folder: `<stem>_<n>.<ext>` + `.pts`.

    Every file goes under `out`: a face whose image name would lead elsewhere (`..`, an absolute
    path, a symbolic link out of `out`) is refused and counted, never written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n, missing, refused = 0, [], []
    per_image: dict[str, int] = {}
    names = FaceFileNames()  # IMG.jpg and IMG.png keep apart
    flags = io.StringIO()  # occluded.csv: a 300-W .pts file cannot say which points are hidden
    table = csv.writer(flags, lineterminator="\n")
    table.writerow(["pts", "key", "user", "occluded"])
    for r in sorted(read_corrections(folder), key=lambda r: r.key):
        src = r.path
        if not src.is_file():
            missing.append(path_text(src))
            continue
        per_image[r.image] = per_image.get(r.image, 0) + 1
        dest = out / f"{names.base(r.image)}_{per_image[r.image]}{src.suffix.lower()}"
        if not is_inside(dest, out):
            refused.append(f"{r.key}: {dest} is outside {out}")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if _no_exif_rotation(src):
            shutil.copyfile(src, dest)
        else:  # points are in upright coordinates: store upright pixels
            dest = dest.with_suffix(".png")
            load_image(src).save(dest)
        write_pts(dest.with_suffix(".pts"), r.points.astype(np.float32))
        if any(r.occluded):
            hidden = " ".join(str(i) for i, o in enumerate(r.occluded) if o)
            table.writerow([dest.with_suffix(".pts").relative_to(out).as_posix(), r.key, r.user, hidden])
        n += 1
    atomic_write_text(out / "occluded.csv", flags.getvalue())
    return ExportResult(n, tuple(missing), tuple(refused))


def _no_exif_rotation(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            return im.getexif().get(0x0112, 1) == 1
    except OSError:
        return False


def parse(folder: Path, skipped: list[str]) -> Iterator[dict]:
    """Records (`formats.labelset`) of a corrections folder: its accepted and corrected faces,
    grouped by image."""
    images: dict[str, dict] = {}
    for c in sorted(read_corrections(folder), key=lambda c: c.key):
        rec = images.setdefault(c.image, {"image": c.image, "abs_path": os.fspath(c.path), "item": f"image {c.image!r}", "faces": []})
        rec["faces"].append({"item": f"face {c.key!r}", "box": list(c.box) if len(c.box) == 4 else None, "points": c.points,
                             "source": c.status, "model_version": c.model_version, "occluded": list(c.occluded)})
    yield from images.values()


def read(folder: Path, root: Path | None = None, check_images: bool = True) -> LabelSet:
    """A corrections folder's accepted and corrected faces as a LabelSet."""
    return read_with(parse, "corrections", folder, root, check_images)

"""The review UI's logic, free of Gradio: the queue of faces to check and the corrections store.

Corrections store (a folder):
- `journal.jsonl`: append-only, one JSON line per action (face key, status, 68 points in
  original-image pixels, box, timestamp, model version, revision), flushed and fsynced before
  the action is acknowledged. A line cut short or garbled is skipped with a warning.
- `corrections.parquet`: the current state (latest action per face), rebuilt from the journal
  on open, every `MATERIALIZE_EVERY` actions and on close; always written atomically.
- `store.json`: which labels file the store belongs to and its image root.

Each face has a revision (number of actions on it). An action carries the revision the person
saw; if another tab saved in between, the action is refused as a conflict, never silently
overwriting.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autolabel.formats.parquet import read_labels
from autolabel.io import atomic_path, atomic_write_text
from autolabel.scheme import N_POINTS
from autolabel.types import AutolabelError, Box, FormatError, UsageError

log = logging.getLogger("autolabel.review")

STATUSES = ("accepted", "corrected", "rejected", "skipped")
JOURNAL = "journal.jsonl"
STATE = "corrections.parquet"
MATERIALIZE_EVERY = 25


class ConflictError(AutolabelError):
    """Another tab or person saved this face since it was loaded."""


def face_key(image: str, face_index: int | str) -> str:
    return f"{image}#{face_index}"


# ------------------------------------------------------------------------------------ queue
@dataclass
class Queue:
    """Faces of a labels file ordered least-certain first (NaN confidence last)."""

    image: np.ndarray  # (N,) object: relative image path
    abs_path: np.ndarray  # (N,) object
    face_index: np.ndarray  # (N,) int, -1 for an image with no face (a place to add one)
    confidence: np.ndarray  # (N,) float32
    boxes: np.ndarray  # (N, 4) float32
    points: np.ndarray  # (N, 68, 2) float32 (NaN for no-face rows)
    width: np.ndarray
    height: np.ndarray
    model_version: np.ndarray
    root: Path | None = None

    @classmethod
    def from_parquet(cls, path: Path, root: Path | None = None) -> Queue:
        """Load the face rows (and no-face images) of an autolabel labels file."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path}: no such labels file")
        df = read_labels(path)
        df = df[df.status.isin(["ok", "no_face"])]
        conf = df.confidence.to_numpy(np.float32, na_value=np.nan)
        order = np.lexsort((df.face_index.fillna(-1).to_numpy(), df.image.to_numpy(), np.nan_to_num(-conf, nan=np.inf)))
        df = df.iloc[order]
        n = len(df)
        pts = np.full((n, N_POINTS, 2), np.nan, np.float32)
        has = df.points.notna().to_numpy()
        if has.any():
            pts[has] = np.stack(df.points[has].to_numpy()).reshape(-1, N_POINTS, 2)
        boxes = df[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(np.float32, na_value=np.nan)
        q = cls(df.image.to_numpy(object), df.abs_path.to_numpy(object), df.face_index.fillna(-1).to_numpy(int),
                conf[order], boxes, pts, df.width.to_numpy(int), df.height.to_numpy(int), df.model_version.to_numpy(object), root)
        q.check_images()
        return q

    def __len__(self) -> int:
        return len(self.image)

    def key(self, i: int) -> str:
        return face_key(self.image[i], self.face_index[i])

    def image_path(self, i: int) -> Path:
        """The image file of row i: under --root if given (refusing paths that leave it)."""
        if self.root is None:
            return Path(self.abs_path[i])
        root = self.root.resolve()
        p = (root / self.image[i]).resolve()
        if not p.is_relative_to(root):
            raise UsageError(f"{self.image[i]}: refused, resolves outside {root}")
        return p

    def check_images(self) -> None:
        """Fail early with a hint when the images have moved."""
        if not len(self):
            return
        sample = np.unique(np.linspace(0, len(self) - 1, min(len(self), 20)).astype(int))
        missing = [i for i in sample if not self.image_path(i).is_file()]
        if len(missing) == len(sample):
            where = self.root or Path(self.abs_path[missing[0]]).parent
            raise UsageError(f"the labelled images are not where the labels file says (e.g. {self.image_path(missing[0])}); "
                             f"if they moved, pass --root FOLDER (the folder their relative paths start from); looked in {where}")

    def folders(self) -> list[str]:
        return sorted({os.path.dirname(p) for p in self.image})

    def select(self, statuses: dict[str, str], status: str = "all", folder: str = "") -> np.ndarray:
        """Row indices passing the filters. status: all | todo | reviewed | one of STATUSES."""
        idx = np.arange(len(self))
        if folder:
            pre = folder.rstrip("/") + "/"
            idx = idx[np.array([self.image[i].startswith(pre) for i in idx], bool)] if len(idx) else idx
        if status == "all":
            return idx
        st = np.array([statuses.get(self.key(i), "todo") for i in idx], dtype=object)
        if status == "reviewed":
            return idx[st != "todo"]
        return idx[st == status]


# ------------------------------------------------------------------------------- the store
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
        self.state: dict[str, dict] = {}
        self.skipped_lines = 0
        self._load()
        info = self.folder / "store.json"
        if labels is not None:
            meta = {"labels": str(Path(labels).absolute()), "root": str(root.absolute()) if root else None}
            if not info.is_file() or json.loads(info.read_text()) != meta:
                atomic_write_text(info, json.dumps(meta, indent=1))
        self._since = 0
        self._journal = open(self.folder / JOURNAL, "a", encoding="utf-8")
        self.materialize()

    def _load(self) -> None:
        path = self.folder / JOURNAL
        if not path.is_file():
            return
        with open(path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):  # a crash mid-append: keep what is whole
            with open(path, "ab") as f:
                f.write(b"\n")
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self._validate(rec)
            except (ValueError, KeyError, TypeError) as e:
                self.skipped_lines += 1
                log.warning("%s line %d skipped: %s", path, n, e)
                continue
            self.state[rec["key"]] = rec

    @staticmethod
    def _validate(rec: dict) -> None:
        if rec["status"] not in STATUSES:
            raise ValueError(f"unknown status {rec['status']!r}")
        pts = np.asarray(rec["points"], np.float64)
        if pts.shape != (N_POINTS, 2) or not np.isfinite(pts).all():
            raise ValueError("points are not 68 finite (x, y) pairs")
        int(rec["rev"])
        str(rec["image"])

    def rev(self, key: str) -> int:
        return int(self.state.get(key, {}).get("rev", 0))

    def status(self, key: str) -> str | None:
        rec = self.state.get(key)
        return rec["status"] if rec else None

    def statuses(self) -> dict[str, str]:
        return {k: v["status"] for k, v in self.state.items()}

    def record(self, key: str, status: str, points: np.ndarray, base_rev: int, *, image: str, abs_path: str,
               box: list[float], model_version: str, width: int, height: int, source: str = "detector") -> dict:
        """Append one action; raises ConflictError if `base_rev` is stale."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        pts = np.asarray(points, np.float64)
        if pts.shape != (N_POINTS, 2) or not np.isfinite(pts).all():
            raise ValueError(f"expected 68 finite (x, y) points, got shape {pts.shape}")
        with self.lock:
            cur = self.rev(key)
            if int(base_rev) != cur:
                raise ConflictError(f"{key} was changed elsewhere (now revision {cur}, you loaded {base_rev}); reload to see it")
            rec = {"key": key, "image": image, "abs_path": abs_path, "status": status,
                   "points": np.round(pts, 3).tolist(), "box": [float(v) for v in box], "width": int(width), "height": int(height),
                   "model_version": model_version, "source": source, "rev": cur + 1, "ts": time.time()}
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
            "status": [r["status"] for r in recs],
            "points": pa.array([np.asarray(r["points"], np.float32).reshape(-1).tolist() for r in recs], pa.list_(pa.float32(), 2 * N_POINTS)),
            "box": pa.array([r["box"] for r in recs], pa.list_(pa.float32(), 4)),
            "width": pa.array([r.get("width", 0) for r in recs], pa.int32()),
            "height": pa.array([r.get("height", 0) for r in recs], pa.int32()),
            "model_version": [r["model_version"] for r in recs],
            "source": [r.get("source", "detector") for r in recs],
            "rev": pa.array([r["rev"] for r in recs], pa.int32()),
            "ts": pa.array([r["ts"] for r in recs], pa.float64()),
        })
        path = self.folder / STATE
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        self._since = 0
        return path

    def close(self) -> None:
        self.materialize()
        self._journal.close()


def read_corrections(folder: Path, include_rejected: bool = False) -> list[dict]:
    """The current state of a corrections folder (from its journal, the source of truth)."""
    folder = Path(folder)
    if not (folder / JOURNAL).is_file():
        raise FormatError(f"{folder}: not an autolabel corrections folder (no {JOURNAL})")
    store = CorrectionStore.__new__(CorrectionStore)
    store.folder, store.state, store.skipped_lines = folder, {}, 0
    store._load()
    recs = [r for r in store.state.values() if include_rejected or r["status"] != "rejected"]
    return [r for r in recs if r["status"] != "skipped"]


def export_300w(folder: Path, out: Path) -> dict:
    """Write accepted and corrected faces as a 300-W folder: `<stem>_<n>.<ext>` + `.pts`."""
    import shutil

    from autolabel.formats.pts import write_pts

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n, missing = 0, []
    per_image: dict[str, int] = {}
    for r in sorted(read_corrections(folder), key=lambda r: r["key"]):
        src = Path(r["abs_path"])
        if not src.is_file():
            missing.append(str(src))
            continue
        per_image[r["image"]] = per_image.get(r["image"], 0) + 1
        stem = Path(r["image"]).with_suffix("")
        dest = out / f"{stem}_{per_image[r['image']]}{src.suffix.lower()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if _no_exif_rotation(src):
            shutil.copyfile(src, dest)
        else:  # points are in upright coordinates: store upright pixels
            from autolabel.images import load_image

            dest = dest.with_suffix(".png")
            load_image(src).save(dest)
        write_pts(dest.with_suffix(".pts"), np.asarray(r["points"], np.float32))
        n += 1
    return {"faces": n, "missing_images": missing}


def _no_exif_rotation(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.getexif().get(0x0112, 1) == 1
    except OSError:
        return False


def box_of(q: Queue, i: int) -> Box:
    b = q.boxes[i]
    return Box(float(b[0]), float(b[1]), float(b[2]), float(b[3]))

"""300-W folder output: one `.pts` per face (`name_1.pts`, `name_2.pts`, ...) mirroring the
input tree, plus `index.csv` listing every image with its status (ok / no_face / error), face
boxes, confidences and `.pts` files, and `run.json` with the run's metadata.

The index is an append-only journal (one line per image, flushed and fsynced per batch; a later
line for an image replaces earlier ones); a line cut short by a crash is ignored on resume. Each
`.pts` is written atomically, under the output folder only. `parse` / `read` / `read_run` read a
run's folder back through its index (review, export and finetune use them), so the `.pts` files
need not sit beside their images.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from autolabel.files import atomic_path, atomic_write_text, is_inside, path_bytes, path_text, remove_stale_temps, repair_journal
from autolabel.formats.labelset import LabelSet, message, read_with
from autolabel.formats.parquet import SCHEMA, face_ids, result_rows
from autolabel.formats.pts import FaceFileNames, read_pts, write_pts
from autolabel.geometry import points_box
from autolabel.images import image_beside
from autolabel.types import AutolabelError, Box, Face, FormatError, ImageResult

INDEX = "index.csv"
RUN = "run.json"
COLUMNS = ["image", "abs_path", "file_size", "file_mtime_ns", "width", "height", "status", "faces", "error", "pts_files",
           "boxes", "confidences", "abs_path_bytes"]


class PtsFolderWriter:
    """A `formats.Writer` for a 300-W folder."""

    def __init__(self, out: Path, metadata: dict | None = None, overwrite: bool = False):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.index = self.out / INDEX
        if overwrite:
            self.index.unlink(missing_ok=True)
        self.metadata = metadata or {}
        for name in (INDEX, RUN):  # temporary files of a run killed while writing them
            remove_stale_temps(self.out, name)
        if self.metadata:
            atomic_write_text(self.out / RUN, json.dumps(self.metadata, indent=1))
        repair_journal(self.index)  # a line cut short by a crash is dropped; its image is redone
        rows = _upgrade(self.index)
        self.names = FaceFileNames()
        self.files: dict[str, list[str]] = {}  # image -> its .pts files now
        for row in rows:
            files = [f for f in (row.get("pts_files") or "").split(";") if f]
            self.files[row["image"]] = files
            self.names.claim_files(row["image"], files)
        self.swept: set[Path] = set()
        self.f = open(self.index, "a", encoding="utf-8", newline="")
        self.w = csv.writer(self.f)
        if not rows and self.index.stat().st_size == 0:
            self.w.writerow(COLUMNS)
            self.flush()

    def done_keys(self) -> dict[str, tuple[int, int]]:
        keys: dict[str, tuple[int, int]] = {}
        for row in _rows(self.index):
            if row.get("status") in ("ok", "no_face") and row.get("file_size"):
                keys[row["abs_path"]] = (int(row["file_size"]), int(row["file_mtime_ns"]))
            else:
                keys.pop(row.get("abs_path", ""), None)
        return keys

    def write_result(self, r: ImageResult, rel: str, stat: tuple[int, int] | None) -> None:
        status, error, names = r.status, r.error or "", []
        base = self.names.base(rel)
        for i, face in enumerate(r.faces, start=1):
            dest = self.out / f"{base}_{i}.pts"
            if not is_inside(dest, self.out):  # a symbolic link in the output tree leading out of it
                status, error, names = "error", f"refused: {dest} resolves outside {self.out}", []
                break
            if dest.parent not in self.swept:
                self._sweep(dest.parent)
            write_pts(dest, face.points)
            names.append(dest.relative_to(self.out).as_posix())
        for old in self.files.get(rel, ()):  # an image relabelled with fewer faces: drop the extra files
            if old not in names:
                (self.out / old).unlink(missing_ok=True)
        self.files[rel] = names
        faces = r.faces if names else ()
        raw = path_bytes(r.path.absolute())
        self.w.writerow([rel, path_text(r.path.absolute()), stat[0] if stat else "", stat[1] if stat else "", r.width, r.height,
                         status, len(faces), error, ";".join(names),
                         ";".join(" ".join(f"{v:.3f}" for v in (*f.box.as_list(), f.box.score)) for f in faces),
                         ";".join(f"{f.confidence:.6g}" for f in faces), raw.hex() if raw else ""])

    def _sweep(self, folder: Path) -> None:
        """Delete temporary `.pts` files a killed run left in `folder` (once per folder and run)."""
        self.swept.add(folder)
        try:
            entries = os.listdir(folder)
        except OSError:
            return
        for e in entries:
            if e.startswith(".") and e.endswith(".tmp") and ".pts." in e:
                (folder / e).unlink(missing_ok=True)

    def flush(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.flush()
        self.f.close()


def _rows(index: Path) -> list[dict]:
    if not index.is_file():
        return []
    with open(index, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _upgrade(index: Path) -> list[dict]:
    """The index's rows; an index with older columns is rewritten with today's (atomically)."""
    if not index.is_file() or index.stat().st_size == 0:
        return []
    with open(index, encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), [])
    rows = _rows(index)
    if header != COLUMNS:
        with atomic_path(index) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, COLUMNS, restval="", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return rows


def read_index(out: Path) -> list[dict]:
    """Every line of a run folder's `index.csv` (an image may have several: the last one holds)."""
    with open(Path(out) / INDEX, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(io.StringIO(f.read())))


def is_run_folder(path: Path) -> bool:
    """Whether `path` is a folder written by `autolabel run --format pts`."""
    return (Path(path) / INDEX).is_file()


def parse(path: Path, skipped: list[str]) -> Iterator[dict]:
    """The records (see `formats.labelset`) of a run folder: the latest index line of each image
    with the points of its `.pts` files. A `.pts` file that cannot be read is skipped with a message."""
    path = Path(path)
    if not is_run_folder(path):
        raise FormatError(f"{path}: not an autolabel run folder (no {INDEX})")
    latest: dict[str, dict] = {}
    for row in read_index(path):
        latest.pop(row["abs_path"], None)  # a newer line for an image replaces the older one, in its place
        latest[row["abs_path"]] = row
    try:
        model_version = json.loads((path / RUN).read_text()).get("model_version", "")
    except (OSError, ValueError):
        model_version = ""
    for row in latest.values():
        raw = row.get("abs_path_bytes")
        rec = {"image": row["image"], "abs_path": os.fsdecode(bytes.fromhex(raw)) if raw else row["abs_path"],
               "file_size": _int(row.get("file_size")), "file_mtime_ns": _int(row.get("file_mtime_ns")),
               "width": _int(row.get("width")) or 0, "height": _int(row.get("height")) or 0, "status": row["status"],
               "error": row.get("error") or None, "model_version": model_version, "faces": []}
        files = [f for f in (row.get("pts_files") or "").split(";") if f]
        boxes = [b.split() for b in (row.get("boxes") or "").split(";") if b]
        conf = [c for c in (row.get("confidences") or "").split(";") if c]
        for i, name in enumerate(files):
            face = {"item": f"face {i + 1} ({name})", "source": "model", "model_version": model_version}
            try:
                face["points"] = read_pts(path / name)
            except AutolabelError as e:
                face["problem"] = str(e)
            if i < len(boxes) and len(boxes[i]) == 5:
                *face["box"], face["det_score"] = (float(v) for v in boxes[i])
            if i < len(conf):
                face["confidence"] = float(conf[i])
            rec["faces"].append(face)
        yield rec


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def read_run(path: Path):
    """A run folder as the rows `autolabel run` writes to Parquet (a pandas DataFrame in
    `formats.parquet.SCHEMA`), so review reads it as it reads a labels file. A face whose
    `.pts` file cannot be read is left out; its image's other faces keep their indices."""
    rows: list[dict] = []
    for rec in parse(path, []):
        faces, keep = [], []
        for i, f in enumerate(rec["faces"]):
            if "points" in f:
                pts = np.asarray(f["points"], np.float32)
                box = Box(*f["box"], f.get("det_score", 0.0)) if "box" in f else points_box(pts)
                faces.append(Face(box, pts, f.get("confidence", float("nan")), "model", f["model_version"]))
                keep.append(i)
        r = ImageResult(Path(rec["abs_path"]), rec["width"], rec["height"], tuple(faces), rec["error"])
        stat = (rec["file_size"], rec["file_mtime_ns"]) if rec["file_size"] is not None else None
        new = result_rows(r, rec["image"], stat, rec["model_version"])
        if faces:  # indices as the run numbered them (a face dropped above leaves a gap)
            for row, i in zip(new, keep):
                row["face_index"], row["face_id"] = i, face_ids([rec["image"]], [i])[0]
        elif rec["status"] == "ok":  # every face unreadable: the image is not labelled here
            continue
        rows.extend(new)
    return pa.Table.from_pylist(rows, schema=SCHEMA).to_pandas()


def parse_plain(folder: Path, skipped: list[str]) -> Iterator[dict]:
    """Records of a plain 300-W folder: `NAME.pts` beside `NAME.jpg`, one face each."""
    folder = Path(folder)
    for pts in sorted(folder.rglob("*.pts")):
        rel = pts.relative_to(folder).as_posix()
        image = image_beside(pts)
        if image is None:
            skipped.append(message(folder, rel, "no image beside it (same name, an image extension)"))
            continue
        name = image.relative_to(folder).as_posix()
        try:
            face = {"item": rel, "points": read_pts(pts), "source": "pts"}
        except AutolabelError as e:
            face = {"item": rel, "problem": str(e).removeprefix(f"{pts}: ")}
        yield {"image": name, "item": f"image {name!r}", "faces": [face]}


def read(folder: Path, root: Path | None = None, check_images: bool = True) -> LabelSet:
    """A 300-W folder as a LabelSet: a run folder through its index, else `.pts` beside images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FormatError(f"{folder}: not a folder")
    return read_with(parse if is_run_folder(folder) else parse_plain, "pts", folder, root, check_images)

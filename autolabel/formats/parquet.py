"""Parquet output: one row per face, plus one row per image with no face or an error.

Crash safety: results are written as small part files (each written atomically) into
`OUT.parts/` while the run goes; `close()` merges the previous OUT and the parts into a new OUT
(streamed row group by row group, so memory stays flat) and renames it over OUT. A run killed
at any moment leaves OUT either as it was or complete, and the parts let a rerun resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autolabel.files import atomic_path
from autolabel.markup import N_POINTS
from autolabel.types import FormatError, ImageResult

SCHEMA_VERSION = 1

SCHEMA = pa.schema(
    [
        pa.field("image", pa.string(), nullable=False),  # path relative to the root it was found under (posix)
        pa.field("abs_path", pa.string(), nullable=False),  # absolute path when labelled
        pa.field("file_size", pa.int64()),
        pa.field("file_mtime_ns", pa.int64()),
        pa.field("width", pa.int32()),  # upright (EXIF-corrected) size
        pa.field("height", pa.int32()),
        pa.field("status", pa.string(), nullable=False),  # ok | no_face | error
        pa.field("error", pa.string()),
        pa.field("face_index", pa.int32()),  # 0-based, null when status != ok
        pa.field("box_x0", pa.float32()),
        pa.field("box_y0", pa.float32()),
        pa.field("box_x1", pa.float32()),
        pa.field("box_y1", pa.float32()),
        pa.field("det_score", pa.float32()),
        pa.field("points", pa.list_(pa.float32(), 2 * N_POINTS)),  # x0, y0, x1, y1, ... 0-based pixels
        pa.field("confidence", pa.float32()),  # flip disagreement / inter-ocular; lower = surer
        pa.field("model_version", pa.string()),
    ]
)
REQUIRED = [f.name for f in SCHEMA]


def result_rows(r: ImageResult, rel: str, stat: tuple[int, int] | None, model_version: str) -> list[dict]:
    """ImageResult -> rows matching SCHEMA."""
    base = {"image": rel, "abs_path": str(r.path.absolute()), "file_size": stat[0] if stat else None,
            "file_mtime_ns": stat[1] if stat else None, "width": r.width or None, "height": r.height or None,
            "status": r.status, "error": r.error, "model_version": model_version}
    empty = {"face_index": None, "box_x0": None, "box_y0": None, "box_x1": None, "box_y1": None,
             "det_score": None, "points": None, "confidence": None}
    if not r.faces:
        return [{**base, **empty}]
    rows = []
    for i, f in enumerate(r.faces):
        rows.append({**base, "face_index": i, "box_x0": f.box.x0, "box_y0": f.box.y0, "box_x1": f.box.x1,
                     "box_y1": f.box.y1, "det_score": f.box.score,
                     "points": np.asarray(f.points, np.float32).reshape(-1).tolist(),
                     "confidence": float(f.confidence), "model_version": f.model_id or model_version})
    return rows


def read_labels(path: Path, columns: list[str] | None = None):
    """Read an autolabel Parquet file as a pandas DataFrame; FormatError if it is not one."""
    try:
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowInvalid) as e:
        raise FormatError(f"{path}: not a readable Parquet file ({e})") from e
    missing = [c for c in (columns or REQUIRED) if c not in table.column_names]
    if missing:
        raise FormatError(f"{path}: not an autolabel labels file (missing columns: {', '.join(missing)})")
    return table.to_pandas()


def points_array(df) -> np.ndarray:
    """The `points` column of face rows as (N, 68, 2) float32."""
    return np.stack([np.asarray(p, np.float32) for p in df["points"]]).reshape(-1, N_POINTS, 2)


class ParquetWriter:
    """A `formats.Writer` for one Parquet file (metadata: the file's `autolabel` key)."""

    def __init__(self, out: Path, metadata: dict | None = None, part_rows: int = 256, overwrite: bool = False):
        self.out = Path(out)
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.metadata = metadata or {}
        self.buf: list[dict] = []
        if overwrite:
            self.out.unlink(missing_ok=True)
            for p in self.parts.glob("*.parquet") if self.parts.is_dir() else []:
                p.unlink()
        self.parts.mkdir(parents=True, exist_ok=True)
        for tmp in self.parts.glob(".*.tmp"):  # left by a run killed mid-write
            tmp.unlink()
        existing = sorted(self.parts.glob("part-*.parquet"))
        self.n_parts = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0

    def _files(self) -> list[Path]:
        return ([self.out] if self.out.is_file() else []) + sorted(self.parts.glob("part-*.parquet"))

    def done_keys(self) -> dict[str, tuple[int, int]]:
        """abs_path -> (size, mtime_ns) of images already labelled (ok or no_face)."""
        keys: dict[str, tuple[int, int]] = {}
        for f in self._files():
            try:
                t = pq.read_table(f, columns=["abs_path", "file_size", "file_mtime_ns", "status"])
            except (OSError, pa.ArrowInvalid) as e:
                raise FormatError(f"{f}: cannot resume from it ({e}); use --overwrite to start over") from e
            for p, s, m, st in zip(*(t.column(c).to_pylist() for c in t.column_names)):
                if st in ("ok", "no_face"):
                    keys[p] = (s, m)
                else:
                    keys.pop(p, None)
        return keys

    def write_result(self, r: ImageResult, rel: str, stat: tuple[int, int] | None) -> None:
        self.buf.extend(result_rows(r, rel, stat, self.metadata.get("model_version", "")))
        if len(self.buf) >= 4096:  # a safety valve; the pipeline flushes per batch
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        table = pa.Table.from_pylist(self.buf, schema=SCHEMA)
        with atomic_path(self.parts / f"part-{self.n_parts:06d}.parquet") as tmp:
            pq.write_table(table, tmp)
        self.n_parts += 1
        self.buf = []

    def close(self) -> None:
        """Merge OUT and the parts into a new OUT: a newer row for an image replaces older ones."""
        self.flush()
        files = self._files()
        newest: dict[str, int] = {}
        for i, f in enumerate(files):
            for p in pq.read_table(f, columns=["abs_path"]).column(0).to_pylist():
                newest[p] = i
        meta = {b"autolabel": json.dumps({**self.metadata, "schema_version": SCHEMA_VERSION}).encode()}
        with atomic_path(self.out) as tmp:
            with pq.ParquetWriter(tmp, SCHEMA.with_metadata(meta)) as w:
                for i, f in enumerate(files):
                    pf = pq.ParquetFile(f)
                    for g in range(pf.num_row_groups):
                        t = pf.read_row_group(g).cast(SCHEMA)
                        keep = np.array([newest[p] == i for p in t.column("abs_path").to_pylist()], dtype=bool)
                        if keep.any():
                            w.write_table(t.filter(pa.array(keep)))
                if not files:
                    w.write_table(SCHEMA.empty_table())
        for f in files:
            if f != self.out:
                f.unlink()
        try:
            self.parts.rmdir()
        except OSError:
            pass


def file_metadata(path: Path) -> dict:
    """The run metadata stored in an autolabel Parquet file."""
    md = pq.read_schema(path).metadata or {}
    return json.loads(md.get(b"autolabel", b"{}"))

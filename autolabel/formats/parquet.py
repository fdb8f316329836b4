"""Parquet output: one row per face, plus one row per image with no face or an error.

Crash safety: results are written as small part files (each written atomically) into
`OUT.parts/` while the run goes; `close()` merges the previous OUT and the parts into a new OUT
(streamed row group by row group, so memory stays flat) and renames it over OUT. A run killed
at any moment leaves OUT either as it was or complete, and the parts let a rerun resume.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autolabel.files import atomic_path, path_bytes, path_text, remove_stale_temps
from autolabel.formats.labelset import LabelSet, read_with
from autolabel.markup import N_POINTS
from autolabel.types import FormatError, ImageResult, UsageError

SCHEMA_VERSION = 2

#: how the `points` column is laid out; stored in every file's metadata, so the file explains itself
POINTS_LAYOUT = {
    "column": "points",
    "length": 2 * N_POINTS,
    "layout": "interleaved x, y: [x0, y0, x1, y1, ..., x67, y67] (point i is x = points[2i], y = points[2i + 1], 0-based)",
    "coordinates": "0-based pixel centres of the upright (EXIF-corrected) image: the centre of the top-left pixel is (0.0, 0.0)",
    "markup": "iBUG 300-W 68 points (point i here is point i + 1 in 300-W's 1-based numbering)",
}

SCHEMA = pa.schema(
    [
        pa.field("image", pa.string(), nullable=False),  # the image's name: relative to the inputs' folder (posix)
        pa.field("abs_path", pa.string(), nullable=False),  # absolute path when labelled (non-UTF-8 bytes as \xNN)
        pa.field("abs_path_bytes", pa.binary()),  # the path's raw bytes when it is not valid UTF-8, else null
        pa.field("file_size", pa.int64()),
        pa.field("file_mtime_ns", pa.int64()),
        pa.field("width", pa.int32()),  # upright (EXIF-corrected) size
        pa.field("height", pa.int32()),
        pa.field("status", pa.string(), nullable=False),  # ok | no_face | error
        pa.field("error", pa.string()),
        pa.field("face_index", pa.int32()),  # 0-based, null when status != ok
        pa.field("face_id", pa.string()),  # "image#face_index": unique in the file, the review's face key
        pa.field("box_x0", pa.float32()),
        pa.field("box_y0", pa.float32()),
        pa.field("box_x1", pa.float32()),
        pa.field("box_y1", pa.float32()),
        pa.field("det_score", pa.float32()),
        pa.field("points", pa.list_(pa.float32(), 2 * N_POINTS), metadata={
            "description": f"{POINTS_LAYOUT['layout']}; {POINTS_LAYOUT['coordinates']}"}),
        pa.field("confidence", pa.float32()),  # NME-like uncertainty score (predictor.face_confidence); lower = surer
        pa.field("model_version", pa.string()),
        pa.field("point_uncertainty", pa.list_(pa.float32(), N_POINTS), metadata={
            "description": "per point, in point order: the model's predicted error scale in image pixels "
                           "(expected error along each axis); null for a model without one"}),
    ]
)
#: columns added since the first version: files without them still read (they are filled in)
ADDED = ("abs_path_bytes", "face_id", "point_uncertainty")
#: the columns every autolabel labels file has
REQUIRED = [n for n in SCHEMA.names if n not in ADDED]
#: rows per Parquet row group in a finished file (~50 MB): few groups, a small footer, flat memory
ROW_GROUP_ROWS = 65_536


def face_ids(images, face_indices) -> list[str | None]:
    """The `face_id` of each row: "image#face_index" (None for a row without a face)."""
    out = []
    for img, i in zip(images, face_indices):
        none = i is None or (isinstance(i, float) and math.isnan(i))  # pandas' NaN
        out.append(None if none else f"{img}#{int(i)}")
    return out


def result_rows(r: ImageResult, rel: str, stat: tuple[int, int] | None, model_version: str) -> list[dict]:
    """ImageResult -> rows matching SCHEMA."""
    base = {"image": rel, "abs_path": path_text(r.path.absolute()), "abs_path_bytes": path_bytes(r.path.absolute()),
            "file_size": stat[0] if stat else None, "file_mtime_ns": stat[1] if stat else None, "width": r.width or None,
            "height": r.height or None, "status": r.status, "error": r.error, "model_version": model_version}
    empty = {"face_index": None, "face_id": None, "box_x0": None, "box_y0": None, "box_x1": None, "box_y1": None,
             "det_score": None, "points": None, "confidence": None, "point_uncertainty": None}
    if not r.faces:
        return [{**base, **empty}]
    rows = []
    for i, f in enumerate(r.faces):
        rows.append({**base, "face_index": i, "face_id": face_ids([rel], [i])[0], "box_x0": f.box.x0, "box_y0": f.box.y0,
                     "box_x1": f.box.x1, "box_y1": f.box.y1, "det_score": f.box.score,
                     "points": np.asarray(f.points, np.float32).reshape(-1).tolist(),
                     "confidence": float(f.confidence), "model_version": f.model_id or model_version,
                     "point_uncertainty": None if f.point_uncertainty is None else np.asarray(f.point_uncertainty, np.float32).tolist()})
    return rows


def conform(table: pa.Table, source: Path | str = "table", extra: bool = False) -> pa.Table:
    """A table read from a labels file (an older version, or one re-saved by pandas with an
    index column and other types) as SCHEMA: its columns picked by name and cast, columns added
    since filled in; other columns dropped, or kept after SCHEMA's with `extra` (pandas' index
    never). FormatError if it cannot be."""
    names = table.column_names
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise FormatError(f"{source}: not an autolabel labels file (missing columns: {', '.join(missing)})")
    cols = []
    for field in SCHEMA:
        if field.name in names:
            col = table.column(field.name)
        elif field.name == "face_id":
            col = pa.array(face_ids(table.column("image").to_pylist(), table.column("face_index").to_pylist()), pa.string())
        else:
            col = pa.nulls(table.num_rows, field.type)
        try:
            cols.append(col.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise FormatError(f"{source}: column {field.name} is {col.type}, not {field.type} ({e})") from None
    fields = list(SCHEMA)
    if extra:
        for name in names:
            if name not in SCHEMA.names and not name.startswith("__index_level_"):
                cols.append(table.column(name))
                fields.append(table.schema.field(name))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def read_labels(path: Path, columns: list[str] | None = None):
    """Read an autolabel Parquet file as a pandas DataFrame: SCHEMA's columns (filled in for an
    older file), then any others it has (an audit's), or only `columns`; FormatError if it is
    not a labels file."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise FormatError(f"{path}: not a readable Parquet file ({e})") from e
    table = conform(table, path, extra=True)
    if columns:
        absent = [c for c in columns if c not in table.column_names]
        if absent:
            raise FormatError(f"{path}: no columns {', '.join(absent)}")
        table = table.select(columns)
    return table.to_pandas()


def points_array(df) -> np.ndarray:
    """The `points` column of face rows as (N, 68, 2) float32."""
    return np.stack([np.asarray(p, np.float32) for p in df["points"]]).reshape(-1, N_POINTS, 2)


#: run settings that must not change between a run and its resumption (see ParquetWriter)
SAME_SETTINGS = ("flip", "refine")


class ParquetWriter:
    """A `formats.Writer` for one Parquet file (metadata: the file's `autolabel` key)."""

    def __init__(self, out: Path, metadata: dict | None = None, part_rows: int = 256, overwrite: bool = False):
        self.out = Path(out)
        self.parts = self._parts_folder()
        self.metadata = metadata or {}
        self.buf: list[dict] = []
        if overwrite:
            if self.out.is_file():
                self.out.unlink()
            for p in self.parts.glob("*.parquet") if self.parts.is_dir() else []:
                p.unlink()
        elif self.out.is_file():
            _check_resumable(self.out)  # before anything is created beside it
        remove_stale_temps(self.out.parent, self.out.name)  # a merge killed mid-write
        self.parts.mkdir(parents=True, exist_ok=True)
        for tmp in self.parts.glob(".*.tmp"):  # left by a run killed mid-write
            tmp.unlink()
        existing = sorted(self.parts.glob("part-*.parquet"))
        self.n_parts = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        if not overwrite:
            self._check_same_settings()

    def _check_same_settings(self) -> None:
        """UsageError before any work when the rows already there were predicted with other
        SAME_SETTINGS (flip averaging, --refine): a resumed file would mix them under one
        metadata. (Rows carry their own model version, so another model may add to a file.)"""
        mine = {k: self.metadata[k] for k in SAME_SETTINGS if k in self.metadata}
        for f in self._files():
            try:
                theirs = file_metadata(f)
            except (OSError, pa.ArrowInvalid, ValueError):
                continue  # unreadable parts are reported by done_keys
            differ = [k for k, v in mine.items() if k in theirs and theirs[k] != v]
            if differ:
                were = ", ".join(f"{k}={theirs[k]}" for k in differ)
                now = ", ".join(f"{k}={mine[k]}" for k in differ)
                flags = {("flip", False): "--no-flip", ("refine", False): "--no-refine", ("refine", True): "--refine"}
                same = " ".join(flags.get((k, theirs[k]), "") for k in differ).strip()
                raise UsageError(f"{self.out} was labelled with {were}; this run has {now}: resume with the same options"
                                 f"{' (' + same + ')' if same else ''}, or --overwrite to start over") from None

    def _parts_folder(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    def _schema(self) -> pa.Schema:
        """SCHEMA with the run's metadata (the `autolabel` key)."""
        meta = {**self.metadata, "schema_version": SCHEMA_VERSION, "points": POINTS_LAYOUT}
        return SCHEMA.with_metadata({b"autolabel": json.dumps(meta).encode()})

    def _files(self) -> list[Path]:
        return ([self.out] if self.out.is_file() else []) + sorted(self.parts.glob("part-*.parquet"))

    def done_keys(self) -> dict[str, tuple[int, int]]:
        """abs_path -> (size, mtime_ns) of images already labelled (ok or no_face)."""
        keys: dict[str, tuple[int, int]] = {}
        for f in self._files():
            cols = ["abs_path", "file_size", "file_mtime_ns", "status"]
            try:
                t = pq.read_table(f, columns=cols)
            except (OSError, pa.ArrowInvalid) as e:
                raise FormatError(f"{f}: cannot resume from it ({e}); use --overwrite to start over") from e
            for p, s, m, st in zip(*(t.column(c).to_pylist() for c in cols)):  # by name, whatever the file's order
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
        table = pa.Table.from_pylist(self.buf, schema=self._schema())
        with atomic_path(self.parts / f"part-{self.n_parts:06d}.parquet") as tmp:
            pq.write_table(table, tmp)
        self.n_parts += 1
        self.buf = []

    def close(self) -> None:
        """Merge OUT and the parts into a new OUT: a newer row for an image replaces older ones.

        Rows are regrouped into row groups of ROW_GROUP_ROWS (one small part per batch would
        make as many tiny groups). If the merge fails, OUT and the parts stay as they were.
        """
        self.flush()
        files = self._files()
        newest = _newest(files)
        with atomic_path(self.out) as tmp, pq.ParquetWriter(tmp, self._schema()) as w:
            pending: list[pa.Table] = []
            n = 0
            for i, f in enumerate(files):
                pf = pq.ParquetFile(f)
                for g in range(pf.num_row_groups):
                    t = conform(pf.read_row_group(g), f)
                    keep = np.array([newest[p] == i for p in t.column("abs_path").to_pylist()], dtype=bool)
                    pending.append(t.filter(pa.array(keep)))
                    n += pending[-1].num_rows
                    while n >= ROW_GROUP_ROWS:
                        t = pa.concat_tables(pending)
                        w.write_table(t.slice(0, ROW_GROUP_ROWS))
                        pending, n = [t.slice(ROW_GROUP_ROWS)], t.num_rows - ROW_GROUP_ROWS
            if n or not files:
                w.write_table(pa.concat_tables(pending) if pending else SCHEMA.empty_table())
        for f in files:
            if f != self.out:
                f.unlink()
        try:
            self.parts.rmdir()
        except OSError:
            pass


class ParquetDatasetWriter(ParquetWriter):
    """A `formats.Writer` for a Parquet dataset: the folder `out` of part files, which pandas,
    pyarrow and DuckDB read as one table. The parts (each written atomically, each carrying the
    run metadata) are the output: nothing is merged, so a run of millions of images never
    rewrites its rows at the end. `close()` only removes rows that a newer part replaces (an image
    retried after an error), so each image keeps one set of rows."""

    def _parts_folder(self) -> Path:
        return self.out

    def close(self) -> None:
        self.flush()
        files = self._files()
        newest = _newest(files)
        for i, f in enumerate(files):
            t = pq.read_table(f)
            keep = np.array([newest[p] == i for p in t.column("abs_path").to_pylist()], dtype=bool)
            if keep.all():
                continue
            if keep.any():
                with atomic_path(f) as tmp:
                    pq.write_table(t.filter(pa.array(keep)), tmp)
            else:
                f.unlink()


def _newest(files: list[Path]) -> dict[str, int]:
    """abs_path -> index of the last of `files` with rows for it (newer rows replace older ones)."""
    newest: dict[str, int] = {}
    for i, f in enumerate(files):
        for p in pq.read_table(f, columns=["abs_path"]).column(0).to_pylist():
            newest[p] = i
    return newest


def _check_resumable(out: Path) -> None:
    """UsageError (exit 2, before any work) unless `out` is a labels file a run can add to."""
    try:
        conform(pq.read_schema(out).empty_table(), out)
    except (OSError, pa.ArrowInvalid, FormatError) as e:
        why = str(e).removeprefix(f"{out}: ")
        raise UsageError(f"{out} exists and is not a labels file autolabel can add to ({why}); "
                         "use --overwrite to replace it, or another --out") from None


def file_metadata(path: Path) -> dict:
    """The run metadata stored in an autolabel Parquet file."""
    md = pq.read_schema(path).metadata or {}
    return json.loads(md.get(b"autolabel", b"{}"))


# ----------------------------------------------------------------------------------- reading
def parse(path: Path, skipped: list[str]) -> Iterator[dict]:
    """Records (`formats.labelset`) of a labels Parquet file (also an audit file), one per image
    in file order."""
    df = read_labels(path)
    images: dict[str, dict] = {}
    for row in df.itertuples(index=False):
        rec = images.get(row.image)
        if rec is None:
            raw = row.abs_path_bytes
            rec = images[row.image] = {"image": row.image, "abs_path": row.abs_path, "abs_path_bytes": raw.hex() if raw else None,
                                       "file_size": _opt(row.file_size),
                                       "file_mtime_ns": _opt(row.file_mtime_ns), "width": _opt(row.width),
                                       "height": _opt(row.height), "status": row.status, "error": row.error,
                                       "item": f"image {row.image!r}", "faces": []}
        if row.status == "ok" and row.points is not None:
            rec["faces"].append({"item": f"face {_opt(row.face_index)}", "box": [row.box_x0, row.box_y0, row.box_x1, row.box_y1],
                                 "det_score": row.det_score, "points": np.asarray(row.points, np.float64).reshape(-1, 2),
                                 "confidence": row.confidence, "source": "model", "model_version": row.model_version,
                                 "point_uncertainty": row.point_uncertainty})
    yield from images.values()


def _opt(v) -> int | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def read(path: Path, root: Path | None = None, check_images: bool = True) -> LabelSet:
    """A labels Parquet file as a LabelSet."""
    return read_with(parse, "parquet", path, root, check_images)

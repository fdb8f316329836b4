"""Wide CSV (the OpenFace layout): one row per face, `x_0 .. x_67, y_0 .. y_67` columns, so
pandas reads it with no parsing of lists (`pd.read_csv(path)`).

Columns: image, face_index, box_x0, box_y0, box_x1, box_y1, det_score, confidence, x_0 .. x_67,
y_0 .. y_67, then width, height, status, error, abs_path, file_size, file_mtime_ns, source,
model_version. An image with no face, or that failed, has one row with empty face columns.
Points are 0-based pixel centres (as autolabel's Parquet), written with 3 decimals.
Reading needs only `image` and the 136 point columns (names may carry OpenFace's leading
spaces); rows of one image need not be adjacent.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from autolabel.formats.labelset import LabelSet, PartsWriter, Records, as_int, message, read_with
from autolabel.markup import N_POINTS
from autolabel.types import FormatError

XS = [f"x_{i}" for i in range(N_POINTS)]
YS = [f"y_{i}" for i in range(N_POINTS)]
BOX = ["box_x0", "box_y0", "box_x1", "box_y1"]
COLUMNS = ["image", "face_index", *BOX, "det_score", "confidence", *XS, *YS,
           "width", "height", "status", "error", "abs_path", "file_size", "file_mtime_ns", "abs_path_bytes", "source", "model_version"]
_IMAGE_FIELDS = ("width", "height", "status", "error", "abs_path", "file_size", "file_mtime_ns", "abs_path_bytes")


def parse(path: Path, skipped: list[str]) -> Iterator[dict]:
    """Records of a wide CSV file (all rows of an image, wherever they are, make one record)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in ["image", *XS, *YS] if c not in header]
            if missing:
                shown = ", ".join(missing[:6]) + (f" ... ({len(missing)} in all)" if len(missing) > 6 else "")
                raise FormatError(f"{path}: not a wide landmark CSV (missing columns: {shown})")
            col = {h: i for i, h in enumerate(header)}
            images: dict[str, dict] = {}
            for line, row in enumerate(reader, 2):
                get = _getter(row, col)
                name = get("image")
                if not name:
                    skipped.append(message(path, f"line {line}", "no image name"))
                    continue
                rec = images.get(name)
                if rec is None:
                    rec = images[name] = {"image": name, "item": f"image {name!r}", "faces": [],
                                          **{k: get(k) or None for k in _IMAGE_FIELDS}}
                    for k in ("width", "height", "file_size", "file_mtime_ns"):
                        rec[k] = as_int(rec[k])
                if get("face_index") == "" and not any(get(c) for c in XS):
                    continue  # an image without a face
                rec["faces"].append(_face(get, line))
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not a UTF-8 text file ({e})") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror or e})") from None
    except csv.Error as e:
        raise FormatError(f"{path}: not a readable CSV file ({e})") from None
    yield from images.values()


def _getter(row: list[str], col: dict[str, int]):
    """cell(column name) for one row: stripped text, "" when the column or the cell is absent."""
    return lambda c: row[col[c]].strip() if c in col and col[c] < len(row) else ""


def _face(get, line: int) -> dict:
    face = {"item": f"line {line} (face {get('face_index') or '?'})", "det_score": get("det_score") or None,
            "confidence": get("confidence") or None, "source": get("source") or "csv", "model_version": get("model_version")}
    empty = [c for c in XS + YS if get(c) == ""]
    if empty:
        return {**face, "problem": f"{len(empty)} empty point columns ({', '.join(empty[:6])}{' ...' if len(empty) > 6 else ''})"}
    try:
        face["points"] = np.stack([[float(get(c)) for c in XS], [float(get(c)) for c in YS]], axis=1)
        face["box"] = [float(get(c)) for c in BOX] if all(get(c) for c in BOX) else None
    except ValueError as e:
        return {**face, "problem": f"not a number ({e})"}
    return face


def read(path: Path, root: Path | None = None, check_images: bool = True) -> LabelSet:
    """A wide CSV file as a LabelSet."""
    return read_with(parse, "csv", path, root, check_images)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


class CsvWriter(PartsWriter):
    """Streaming, resumable wide CSV writer (see PartsWriter)."""

    format = "csv"

    def render(self, f: TextIO, records: Records) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for rec in records():
            tail = [_cell(rec.get(k)) for k in _IMAGE_FIELDS]
            if not rec.get("faces"):
                w.writerow([rec["image"]] + [""] * (len(COLUMNS) - 1 - len(tail) - 2) + tail + ["", ""])
                continue
            for k, face in enumerate(rec["faces"]):
                pts = np.asarray(face["points"], np.float64).reshape(N_POINTS, 2)
                box = [f"{float(v):.3f}" for v in face["box"]]
                w.writerow([rec["image"], k, *box, _cell(face.get("det_score")), _cell(face.get("confidence")),
                            *(f"{v:.3f}" for v in pts[:, 0]), *(f"{v:.3f}" for v in pts[:, 1]),
                            *tail, face.get("source") or "", face.get("model_version") or ""])

    parse = staticmethod(parse)

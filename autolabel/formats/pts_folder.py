"""300-W folder output: one `.pts` per face (`name_1.pts`, `name_2.pts`, ...) mirroring the
input tree, plus `index.csv` listing every image with its status (ok / no_face / error), and
`run.json` with the run's metadata.

The index is an append-only journal (one line per image, flushed and fsynced per batch); a
line cut short by a crash is ignored on resume. Each `.pts` is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from autolabel.files import atomic_write_text, repair_journal
from autolabel.formats.pts import write_pts
from autolabel.types import ImageResult

INDEX = "index.csv"
RUN = "run.json"
COLUMNS = ["image", "abs_path", "file_size", "file_mtime_ns", "width", "height", "status", "faces", "error", "pts_files"]


class PtsFolderWriter:
    """A `formats.Writer` for a 300-W folder."""

    def __init__(self, out: Path, metadata: dict | None = None, overwrite: bool = False):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.index = self.out / INDEX
        if overwrite:
            self.index.unlink(missing_ok=True)
        self.metadata = metadata or {}
        if self.metadata:
            atomic_write_text(self.out / RUN, json.dumps(self.metadata, indent=1))
        new = not self.index.is_file() or self.index.stat().st_size == 0
        repair_journal(self.index)  # a line cut short by a crash is dropped; its image is redone
        self.f = open(self.index, "a", encoding="utf-8", newline="")
        self.w = csv.writer(self.f)
        if new:
            self.w.writerow(COLUMNS)
            self.flush()

    def done_keys(self) -> dict[str, tuple[int, int]]:
        keys: dict[str, tuple[int, int]] = {}
        if not self.index.is_file():
            return keys
        with open(self.index, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if row.get("status") in ("ok", "no_face") and row.get("file_size"):
                    keys[row["abs_path"]] = (int(row["file_size"]), int(row["file_mtime_ns"]))
                else:
                    keys.pop(row.get("abs_path", ""), None)
        return keys

    def write_result(self, r: ImageResult, rel: str, stat: tuple[int, int] | None) -> None:
        names = []
        stem = Path(rel).with_suffix("")
        for i, face in enumerate(r.faces, start=1):
            dest = self.out / f"{stem}_{i}.pts"
            write_pts(dest, face.points)
            names.append(dest.relative_to(self.out).as_posix())
        self.w.writerow([rel, str(r.path.absolute()), stat[0] if stat else "", stat[1] if stat else "", r.width, r.height,
                         r.status, len(r.faces), r.error or "", ";".join(names)])

    def flush(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.flush()
        self.f.close()


def read_index(out: Path) -> list[dict]:
    with open(Path(out) / INDEX, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(io.StringIO(f.read())))

"""300-W folder output: one `.pts` per face (`name_1.pts`, `name_2.pts`, ...) mirroring the
input tree, plus `index.csv` listing every image with its status (ok / no_face / error).

The index is an append-only journal (one line per image, flushed and fsynced per batch); a
line cut short by a crash is ignored on resume. Each `.pts` is written atomically.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from autolabel.formats.pts import write_pts
from autolabel.types import ImageResult

INDEX = "index.csv"
COLUMNS = ["image", "abs_path", "file_size", "file_mtime_ns", "width", "height", "status", "faces", "error", "pts_files"]


class PtsFolderWriter:
    def __init__(self, out: Path, metadata: dict | None = None, overwrite: bool = False):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.index = self.out / INDEX
        if overwrite:
            self.index.unlink(missing_ok=True)
        new = not self.index.is_file() or self.index.stat().st_size == 0
        self._repair()
        self.f = open(self.index, "a", encoding="utf-8", newline="")
        self.w = csv.writer(self.f)
        if new:
            self.w.writerow(COLUMNS)
            self.flush()

    def _repair(self) -> None:
        """Drop a last line without its newline (a crash mid-append)."""
        if not self.index.is_file():
            return
        data = self.index.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.index, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

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

"""dlib imglab XML (`dlib.train_shape_predictor`'s and imglab's format), written and read.

    <dataset><name/><comment/><images>
      <image file='rel/path.jpg' width= height=>
        <box top= left= width= height=><part name='00' x= y=/> ... <part name='67' .../></box>
      </image> ...
    </images></dataset>

dlib's conventions, which this module keeps:
- `file` is relative to the XML file's folder (absolute paths work too);
- coordinates are **integers** (dlib refuses `x='101.25'`): 0-based pixel indices, so writing
  rounds points to the nearest pixel (at most 0.5 px off) and box edges to whole pixels;
  `width` = right - left + 1 in dlib's inclusive rectangles, i.e. x1 - x0 of our [x0, x1) box;
- dlib orders parts by the alphabetical order of their names: names are zero-padded 00-67
  (with 0-67, part 2 would silently become point 10);
- a box without parts breaks shape-predictor training, so every written box has its 68 parts.
Extra attributes (`image`, `abs_path`, `status`, ... on `<image>`, `det_score`, `confidence`, ...
on `<box>`) carry what autolabel needs to resume and round-trip; dlib ignores them.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from autolabel.formats.labelset import POINT_LABELS, LabelSet, PartsWriter, Records, as_int, json_num, message, point_index, read_with
from autolabel.markup import N_POINTS
from autolabel.types import FormatError

_IMAGE_EXTRA = ("image", "abs_path", "file_size", "file_mtime_ns", "status", "error", "abs_path_bytes")
_BOX_EXTRA = ("det_score", "confidence", "source", "model_version")


def parse(path: Path, skipped: list[str]) -> Iterator[dict]:
    """Records of a dlib XML file; boxes that are not 68-point faces are reported."""
    path = Path(path)
    n_image = 0
    try:
        events = ET.iterparse(path, events=("start", "end"))
        _, first = next(events)
        if first.tag != "dataset":
            raise FormatError(f"{path}: not a dlib imglab XML file (root element <{first.tag}>, expected <dataset>)")
        for ev, el in events:
            if ev != "end" or el.tag != "image":
                continue
            n_image += 1
            file = el.get("file")
            if not file:
                skipped.append(message(path, f"image #{n_image}", "no file attribute"))
                el.clear()
                continue
            rec = {"image": el.get("image") or file, "ref": file, "width": as_int(el.get("width")), "height": as_int(el.get("height")),
                   "item": f"image {file!r}", "faces": [_face(b, k) for k, b in enumerate(el.findall("box"), 1)]}
            rec.update({k: el.get(k) for k in _IMAGE_EXTRA[1:]})
            rec["file_size"], rec["file_mtime_ns"] = as_int(rec["file_size"]), as_int(rec["file_mtime_ns"])
            el.clear()  # flat memory on big files
            yield rec
    except ET.ParseError as e:
        raise FormatError(f"{path}: not a readable XML file ({e})") from None
    except StopIteration:
        raise FormatError(f"{path}: empty XML file") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror or e})") from None


def _face(box: ET.Element, k: int) -> dict:
    a = box.attrib
    face = {"item": f"box {k} (top={a.get('top')} left={a.get('left')})", "det_score": a.get("det_score"),
            "confidence": a.get("confidence"), "source": a.get("source") or "dlib", "model_version": a.get("model_version") or ""}
    try:
        top, left, w, h = (float(a[n]) for n in ("top", "left", "width", "height"))
        face["box"] = [left, top, left + w, top + h]
    except (KeyError, ValueError):
        return {**face, "problem": "box without top, left, width and height numbers"}
    if a.get("ignore") == "1":
        return {**face, "problem": "marked ignore='1'"}
    parts = box.findall("part")
    if not parts:
        return {**face, "problem": f"no parts (a face box only), expected {N_POINTS}"}
    pts = np.full((N_POINTS, 2), np.nan)
    for p in parts:
        i = point_index(p.get("name", ""))
        if i is None:
            return {**face, "problem": f"part name {p.get('name')!r} is not a point 00-{N_POINTS - 1}"}
        if not math.isnan(pts[i, 0]):
            return {**face, "problem": f"part {p.get('name')!r} given twice"}
        try:
            pts[i] = float(p.get("x")), float(p.get("y"))
        except (TypeError, ValueError):
            return {**face, "problem": f"part {p.get('name')!r} has no numeric x, y"}
    if len(parts) < N_POINTS:
        return {**face, "problem": f"{len(parts)} parts, expected {N_POINTS}"}
    return {**face, "points": pts}


def read(path: Path, root: Path | None = None, check_images: bool = True) -> LabelSet:
    """A dlib XML file as a LabelSet (`file` is relative to the XML's folder, as dlib reads it)."""
    return read_with(parse, "dlib", path, root, check_images)


def _whole(v: float) -> int:
    return math.floor(float(v) + 0.5)


class DlibXmlWriter(PartsWriter):
    """Streaming, resumable dlib XML writer (see PartsWriter)."""

    format = "dlib"

    def render(self, f: TextIO, records: Records) -> None:
        f.write("<?xml version='1.0' encoding='UTF-8'?>\n<dataset>\n<name>autolabel</name>\n"
                f"<comment>{escape('68-point facial landmarks (iBUG 300-W markup) by autolabel; coordinates are 0-based pixels')}</comment>\n"
                "<images>\n")
        folder = self.out.parent.absolute()
        for rec in records():
            file = os.path.relpath(rec["abs_path"], folder) if rec.get("abs_path") else rec["image"]
            attrs = {"file": Path(file).as_posix(), "width": rec.get("width"), "height": rec.get("height"),
                     **{k: rec.get(k) for k in _IMAGE_EXTRA}}
            f.write(f"  <image{_attrs(attrs)}>\n")
            for face in rec.get("faces", ()):
                x0, y0, x1, y1 = (_whole(v) for v in face["box"])
                extra = {k: json_num(face.get(k)) if k in ("det_score", "confidence") else face.get(k) for k in _BOX_EXTRA}
                f.write(f"    <box{_attrs({'top': y0, 'left': x0, 'width': x1 - x0, 'height': y1 - y0, **extra})}>\n")
                pts = np.asarray(face["points"], np.float64)
                f.writelines(f"      <part name='{n}' x='{_whole(x)}' y='{_whole(y)}'/>\n" for n, (x, y) in zip(POINT_LABELS, pts))
                f.write("    </box>\n")
            f.write("  </image>\n")
        f.write("</images>\n</dataset>\n")

    parse = staticmethod(parse)


def _attrs(d: dict) -> str:
    return "".join(f" {k}={quoteattr(str(v))}" for k, v in d.items() if v is not None and v != "")

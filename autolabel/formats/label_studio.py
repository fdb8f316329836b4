"""Label Studio: tasks JSON with pre-annotations, its labeling config, and reading an export back.

Writing `tasks.json` also writes `tasks.label_config.xml` (paste it into the project's
Labeling Interface): an `<Image name="image">`, `<RectangleLabels name="face">` (one "face"
label, so Label Studio's own COCO export works) and `<KeyPointLabels name="kp">` with labels
"00" .. "67" (`model_index` = point index, hint = point name, coloured by group).

One task per image (a 68-point face is 69 regions; one task for a whole folder would be
megabytes): `data.image` is `image_prefix` + the path relative to the folder labelled (the
default suits local-file storage with LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to that
folder); `data.name` keeps the path itself. `predictions[0].result` holds, per face k, a
rectangle region `face-k` and 68 keypoint regions with `parentID` "face-k"; `score` is
1 - the worst face's confidence (Label Studio sorts low scores first = least certain first).

Pixel convention: Label Studio uses percent of the image with 0 and 100 at the image's edges,
so a point at 0-based pixel centre x is at 100 * (x + 0.5) / width; box edges map with no
shift (x0 -> 100 * x0 / width).

Reading (a tasks file or Label Studio's JSON export): per task the last annotation that was not
cancelled, else the first prediction. Keypoints are grouped into faces by `parentID`; keypoints
without one go to the only rectangle (or form one face when there is no rectangle), else to
the rectangle that contains them. Labels "00" .. "67", "0" .. "67" or the point names are read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO
from urllib.parse import quote, unquote
from xml.sax.saxutils import quoteattr

import numpy as np

from autolabel.files import atomic_write_text
from autolabel.formats.labelset import (
    KEYPOINT_NAMES,
    POINT_LABELS,
    LabelSet,
    PartsWriter,
    Records,
    json_num,
    message,
    point_index,
    read_with,
)
from autolabel.markup import GROUP_COLORS, N_POINTS, group_of
from autolabel.types import FormatError

LOCAL_FILES = "/data/local-files/?d="
#: point size in Label Studio (`value.width`, percent of the image width)
POINT_SIZE = 0.4
_DATA_EXTRA = ("abs_path", "file_size", "file_mtime_ns", "width", "height", "status", "error", "abs_path_bytes")


def label_config() -> str:
    """The labeling config XML for a 68-point face."""
    labels = "\n".join(f"    <Label value={quoteattr(lab)} model_index=\"{i}\" hint={quoteattr(KEYPOINT_NAMES[i])} "
                       f"background={quoteattr(GROUP_COLORS[group_of(i)])}/>" for i, lab in enumerate(POINT_LABELS))
    return ("<View>\n"
            "  <Header value=\"68-point face landmarks (iBUG 300-W markup): a face box, then points 00-67\"/>\n"
            "  <Image name=\"image\" value=\"$image\" zoom=\"true\" zoomControl=\"true\"/>\n"
            "  <RectangleLabels name=\"face\" toName=\"image\" strokeWidth=\"1\">\n"
            "    <Label value=\"face\" background=\"#888888\"/>\n"
            "  </RectangleLabels>\n"
            "  <KeyPointLabels name=\"kp\" toName=\"image\" strokeWidth=\"1\" smart=\"false\">\n"
            f"{labels}\n"
            "  </KeyPointLabels>\n"
            "</View>\n")


def task_of(rec: dict, image_prefix: str = LOCAL_FILES) -> dict:
    """One record -> one Label Studio task with its faces as a prediction."""
    w, h = float(rec.get("width") or 0), float(rec.get("height") or 0)
    data = {"image": image_prefix + quote(rec["image"], safe="/"), "name": rec["image"],
            **{k: rec[k] for k in _DATA_EXTRA if rec.get(k) is not None}}
    result, worst = [], 0.0
    for k, face in enumerate(rec.get("faces", ())):
        if not (w and h):
            break
        rid = f"face-{k}"
        x0, y0, x1, y1 = (float(v) for v in face["box"])
        common = {"to_name": "image", "original_width": int(w), "original_height": int(h), "image_rotation": 0}
        meta = {m: face.get(m) for m in ("det_score", "confidence", "source", "model_version")}
        meta = {m: json_num(v) if m in ("det_score", "confidence") else v for m, v in meta.items()}
        result.append({"id": rid, "from_name": "face", "type": "rectanglelabels", **common, "meta": meta,
                       "value": {"x": _pct(x0, w), "y": _pct(y0, h), "width": _pct(x1 - x0, w), "height": _pct(y1 - y0, h),
                                 "rotation": 0, "rectanglelabels": ["face"]}})
        for i, (x, y) in enumerate(np.asarray(face["points"], np.float64).reshape(N_POINTS, 2)):
            result.append({"id": f"{rid}-{POINT_LABELS[i]}", "from_name": "kp", "type": "keypointlabels", **common, "parentID": rid,
                           "value": {"x": _pct(x + 0.5, w), "y": _pct(y + 0.5, h), "width": POINT_SIZE,
                                     "keypointlabels": [POINT_LABELS[i]]}})
        c = json_num(face.get("confidence"))
        worst = max(worst, c or 0.0)
    task = {"data": data}
    if result:
        versions = {f.get("model_version") for f in rec["faces"]} - {None, ""}
        task["predictions"] = [{"model_version": ",".join(sorted(versions)) or "autolabel", "score": round(max(0.0, 1.0 - worst), 6),
                                "result": result}]
    return task


def _pct(v: float, size: float) -> float:
    return round(100.0 * v / size, 7)


def parse(path: Path, skipped: list[str]) -> Iterator[dict]:
    """Records of a Label Studio tasks file or JSON export."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{path}: not a readable Label Studio JSON file ({e})") from None
    if isinstance(data, dict):
        data = [data] if "data" in data else data.get("tasks")
    if not isinstance(data, list):
        raise FormatError(f"{path}: not Label Studio tasks (expected a list of tasks)")
    for n, task in enumerate(data, 1):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            skipped.append(message(path, f"task #{n}", "no 'data' object"))
            continue
        d = task["data"]
        name = d.get("name") or _name_from_url(d.get("image") or next((v for v in d.values() if isinstance(v, str)), ""))
        item = f"task {task.get('id', n)} ({name!r})"
        if not name:
            skipped.append(message(path, item, "no image in 'data'"))
            continue
        result, source, version = _pick(task)
        rec = {"image": name, "item": item, **{k: d.get(k) for k in _DATA_EXTRA}}
        size = next(((r.get("original_width"), r.get("original_height")) for r in result if r.get("original_width")), None)
        rec["width"] = rec["width"] or (size[0] if size else None)
        rec["height"] = rec["height"] or (size[1] if size else None)
        rec["faces"] = _faces(result, rec["width"], rec["height"], source, version)
        yield rec


def _name_from_url(url: str) -> str:
    if url.startswith(LOCAL_FILES):
        return unquote(url[len(LOCAL_FILES):])
    m = re.match(r"^/data/upload/\d+/(?:[0-9a-f]{8}-)?(.+)$", url)  # uploads get an 8-hex-digit prefix
    if m:
        return unquote(m.group(1))
    return unquote(url.split("?")[0]) if url else ""


def _pick(task: dict) -> tuple[list, str, str]:
    """(result, source, model version): the last annotation not cancelled, else the first prediction."""
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if anns:
        return [r for r in anns[-1].get("result") or [] if isinstance(r, dict)], "label-studio", ""
    preds = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    if preds:
        return [r for r in preds[0].get("result") or [] if isinstance(r, dict)], "", str(preds[0].get("model_version") or "")
    return [], "", ""


def _faces(result: list[dict], w, h, source: str, version: str) -> list[dict]:
    rects = {r.get("id"): r for r in result if r.get("type") == "rectanglelabels"}
    kps = [r for r in result if r.get("type") == "keypointlabels"]
    groups: dict = {rid: [] for rid in rects}
    orphans = []
    for k in kps:
        (groups[k["parentID"]] if k.get("parentID") in groups else orphans).append(k)
    if orphans and len(rects) <= 1:
        groups.setdefault(next(iter(rects), None), []).extend(orphans)
        orphans = []
    for k in orphans[:]:  # several faces: the one whose box holds the point
        v = k.get("value") or {}
        holders = [rid for rid, r in rects.items() if _inside(v, r.get("value") or {})]
        if len(holders) == 1:
            groups[holders[0]].append(k)
            orphans.remove(k)
    faces = [_face(rid, rects.get(rid), pts, w, h, source, version) for rid, pts in groups.items()]
    if orphans:
        faces.append({"item": f"{len(orphans)} keypoints", "problem": "not inside exactly one face region and without a parentID"})
    return faces


def _inside(p: dict, r: dict) -> bool:
    try:
        return r["x"] <= p["x"] <= r["x"] + r["width"] and r["y"] <= p["y"] <= r["y"] + r["height"]
    except (KeyError, TypeError):
        return False


def _face(rid, rect: dict | None, kps: list[dict], w, h, source: str, version: str) -> dict:
    meta = (rect or {}).get("meta") or {}
    predicted = source == ""
    face = {"item": f"face {rid!r}" if rid is not None else "face", "det_score": meta.get("det_score"), "confidence": meta.get("confidence"),
            "source": source or meta.get("source") or "model", "model_version": (meta.get("model_version") or version) if predicted else ""}
    if not (w and h):
        return {**face, "problem": "no image size (original_width / original_height)"}
    w, h = float(w), float(h)
    if rect is not None:
        v = rect.get("value") or {}
        try:
            face["box"] = [v["x"] * w / 100, v["y"] * h / 100, (v["x"] + v["width"]) * w / 100, (v["y"] + v["height"]) * h / 100]
        except (KeyError, TypeError):
            pass
    pts = np.full((N_POINTS, 2), np.nan)
    for k in kps:
        v = k.get("value") or {}
        labels = v.get("keypointlabels") or []
        i = point_index(labels[0]) if labels else None
        if i is None:
            return {**face, "problem": f"keypoint label {labels[:1]} is not a point 00-{N_POINTS - 1}"}
        if not np.isnan(pts[i, 0]):
            return {**face, "problem": f"point {POINT_LABELS[i]} given twice"}
        try:
            pts[i] = float(v["x"]) * w / 100 - 0.5, float(v["y"]) * h / 100 - 0.5
        except (KeyError, TypeError, ValueError):
            return {**face, "problem": f"point {POINT_LABELS[i]} has no x, y"}
    return {**face, "points": pts}


def read(path: Path, root: Path | None = None, check_images: bool = True) -> LabelSet:
    """A Label Studio tasks file or JSON export as a LabelSet (`data.name`, or the image URL's
    path, is found under `root`, at the recorded `abs_path`, or beside the file)."""
    return read_with(parse, "label-studio", path, root, check_images)


class LabelStudioWriter(PartsWriter):
    """Streaming, resumable Label Studio tasks writer (see PartsWriter); `close()` also writes
    the labeling config beside the tasks."""

    format = "label-studio"

    def __init__(self, out: Path, metadata: dict | None = None, overwrite: bool = False, image_prefix: str = LOCAL_FILES):
        super().__init__(out, metadata, overwrite)
        self.image_prefix = image_prefix

    @property
    def config_path(self) -> Path:
        return self.out.with_name(self.out.stem + ".label_config.xml")

    def render(self, f: TextIO, records: Records) -> None:
        tasks = (json.dumps(task_of(rec, self.image_prefix), ensure_ascii=False) for rec in records())
        f.write("[")
        f.writelines(("\n" if n == 0 else ",\n") + t for n, t in enumerate(tasks))
        f.write("\n]\n")

    def close(self) -> None:
        super().close()
        atomic_write_text(self.config_path, label_config())

    parse = staticmethod(parse)

"""COCO keypoints JSON, written and read.

One category "face" with the 68 keypoint names and a 1-based skeleton (as COCO's "person");
one `images` entry per image (faceless and failed ones too: their status is an extra field) and
one annotation per face: `keypoints` 68 x [x, y, v] with v = 2 (labelled and visible) or 1
(labelled but occluded: a reviewer's flag; FiftyOne's importer drops only v = 0 points), `bbox`
[x, y, w, h], area, iscrowd 0, plus autolabel's `face_index`, `det_score`, `confidence`,
`source` and `model_version`.

Pixel convention: keypoints are 0-based pixel indices, as autolabel's own points (COCO keypoints
are integers in [0, W-1]; detectron2 adds 0.5 when it reads them). `bbox` edges are continuous
coordinates: a box over pixels x0 .. x1-1 is [x0, y0, x1-x0, y1-y0] (the whole image is
[0, 0, W, H]). `file_name` is the path relative to the folder labelled; `abs_path` is where the
image was. pycocotools reads the file (`COCO(path).loadAnns(...)`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from autolabel import __version__
from autolabel.formats.labelset import KEYPOINT_NAMES, LabelSet, PartsWriter, Records, json_num, message, read_with
from autolabel.markup import N_POINTS, connections
from autolabel.types import FormatError

CATEGORY_ID = 1
#: COCO skeletons index keypoints from 1.
SKELETON: list[list[int]] = [[i + 1, j + 1] for i, j, _ in connections()]
_IMAGE_EXTRA = ("abs_path", "file_size", "file_mtime_ns", "status", "error", "abs_path_bytes")


def category() -> dict:
    return {"id": CATEGORY_ID, "name": "face", "supercategory": "face", "keypoints": list(KEYPOINT_NAMES), "skeleton": SKELETON}


def _annotation(face: dict, ann_id: int, image_id: int, k: int) -> dict:
    pts = np.asarray(face["points"], np.float64).reshape(N_POINTS, 2)
    occ = face.get("occluded") or [False] * N_POINTS
    kp: list[float] = []
    for (x, y), o in zip(pts, occ):
        kp += [round(float(x), 3), round(float(y), 3), 1 if o else 2]  # COCO: 1 = labelled, not visible
    x0, y0, x1, y1 = (float(v) for v in face["box"])
    return {"id": ann_id, "image_id": image_id, "category_id": CATEGORY_ID, "keypoints": kp, "num_keypoints": N_POINTS,
            "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)], "area": round((x1 - x0) * (y1 - y0), 3),
            "iscrowd": 0, "face_index": k, "det_score": json_num(face.get("det_score")), "confidence": json_num(face.get("confidence")),
            "source": face.get("source") or "", "model_version": face.get("model_version") or ""}


def parse(path: Path, skipped: list[str]) -> Iterator[dict]:
    """Records of a COCO keypoints file; annotations that are not 68-point faces are reported."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{path}: not a readable COCO JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise FormatError(f"{path}: not a COCO file (no 'images' list)")
    cats = {c.get("id"): c for c in data.get("categories") or [] if isinstance(c, dict)}
    by_image: dict = {}
    for n, a in enumerate(data.get("annotations") or []):
        if not isinstance(a, dict):
            skipped.append(message(path, f"annotations[{n}]", "not an object"))
            continue
        by_image.setdefault(a.get("image_id"), []).append(a)
    seen = set()
    for n, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str):
            skipped.append(message(path, f"images[{n}]", "no file_name"))
            continue
        seen.add(im.get("id"))
        anns = by_image.get(im.get("id"), [])
        anns = sorted(anns, key=lambda a: a["face_index"]) if all(isinstance(a.get("face_index"), int) for a in anns) else anns
        rec = {"image": im["file_name"], "width": im.get("width"), "height": im.get("height"),
               "item": f"image {im.get('id')} ({im['file_name']!r})", "faces": [_face(a, cats) for a in anns]}
        rec.update({k: im.get(k) for k in _IMAGE_EXTRA})
        yield rec
    for image_id, anns in by_image.items():
        if image_id not in seen:
            for a in anns:
                skipped.append(message(path, f"annotation {a.get('id')}", f"image_id {image_id!r} is not in 'images'"))


def _face(a: dict, cats: dict) -> dict:
    face = {"item": f"annotation {a.get('id')}", "det_score": a.get("det_score", a.get("score")), "confidence": a.get("confidence"),
            "source": a.get("source") or "coco", "model_version": a.get("model_version") or ""}
    cat = cats.get(a.get("category_id"))
    names = cat.get("keypoints") if isinstance(cat, dict) else None
    kp = a.get("keypoints")
    if isinstance(names, list) and len(names) != N_POINTS:
        return {**face, "problem": f"category {cat.get('name')!r} has {len(names)} keypoints, expected {N_POINTS}"}
    if not isinstance(kp, list) or not kp:
        return {**face, "problem": "no keypoints"}
    if len(kp) != 3 * N_POINTS:
        return {**face, "problem": f"{len(kp)} keypoint values, expected {3 * N_POINTS} (68 x [x, y, v])"}
    try:
        arr = np.asarray(kp, np.float64).reshape(N_POINTS, 3)
    except (TypeError, ValueError):
        return {**face, "problem": "keypoints are not numbers"}
    pts = arr[:, :2].copy()
    pts[arr[:, 2] <= 0] = np.nan  # v = 0: not labelled (x = y = 0 by COCO's rule)
    if (arr[:, 2] == 1).any():  # v = 1: labelled but not visible (occluded)
        face["occluded"] = (arr[:, 2] == 1).tolist()
    box = a.get("bbox")
    if isinstance(box, list) and len(box) == 4:
        try:
            x, y, w, h = (float(v) for v in box)
            face["box"] = [x, y, x + w, y + h]
        except (TypeError, ValueError):
            pass
    return {**face, "points": pts}


def read(path: Path, root: Path | None = None, check_images: bool = True) -> LabelSet:
    """A COCO keypoints file as a LabelSet; `file_name`s are found under `root`, at the recorded
    `abs_path`, or beside the file."""
    return read_with(parse, "coco", path, root, check_images)


class CocoWriter(PartsWriter):
    """Streaming, resumable COCO keypoints writer (see PartsWriter)."""

    format = "coco"

    def render(self, f: TextIO, records: Records) -> None:
        info = {"description": "68-point facial landmarks (iBUG 300-W markup) by autolabel", "version": __version__,
                "date_created": time.strftime("%Y-%m-%dT%H:%M:%S"), "autolabel": self.metadata,
                "keypoint_convention": "0-based pixel indices; bbox continuous [x, y, w, h]"}
        f.write(f'{{"info": {json.dumps(info)},\n"licenses": [],\n"categories": [{json.dumps(category())}],\n"images": [')
        for n, rec in enumerate(records(), 1):
            im = {"id": n, "file_name": rec["image"], "width": int(rec.get("width") or 0), "height": int(rec.get("height") or 0)}
            im.update({k: rec[k] for k in _IMAGE_EXTRA if rec.get(k) is not None})
            f.write(("\n" if n == 1 else ",\n") + json.dumps(im, ensure_ascii=False))
        f.write('],\n"annotations": [')
        ann_id = 0
        for n, rec in enumerate(records(), 1):
            for k, face in enumerate(rec.get("faces", ())):
                ann_id += 1
                f.write(("\n" if ann_id == 1 else ",\n") + json.dumps(_annotation(face, ann_id, n, k), ensure_ascii=False))
        f.write("]}\n")

    parse = staticmethod(parse)

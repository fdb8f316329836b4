"""What the review UI's buttons and keys do, as plain Python (tested without a browser).

Every method takes and returns JSON-friendly values; the Gradio app only forwards them.
"""

from __future__ import annotations

import base64
import io
import mimetypes
from pathlib import Path

import numpy as np
from PIL import Image

from autolabel.formats.corrections import STATUSES, ConflictError, CorrectionStore, face_key
from autolabel.images import load_image
from autolabel.review.queue import Queue
from autolabel.types import AutolabelError, Box

BROWSER_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif"}


def image_data_url(path: Path) -> tuple[str, int, int]:
    """The image as a data: URL the browser shows upright, and its upright size.

    Files the browser can show as they are (JPEG/PNG/WebP without EXIF rotation) are sent
    byte for byte; others (TIFF, BMP, 16-bit, EXIF-rotated) are re-encoded upright. No file path
    ever reaches the browser, so nothing but labelled images can be read through the UI.
    """
    mime = mimetypes.guess_type(path.name)[0] or ""
    with Image.open(path) as im:
        w, h = im.size
        rotated = im.getexif().get(0x0112, 1) != 1
        plain = mime in BROWSER_TYPES and not rotated and im.mode in ("L", "RGB", "RGBA", "P", "LA")
    if plain:
        data = path.read_bytes()
    else:
        img = load_image(path)
        w, h = img.size
        buf = io.BytesIO()
        img.save(buf, "PNG" if img.mode == "L" else "JPEG", quality=92)
        data, mime = buf.getvalue(), "image/png" if img.mode == "L" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}", w, h


class ReviewSession:
    def __init__(self, queue: Queue, store: CorrectionStore, labeler_factory=None):
        self.q = queue
        self.store = store
        self.labeler_factory = labeler_factory
        self._labeler = None
        self.row_of = {queue.key(i): i for i in range(len(queue))}
        self.row_status = np.array(["todo"] * len(queue), dtype=object)
        for k, st in store.statuses().items():
            if k in self.row_of:
                self.row_status[self.row_of[k]] = st
        self._folder_cache: dict[str, np.ndarray] = {}
        self._pending_box: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ queue navigation
    def _mask(self, status: str, folder: str) -> np.ndarray:
        m = np.ones(len(self.q), bool)
        if folder:
            if folder not in self._folder_cache:
                pre = folder.rstrip("/") + "/"
                self._folder_cache[folder] = np.fromiter((p.startswith(pre) for p in self.q.image), bool, len(self.q))
            m &= self._folder_cache[folder]
        if status == "todo":
            m &= self.row_status == "todo"
        elif status == "reviewed":
            m &= self.row_status != "todo"
        elif status in STATUSES:
            m &= self.row_status == status
        elif status != "all":
            raise AutolabelError(f"unknown filter {status!r}")
        return m

    def counts(self) -> dict:
        st, n = np.unique(self.row_status, return_counts=True) if len(self.q) else ([], [])
        c = {str(s): int(k) for s, k in zip(st, n)}
        return {"total": len(self.q), "reviewed": len(self.q) - c.get("todo", 0), **{s: c.get(s, 0) for s in ("todo",) + STATUSES}}

    def info(self) -> dict:
        return {"counts": self.counts(), "folders": self.q.folders(), "statuses": ["todo", "all", "reviewed", *STATUSES]}

    def first(self, status: str = "todo", folder: str = "") -> dict:
        idx = np.flatnonzero(self._mask(status, folder))
        return self.face(int(idx[0]), status, folder) if len(idx) else self._empty(status, folder)

    def step(self, row: int, direction: int, status: str = "todo", folder: str = "") -> dict:
        """The next (direction=1) or previous (-1) face after queue row `row` within the filter."""
        idx = np.flatnonzero(self._mask(status, folder))
        if not len(idx):
            return self._empty(status, folder)
        if direction > 0:
            j = np.searchsorted(idx, row, side="right")
            return self.face(int(idx[j]), status, folder) if j < len(idx) else {**self.face(int(idx[-1]), status, folder), "end": True}
        j = np.searchsorted(idx, row, side="left") - 1
        return self.face(int(idx[j]), status, folder) if j >= 0 else {**self.face(int(idx[0]), status, folder), "end": True}

    def jump(self, text: str, status: str = "all", folder: str = "") -> dict:
        """The first face whose image path contains `text` (case-insensitive), or a queue position (#N)."""
        text = text.strip()
        m = self._mask(status, folder)
        if text.startswith("#") and text[1:].isdigit():
            idx = np.flatnonzero(m)
            k = int(text[1:]) - 1
            if 0 <= k < len(idx):
                return self.face(int(idx[k]), status, folder)
            return {"error": f"position {text} is outside 1..{len(idx)}"}
        low = text.lower()
        for i in np.flatnonzero(m):
            if low in self.q.image[i].lower():
                return self.face(int(i), status, folder)
        return {"error": f"no image matching {text!r} in this view"}

    def _empty(self, status: str, folder: str) -> dict:
        return {"empty": True, "counts": self.counts(), "message": f"no faces in view '{status}'" + (f" under {folder}" if folder else "")}

    # ------------------------------------------------------------------ one face
    def face(self, row: int, status: str = "all", folder: str = "") -> dict:
        q = self.q
        row = int(row)
        if not 0 <= row < len(q):
            raise AutolabelError(f"no face at queue row {row}")
        key = q.key(row)
        rec = self.store.state.get(key)
        pts = np.asarray(rec["points"]) if rec else q.points[row]
        url, w, h = image_data_url(q.image_path(row))
        mask = self._mask(status, folder)
        return {
            "row": row, "key": key, "image_name": q.image[row], "image": url, "width": w, "height": h,
            "face_index": int(q.face_index[row]), "has_face": bool(q.face_index[row] >= 0),
            "points": None if np.isnan(pts).any() else np.round(pts, 2).tolist(),
            "model_points": None if np.isnan(q.points[row]).any() else np.round(q.points[row], 2).tolist(),
            "box": None if np.isnan(q.boxes[row]).any() else q.boxes[row].tolist(),
            "confidence": None if np.isnan(q.confidence[row]) else float(q.confidence[row]),
            "status": rec["status"] if rec else "todo", "rev": self.store.rev(key),
            "model_version": str(q.model_version[row] or ""),
            "position": int(mask[:row].sum()) + 1 if mask[row] else None, "in_view": int(mask.sum()),
            "counts": self.counts(), "extra_faces": self._extra_faces(q.image[row]),
        }

    def _extra_faces(self, image: str) -> list[dict]:
        """Faces a person added to this image (missed by the detector)."""
        pre = image + "#+"
        return [{"key": k, "points": r["points"], "box": r["box"], "status": r["status"], "rev": r["rev"]}
                for k, r in self.store.state.items() if k.startswith(pre)]

    def act(self, key: str, status: str, points, base_rev: int) -> dict:
        """Record accept / correct / reject / skip for a face. Conflicts come back as a message."""
        q = self.q
        if key in self.row_of:
            row = self.row_of[key]
            box, source = q.boxes[row].tolist(), "detector"
        else:  # a face added by drawing a box: key "<image>#+<n>"
            image = key.rsplit("#+", 1)[0]
            if "#+" not in key or image not in set(q.image[self.rows_of_image(image)]):
                return {"ok": False, "message": f"unknown face {key}"}
            row = self.rows_of_image(image)[0]
            rec = self.store.state.get(key)
            box, source = (rec["box"] if rec else self._pending_box.get(key, [0, 0, 0, 0])), "added"
        try:
            rec = self.store.record(key, status, points, base_rev, image=q.image[row], abs_path=str(q.image_path(row)), box=box,
                                    model_version=str(q.model_version[row] or ""), width=int(q.width[row]), height=int(q.height[row]), source=source)
        except ConflictError as e:
            return {"ok": False, "conflict": True, "message": str(e), "rev": self.store.rev(key)}
        except ValueError as e:
            return {"ok": False, "message": str(e)}
        if key in self.row_of:
            self.row_status[self.row_of[key]] = status
        return {"ok": True, "rev": rec["rev"], "status": status, "counts": self.counts(), "message": f"{status}: {key}"}

    def rows_of_image(self, image: str) -> np.ndarray:
        return np.flatnonzero(self.q.image == image)

    def add_face(self, row: int, box: list[float]) -> dict:
        """Predict points for a box the person drew on queue row `row`'s image."""
        x0, y0, x1, y1 = map(float, box)
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        if min(x1 - x0, y1 - y0) < 8:
            return {"ok": False, "message": "draw a larger box (at least 8 x 8 pixels)"}
        if self._labeler is None:
            if self.labeler_factory is None:
                return {"ok": False, "message": "no model loaded: cannot predict points for a new face"}
            self._labeler = self.labeler_factory()
        image = self.q.image[row]
        img = load_image(self.q.image_path(row))
        faces = self._labeler.label(img, boxes=[Box(x0, y0, x1, y1, 0.0)])
        n = 1 + sum(1 for k in self.store.state if k.startswith(image + "#+")) + sum(1 for k in self._pending_box if k.startswith(image + "#+"))
        key = face_key(image, f"+{n}")
        self._pending_box = {**self._pending_box, key: [x0, y0, x1, y1]}
        return {"ok": True, "key": key, "points": np.round(faces[0].points, 2).tolist(), "box": [x0, y0, x1, y1], "rev": 0,
                "status": "todo", "message": "new face: correct its points, then save (S) or accept (A)"}

"""What the review UI's buttons and keys do, as plain Python (tested without a browser).

Every method takes and returns JSON-friendly values; the Gradio app only forwards them. What
comes from the browser is checked here (known face keys, rows in range, finite points near the
image, 68 flags, a sane box) and refused with a message, never taken on trust.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import math
import mimetypes
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from autolabel.formats.corrections import STATUSES, ConflictError, CorrectionStore, face_key
from autolabel.images import load_gray, load_image
from autolabel.markup import N_POINTS
from autolabel.review.drafts import DraftStore
from autolabel.review.queue import Queue, uncertain_points, usable_uncertainty
from autolabel.types import AutolabelError, Box

log = logging.getLogger("autolabel.review")

BROWSER_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif"}
# Points may lie outside the image (a face cut by the frame), by up to this fraction of its longer side.
MARGIN = 0.5
MIN_BOX = 8  # pixels: the smallest face box one can draw
STRIP = 9  # faces in the thumbnail strip
THUMB = 64  # thumbnail side, pixels
ROW_STATUSES = ("todo", *STATUSES)
CODES = {s: i for i, s in enumerate(ROW_STATUSES)}


class InputError(AutolabelError):
    """A request from the browser that cannot be right (unknown face, points far off the image)."""


# ------------------------------------------------------------------ checking browser input
def _shape(points: np.ndarray) -> list | None:
    return None if np.isnan(points).any() else np.round(points, 2).tolist()


def _scales(points: np.ndarray, uncertainty: np.ndarray | None) -> list | None:
    u = usable_uncertainty(points, uncertainty)
    return None if u is None else np.round(u, 2).tolist()


def check_points(points, width: int, height: int) -> np.ndarray:
    """68 finite (x, y) pairs within MARGIN of a width x height image, as float64 (68, 2)."""
    try:
        pts = np.asarray(points, np.float64)
    except (TypeError, ValueError):
        raise InputError("points must be 68 [x, y] pairs of numbers") from None
    if pts.shape != (N_POINTS, 2):
        raise InputError(f"points must be 68 [x, y] pairs, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputError("points must be finite numbers")
    m = MARGIN * max(width, height)
    if (pts[:, 0] < -m).any() or (pts[:, 0] > width + m).any() or (pts[:, 1] < -m).any() or (pts[:, 1] > height + m).any():
        raise InputError(f"points lie far outside the {width} x {height} image")
    return pts


def check_box(box, width: int, height: int) -> list[float]:
    """A face box [x0, y0, x1, y1] (corners in any order), within MARGIN of the image, at least MIN_BOX wide."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError("a box is four numbers [x0, y0, x1, y1]") from None
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    m = MARGIN * max(width, height)
    if not all(map(math.isfinite, (x0, y0, x1, y1))) or x0 < -m or y0 < -m or x1 > width + m or y1 > height + m:
        raise InputError(f"the box lies outside the {width} x {height} image")
    if min(x1 - x0, y1 - y0) < MIN_BOX:
        raise InputError(f"draw a larger box (at least {MIN_BOX} x {MIN_BOX} pixels)")
    return [x0, y0, x1, y1]


def check_flags(flags) -> list[bool] | None:
    """None, or 68 occluded flags (true/false or 1/0)."""
    if flags is None:
        return None
    if not isinstance(flags, list | tuple) or len(flags) != N_POINTS or not all(isinstance(v, bool | int) for v in flags):
        raise InputError(f"occluded must be {N_POINTS} true/false flags")
    return [bool(v) for v in flags]


def check_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{what} must be a whole number")
    try:
        v = float(value)
    except ValueError:
        raise InputError(f"{what} must be a whole number") from None
    if not v.is_integer():
        raise InputError(f"{what} must be a whole number")
    return int(v)


def check_text(value, what: str, limit: int = 1000) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise InputError(f"{what} must be text (at most {limit} characters)")
    return value


# ------------------------------------------------------------------ images for the browser
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


@functools.lru_cache(maxsize=1024)
def thumbnail(path: str, box: tuple[float, float, float, float] | None, width: int, size: int = THUMB) -> str | None:
    """A small square JPEG (data: URL) around a face box (upright pixels), or of the whole image.

    JPEGs are decoded at a reduced scale (draft mode), so a strip of thumbnails costs a few
    milliseconds per face; None if the image cannot be read."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max(size, im.width // 8), max(size, im.height // 8)))
            im = ImageOps.exif_transpose(im).convert("RGB")
    except OSError:
        return None
    k = im.width / max(width, 1)  # upright pixels -> decoded pixels
    if box is not None:
        x0, y0, x1, y1 = box
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.65 * max(x1 - x0, y1 - y0)
        im = im.crop((int(k * (cx - half)), int(k * (cy - half)), int(k * (cx + half)), int(k * (cy + half))))
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------ corrections.parquet kept current
class StateWriter:
    """Rewrites corrections.parquet in a background thread shortly after each action, so the
    file is current while the server runs and no action waits for it. The journal stays the
    source of truth: a kill between an action and the rewrite leaves the file one action behind,
    and the next open rebuilds it from the journal."""

    def __init__(self, store: CorrectionStore, delay: float = 0.05):
        self.store, self.delay = store, delay
        self.asked = self.done = 0
        self.cond = threading.Condition()
        threading.Thread(target=self._run, name="corrections-state", daemon=True).start()

    def touch(self) -> None:
        with self.cond:
            self.asked += 1
            self.cond.notify_all()

    def wait(self, timeout: float = 10.0) -> bool:
        """Until the file reflects every action so far (for tests and shutdown)."""
        with self.cond:
            target = self.asked
            return self.cond.wait_for(lambda: self.done >= target, timeout)

    def _run(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.asked > self.done)
            time.sleep(self.delay)  # let a burst of actions coalesce into one write
            with self.cond:
                target = self.asked
            try:
                self.store.materialize()
            except Exception:  # a full disk must not stop the review; the journal has it all
                log.exception("could not rewrite %s", self.store.folder / "corrections.parquet")
            with self.cond:
                self.done = target
                self.cond.notify_all()


class ReviewSession:
    def __init__(self, queue: Queue, store: CorrectionStore, labeler_factory=None, user: str = "",
                 drafts: DraftStore | None = None, state_writer: StateWriter | None = None):
        self.q = queue
        self.store = store
        self.labeler_factory = labeler_factory
        self.user = user
        self.drafts = drafts if drafts is not None else DraftStore(store.folder)
        self.state_writer = state_writer
        self._labeler = None
        self.row_of = {queue.key(i): i for i in range(len(queue))}
        self.first_row_of_image: dict[str, int] = {}
        for i, im in enumerate(queue.image):
            self.first_row_of_image.setdefault(im, i)
        # status per queue row as a small integer (0 = todo, then STATUSES): filters and counts
        # over 100,000 rows take well under a millisecond
        self.row_code = np.zeros(len(queue), np.int8)
        for k, st in store.statuses().items():
            if k in self.row_of:
                self.row_code[self.row_of[k]] = CODES[st]
        self._folder_cache: dict[str, np.ndarray] = {}
        self._pending_box: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ queue navigation
    def _mask(self, status: str, folder: str) -> np.ndarray:
        status, folder = check_text(status, "the view"), check_text(folder, "the folder")
        m = np.ones(len(self.q), bool)
        if folder:
            if folder not in self._folder_cache:
                pre = folder.rstrip("/") + "/"
                self._folder_cache[folder] = np.fromiter((p.startswith(pre) for p in self.q.image), bool, len(self.q))
            m &= self._folder_cache[folder]
        if status == "todo":
            m &= self.row_code == 0
        elif status == "reviewed":
            m &= self.row_code != 0
        elif status in STATUSES:
            m &= self.row_code == CODES[status]
        elif status != "all":
            raise InputError(f"unknown view {status!r}; one of todo, all, reviewed, {', '.join(STATUSES)}")
        return m

    def _row(self, row) -> int:
        row = check_int(row, "row")
        if not 0 <= row < len(self.q):
            raise InputError(f"no face at queue row {row} (the queue has {len(self.q)})")
        return row

    def counts(self) -> dict:
        n = np.bincount(self.row_code, minlength=len(ROW_STATUSES))
        return {"total": len(self.q), "reviewed": len(self.q) - int(n[0]), **{s: int(k) for s, k in zip(ROW_STATUSES, n)}}

    def info(self) -> dict:
        return {"counts": self.counts(), "folders": self.q.folders(), "statuses": ["todo", "all", "reviewed", *STATUSES], "user": self.user}

    def first(self, status: str = "todo", folder: str = "") -> dict:
        idx = np.flatnonzero(self._mask(status, folder))
        return self.face(int(idx[0]), status, folder) if len(idx) else self._empty(status, folder)

    def step(self, row: int, direction: int, status: str = "todo", folder: str = "") -> dict:
        """The next (direction=1) or previous (-1) face after queue row `row` within the filter."""
        row, direction = self._row(row), check_int(direction, "direction")
        if direction not in (-1, 1):
            raise InputError("direction must be 1 (next) or -1 (previous)")
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
        text = check_text(text, "the search").strip()
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

    def strip(self, row: int, status: str = "todo", folder: str = "", n: int = STRIP) -> dict:
        """Thumbnails of the faces around queue row `row` in the view (the queue strip)."""
        row = self._row(row)
        idx = np.flatnonzero(self._mask(status, folder))
        j = int(np.searchsorted(idx, row))
        start = max(0, min(j - n // 2, len(idx) - n))
        items = []
        for k, r in enumerate(idx[start:start + n], start + 1):
            r = int(r)
            box = self._box(r)
            try:
                thumb = thumbnail(str(self.q.image_path(r)), tuple(box) if box else None, int(self.q.width[r]))
            except AutolabelError:
                thumb = None
            items.append({"row": r, "key": self.q.key(r), "position": k, "status": ROW_STATUSES[self.row_code[r]], "thumb": thumb})
        return {"items": items}

    # ------------------------------------------------------------------ one face
    def _box(self, row: int) -> list[float] | None:
        rec = self.store.state.get(self.q.key(row))
        box = rec["box"] if rec else self.q.boxes[row].tolist()
        return None if not np.isfinite(box).all() else [float(v) for v in box]

    def face(self, row: int, status: str = "all", folder: str = "") -> dict:
        q = self.q
        row = self._row(row)
        key = q.key(row)
        rec = self.store.state.get(key)
        pts = np.asarray(rec["points"]) if rec else q.points[row]
        url, w, h = image_data_url(q.image_path(row))
        mask = self._mask(status, folder)
        return {
            "row": row, "key": key, "image_name": q.image[row], "image": url, "width": w, "height": h,
            "face_index": int(q.face_index[row]), "has_face": bool(q.face_index[row] >= 0),
            "points": None if np.isnan(pts).any() else np.round(pts, 2).tolist(),
            # the model's shape: an audit's `model_points` (the labels under audit are `points`), else the labels' own
            "model_points": _shape(q.reference[row] if q.reference is not None else q.points[row]),
            "audit": q.reference is not None,
            "point_uncertainty": _scales(pts, None if q.uncertainty is None else q.uncertainty[row]),
            "uncertain_points": q.uncertain_points(row),
            "box": self._box(row), "occluded": rec.get("occluded") if rec else None,
            "confidence": None if np.isnan(q.confidence[row]) else float(q.confidence[row]),
            "status": rec["status"] if rec else "todo", "rev": self.store.rev(key), "user": rec.get("user", "") if rec else "",
            "model_version": str(q.model_version[row] or ""), "draft": self.drafts.get(key),
            "position": int(mask[:row].sum()) + 1 if mask[row] else None, "in_view": int(mask.sum()),
            "counts": self.counts(), "extra_faces": self._extra_faces(q.image[row]),
        }

    def _extra_faces(self, image: str) -> list[dict]:
        """Faces a person added to this image (missed by the detector)."""
        pre = image + "#+"
        return [{"key": k, "points": r["points"], "box": r["box"], "status": r["status"], "rev": r["rev"]}
                for k, r in self.store.state.items() if k.startswith(pre)]

    def _face_of(self, key) -> tuple[int, str, list[float]]:
        """Queue row, source and box of a face the browser names; refuses keys it cannot have seen."""
        key = check_text(key, "the face key")
        if key in self.row_of:
            row = self.row_of[key]
            box = self.q.boxes[row]
            if self.q.face_index[row] < 0 or not np.isfinite(box).all():
                raise InputError(f"{key}: no face was detected on this image; draw a box around it (B) to add one")
            return row, "detector", box.tolist()
        image, sep, n = key.rpartition("#+")  # a face added by drawing a box: "<image>#+<n>"
        rec = self.store.state.get(key)
        box = rec["box"] if rec else self._pending_box.get(key)
        if not sep or not n.isdigit() or image not in self.first_row_of_image or box is None:
            raise InputError(f"unknown face {key!r}")
        return self.first_row_of_image[image], "added", box

    def act(self, key: str, status: str, points, base_rev: int, occluded=None, box=None, user: str | None = None) -> dict:
        """Record accept / correct / reject / skip for a face. A conflict comes back with the
        version saved elsewhere ("theirs"), so the person can keep theirs or their own."""
        row, source, old_box = self._face_of(key)
        if status not in STATUSES:
            raise InputError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        w, h = int(self.q.width[row]), int(self.q.height[row])
        pts = check_points(points, w, h)
        flags = check_flags(occluded)
        box = check_box(box, w, h) if box is not None else self.store.state.get(key, {}).get("box", old_box)
        base_rev = check_int(base_rev, "the revision")
        try:
            rec = self.store.record(key, status, pts, base_rev, image=self.q.image[row], abs_path=str(self.q.image_path(row)), box=box,
                                    model_version=str(self.q.model_version[row] or ""), width=w, height=h, source=source,
                                    occluded=flags, user=self.user if user is None else user)
        except ConflictError as e:
            t = self.store.state[key]
            theirs = {k: t.get(k) for k in ("points", "occluded", "box", "status", "rev", "user", "ts")}
            return {"ok": False, "conflict": True, "message": str(e), "rev": t["rev"], "theirs": theirs}
        self.drafts.put(key, rec["rev"], None)
        if key in self.row_of:
            self.row_code[self.row_of[key]] = CODES[status]
        if self.state_writer is not None:
            self.state_writer.touch()
        return {"ok": True, "rev": rec["rev"], "status": status, "counts": self.counts(), "message": f"{status}: {key}"}

    def draft(self, key: str, base_rev: int, points, extra: dict | None = None, user: str | None = None) -> dict:
        """Keep the person's unsaved edit of a face (points None: drop it)."""
        row, _, _ = self._face_of(key)
        base_rev = check_int(base_rev, "the revision")
        extra = extra or {}
        if not isinstance(extra, dict):
            raise InputError("the draft's extras must be an object")
        if points is None:
            self.drafts.put(key, base_rev, None)
            return {"ok": True}
        w, h = int(self.q.width[row]), int(self.q.height[row])
        pts = check_points(points, w, h)
        box = extra.get("box")
        self.drafts.put(key, base_rev, np.round(pts, 3).tolist(), check_flags(extra.get("occluded")),
                        check_box(box, w, h) if box is not None else None, self.user if user is None else user)
        return {"ok": True}

    def add_face(self, row: int, box: list[float]) -> dict:
        """Predict points for a box the person drew on queue row `row`'s image."""
        row = self._row(row)
        w, h = int(self.q.width[row]), int(self.q.height[row])
        x0, y0, x1, y1 = check_box(box, w, h)
        if self._labeler is None:
            if self.labeler_factory is None:
                return {"ok": False, "message": "no model loaded: cannot predict points for a new face"}
            self._labeler = self.labeler_factory()
        image = self.q.image[row]
        img = load_gray(self.q.image_path(row))  # decoded as `run` decodes it, so the points are run's
        faces = self._labeler.label(img, boxes=[Box(x0, y0, x1, y1, 0.0)])
        n = 1 + sum(1 for k in self.store.state if k.startswith(image + "#+")) + sum(1 for k in self._pending_box if k.startswith(image + "#+"))
        key = face_key(image, f"+{n}")
        self._pending_box = {**self._pending_box, key: [x0, y0, x1, y1]}
        unc = faces[0].point_uncertainty
        return {"ok": True, "key": key, "points": np.round(faces[0].points, 2).tolist(), "box": [x0, y0, x1, y1], "rev": 0,
                "uncertain_points": uncertain_points(faces[0].points, unc),
                "point_uncertainty": _scales(faces[0].points, unc),
                "status": "todo", "message": "new face: correct its points, then save (S) or accept (A)"}

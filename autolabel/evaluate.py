"""`autolabel eval`: accuracy of a model (and of dlib's own 68-point predictor, on the same
faces and boxes) on a 300-W style folder, under two box protocols:

- `det`: the dlib HOG box that best matches each annotated face (IoU >= 0.3); faces the
  detector misses are counted separately and left out of the error figures.
- `gt`: a detector-like box made from the ground-truth points (`geometry.box_from_points`).

Figures: inter-ocular NME (outer eye corners 36/45) and inter-pupil NME, FR@0.08, AUC@0.08,
CED curve, normalised MSE (squared error of points in the model's normalised crop
coordinates, crop side = 1) and the share of points within 3 px / 5 px at the model's input
resolution (the crop of the face's box resized to input_size x input_size).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autolabel.data import Sample, detect_boxes, find_samples, sample_box
from autolabel.geometry import crop_face, crop_window
from autolabel.images import load_image
from autolabel.scheme import auc, failure_rate, nme, point_errors


def metrics(pred: np.ndarray, gt: np.ndarray, boxes, size: int) -> dict:
    """Figures for (N, 68, 2) image-pixel predictions against ground truth."""
    if len(pred) == 0:
        return {"faces": 0}
    io, ip = nme(pred, gt, "interocular"), nme(pred, gt, "interpupil")
    ts = [crop_window(b, size) for b in boxes]
    pc = np.stack([t.to_crop(p) for t, p in zip(ts, pred)])
    gc = np.stack([t.to_crop(g) for t, g in zip(ts, gt)])
    e = point_errors(pc, gc)
    return {
        "faces": int(len(pred)),
        "nme_io": float(io.mean()),
        "nme_ip": float(ip.mean()),
        "fr_008": failure_rate(io, 0.08),
        "auc_008": auc(io, 0.08),
        "nmse": float((((pc - gc) / size) ** 2).mean()),
        "within_3px": float((e <= 3).mean()),
        "within_5px": float((e <= 5).mean()),
        "per_face_nme_io": io.tolist(),
    }


def dlib_predict(samples: list[Sample], boxes) -> np.ndarray:
    """dlib's own 68-point shape predictor (face-recognition-models) on the given boxes."""
    import dlib

    from autolabel.detectors.dlib_detectors import model_file

    sp = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
    out = []
    for s, b in zip(samples, boxes):
        img = np.asarray(load_image(s.image).convert("L"))
        r = dlib.rectangle(int(round(b.x0)), int(round(b.y0)), int(round(b.x1)) - 1, int(round(b.y1)) - 1)
        sh = sp(img, r)
        out.append([[sh.part(i).x, sh.part(i).y] for i in range(68)])
    return np.asarray(out, np.float32)


def model_predict(predictor, samples: list[Sample], boxes, batch: int = 32) -> np.ndarray:
    out = []
    for i in range(0, len(samples), batch):
        cuts = [crop_face(load_image(s.image).convert("L"), b, predictor.size) for s, b in zip(samples[i : i + batch], boxes[i : i + batch])]
        pts, _ = predictor.predict(np.stack([c for c, _ in cuts]), [t for _, t in cuts])
        out.append(pts)
    return np.concatenate(out) if out else np.zeros((0, 68, 2), np.float32)


def evaluate(data: list[Path], predictor, protocols=("det", "gt"), with_dlib: bool = True, cache: Path | None = None, progress: bool = True) -> dict:
    from autolabel.detectors import DEFAULT_SETTINGS, make_detector

    samples = find_samples(*data)
    det = make_detector("hog", **DEFAULT_SETTINGS)
    samples = detect_boxes(samples, det, cache, progress)
    report: dict = {"data": [str(d) for d in data], "faces": len(samples), "input_size": predictor.size,
                    "model_version": predictor.model.model_id, "detector": det.settings(), "protocols": {}}
    for proto in protocols:
        keep = [s for s in samples if sample_box(s, proto) is not None]
        boxes = [sample_box(s, proto) for s in keep]
        gt = np.stack([s.points for s in keep]) if keep else np.zeros((0, 68, 2), np.float32)
        entry = {"faces": len(keep), "missed_by_detector": len(samples) - len(keep)}
        entry["autolabel"] = metrics(model_predict(predictor, keep, boxes), gt, boxes, predictor.size)
        if with_dlib:
            entry["dlib"] = metrics(dlib_predict(keep, boxes), gt, boxes, predictor.size)
        report["protocols"][proto] = entry
    return report


def table(report: dict) -> str:
    """A plain-text table of the figures (percentages)."""
    head = f"{'protocol':8} {'method':10} {'faces':>5} {'missed':>6} {'NME io%':>8} {'NME ip%':>8} {'FR@.08%':>8} {'AUC@.08':>8} {'NMSE':>9} {'<=3px%':>7} {'<=5px%':>7}"
    lines = [head, "-" * len(head)]
    for proto, e in report["protocols"].items():
        for method in ("autolabel", "dlib"):
            m = e.get(method)
            if not m or not m.get("faces"):
                continue
            lines.append(f"{proto:8} {method:10} {m['faces']:5d} {e['missed_by_detector']:6d} {100 * m['nme_io']:8.2f} {100 * m['nme_ip']:8.2f} "
                         f"{100 * m['fr_008']:8.2f} {m['auc_008']:8.4f} {m['nmse']:9.2e} {100 * m['within_3px']:7.1f} {100 * m['within_5px']:7.1f}")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    from autolabel.plots import plot_ced

    out.mkdir(parents=True, exist_ok=True)
    slim = json.loads(json.dumps(report))
    curves = {}
    for proto, e in slim["protocols"].items():
        for method in ("autolabel", "dlib"):
            if e.get(method, {}).get("faces"):
                curves[f"{method} ({proto})"] = np.asarray(e[method].pop("per_face_nme_io"))
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    (out / "eval.txt").write_text(table(report) + "\n")
    plot_ced(curves, out / "ced.png")

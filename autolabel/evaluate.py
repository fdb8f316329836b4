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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from autolabel.datasets import Sample, detect_boxes, find_samples, sample_box
from autolabel.detectors import make_detector
from autolabel.detectors.dlib_detectors import model_file
from autolabel.images import load_gray
from autolabel.metrics import confidence_quality, metrics, nme
from autolabel.predictor import Predictor, make_predictor
from autolabel.training.figures import plot_ced
from autolabel.types import Box, UsageError

REPORT = "eval.json"


def dlib_predict(samples: list[Sample], boxes, progress: bool = False, desc: str = "dlib") -> np.ndarray:
    """dlib's own 68-point shape predictor (face-recognition-models) on the given boxes."""
    import dlib

    sp = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
    out = []
    for s, b in tqdm(list(zip(samples, boxes)), desc=desc, unit="face", disable=not progress, dynamic_ncols=True):
        img = np.asarray(load_gray(s.image))
        r = dlib.rectangle(round(b.x0), round(b.y0), round(b.x1) - 1, round(b.y1) - 1)
        sh = sp(img, r)
        out.append([[sh.part(i).x, sh.part(i).y] for i in range(68)])
    return np.asarray(out, np.float32)


def predict_samples(predictor: Predictor, samples: Sequence[Sample], boxes: Sequence[Box], batch: int = 32, progress: bool = False,
                    desc: str = "autolabel") -> np.ndarray:
    """The model's points (N, 68, 2) for each sample's face in `boxes`, through the Predictor."""
    return predict_with_confidence(predictor, samples, boxes, batch, progress, desc)[0]


def predict_with_confidence(predictor: Predictor, samples: Sequence[Sample], boxes: Sequence[Box], batch: int = 32,
                            progress: bool = False, desc: str = "autolabel") -> tuple[np.ndarray, np.ndarray]:
    """`predict_samples`' points (N, 68, 2) and each face's confidence score (N,)."""
    out, conf = [], []
    bar = tqdm(total=len(samples), desc=desc, unit="face", disable=not progress, dynamic_ncols=True)
    for i in range(0, len(samples), batch):
        grays = (load_gray(s.image) for s in samples[i : i + batch])
        if predictor.refine:  # kept for the second pass; otherwise each image goes once cropped
            grays = list(grays)
        cuts = [predictor.crops(g, [b]) for g, b in zip(grays, boxes[i : i + batch])]
        found = predictor.predict(np.concatenate([c for c, _ in cuts]), [t for _, ts in cuts for t in ts])
        pts, c, _ = predictor.second_pass(grays, *found) if predictor.refine else found
        out.append(pts)
        conf.append(c)
        bar.update(len(pts))
    bar.close()
    if not out:
        return np.zeros((0, 68, 2), np.float32), np.zeros((0,), np.float32)
    return np.concatenate(out), np.concatenate(conf)


def evaluate(data: list[Path], predictor: Predictor, protocols=("det", "gt"), with_dlib: bool = True, cache: Path | None = None,
             progress: bool = True) -> dict:
    """Score `predictor` (and dlib's predictor) on the annotated faces under `data`."""
    samples = find_samples(*data)
    if not samples:
        raise UsageError(f"no annotated faces (an image with a 300-W .pts file beside it) in {', '.join(map(str, data))}")
    det = make_detector("hog")
    samples = detect_boxes(samples, det, cache, progress)
    report: dict = {"data": [str(d) for d in data], "faces": len(samples), "input_size": predictor.size,
                    "model_version": predictor.model_id, "detector": det.settings(), "protocols": {}}
    for proto in protocols:
        keep = [s for s in samples if sample_box(s, proto) is not None]
        boxes = [sample_box(s, proto) for s in keep]
        gt = np.stack([s.points for s in keep]) if keep else np.zeros((0, 68, 2), np.float32)
        entry = {"faces": len(keep), "missed_by_detector": len(samples) - len(keep)}
        pts, conf = predict_with_confidence(predictor, keep, boxes, progress=progress, desc=f"{proto}: autolabel")
        entry["autolabel"] = metrics(pts, gt, boxes, predictor.size)
        if len(keep):  # how well the confidence score finds the worst labels (the review queue's order)
            entry["autolabel"]["confidence"] = confidence_quality(conf, nme(pts, gt))
        if with_dlib:
            entry["dlib"] = metrics(dlib_predict(keep, boxes, progress, desc=f"{proto}: dlib"), gt, boxes, predictor.size)
        report["protocols"][proto] = entry
    return report


def eval_model(data: list[Path], out: Path, model: Path | None = None, runtime: str = "auto", protocols=("det", "gt"),
               with_dlib: bool = True, flip: bool = True, refine: bool = True, progress: bool = True) -> dict:
    """`autolabel eval`: score the model file `model` (default: shipped) on `data`, write the
    report into `out` (detections cached in `out/boxes.json`) and return it."""
    missing = [str(d) for d in data if not Path(d).exists()]
    if missing:
        raise UsageError(f"no such folder: {', '.join(missing)}")
    bad = set(protocols) - {"det", "gt"}
    if bad:
        raise UsageError(f"unknown protocol {', '.join(sorted(bad))} (det, gt)")
    predictor = make_predictor(runtime, model, flip=flip, refine=refine)
    report = evaluate(data, predictor, tuple(protocols), with_dlib=with_dlib, cache=out / "boxes.json", progress=progress)
    report["runtime"] = predictor.runtime.name  # int8 ONNX (auto's choice) scores ~0.02 NME points above torch
    report["refine"] = refine
    write_report(report, out)
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
    for proto, e in report["protocols"].items():
        c = e.get("autolabel", {}).get("confidence")
        if c and c["faces"]:
            lines.append(f"{proto}: confidence vs NME: Spearman {c['spearman']:.3f}; the least sure {100 * c['share']:.0f} % of faces "
                         f"hold {100 * c['worst_in_top']:.0f} % of the worst {100 * c['share']:.0f} %")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    """`eval.json` (read back by `read_nme`), `eval.txt` (the table) and `ced.png`."""
    out.mkdir(parents=True, exist_ok=True)
    slim = json.loads(json.dumps(report))
    curves = {}
    for proto, e in slim["protocols"].items():
        for method in ("autolabel", "dlib"):
            if e.get(method, {}).get("faces"):
                curves[f"{method} ({proto})"] = np.asarray(e[method].pop("per_face_nme_io"))
    (out / REPORT).write_text(json.dumps(report, indent=1))
    (out / "eval.txt").write_text(table(report) + "\n")
    plot_ced(curves, out / "ced.png")


def read_nme(path: Path) -> dict[str, float]:
    """The model's inter-ocular NME per box protocol from an `eval.json` report ({} if absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    return {proto: float(e["autolabel"]["nme_io"]) for proto, e in report.get("protocols", {}).items() if e.get("autolabel", {}).get("faces")}

"""Export a model file to ONNX for the torch-free labelling runtime (`--runtime onnx`).

    python -m autolabel.training.export_onnx model/landmarks.pt            # writes model/landmarks.{fp32,int8}.onnx

What is exported is the model's own `InferenceGraph` (normalisation and network), traced from
whatever network the model file builds, so a new architecture exports unchanged. The graph
predicts one crop per input: flip averaging and the learned label offset (recorded in the
file's metadata) are the runtime's (`runtimes.onnx_runtime.flip_average`), so one file serves
`--flip` and `--no-flip`. Calibration and the parity check see the crops and their mirror
images, as a flip-averaging run feeds them.
Run it whenever the weights change: shipping a model (then `benchmarks/make_model_card.py`
records the hashes) and at the end of `finetune`. The runtime refuses an export whose recorded
model version differs from the `.pt` beside it.

The exported network is `deployable(net)`: the same function with the heatmap head's
transposed convolutions written as sub-pixel convolutions (ONNX Runtime has no int8 kernel for
ConvTranspose: in fp32 they took a fifth of the second stage's time).

int8 (onnxruntime static quantization, QDQ, per-channel int8 weights with reduce_range, uint8
activations, MinMax calibrated on training crops): Conv layers, and the ReLUs after them, which
the quantizer folds into the convolution's output range (left out, every such pair cost a
dequantize-quantize round trip of the activation: a sixth of the time). Per-tensor uint8
activations cannot hold a layer whose input is sparse with rare large outliers (in the shipped
ResNet18, the last stage: range ~130 on a few earrings vs a mean of 0.02), so layers are ranked
by quantization step / mean |input| and the worst are kept in fp32, fewest first, until int8
agrees with fp32 on held-out crops (`PARITY_BOUND`), with flip averaging and without. reduce_range (7-bit weights) avoids the
int16 saturation of AVX2's u8*s8 dot product, which moved single points by up to 20 px.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autolabel.datasets import Sample, find_samples
from autolabel.files import atomic_write_bytes
from autolabel.geometry import aligned_transform, box_from_points, cut_aligned
from autolabel.images import load_gray
from autolabel.metrics import interocular
from autolabel.model import HeatmapNet, InferenceGraph, LandmarkModel, load_model
from autolabel.predictor import aligned_scale_of, crop_faces
from autolabel.runtimes.onnx_runtime import RUNTIME_FLIP, chunk_size, session_predict, with_mirrors
from autolabel.types import ModelError

#: int8 must agree with fp32 on held-out crops: mean point distance / inter-ocular distance (an
#: NME between the two runtimes) on average, and on the worst face. The shipped exports measure
#: 0.0015 / 0.0030 with flip averaging and 0.0022 / 0.0043 without (second stage: 0.0018 / 0.0044,
#: 0.0023 / 0.0049); quantizing v1's last stage gave 0.07-0.16 / 0.13-0.33.
PARITY_BOUND = 0.005
PARITY_BOUND_FACE = 0.05
#: exclusion thresholds tried in turn (quantization step / mean |conv input|); inf = none kept in fp32.
THRESHOLDS = (float("inf"), 2.0, 0.8, 0.4, 0.2, 0.0)
OPSET = 17
#: the graph's outputs, in `InferenceGraph`'s order (exports before the error scale have the first two)
OUTPUTS = ("points", "point_disagreement", "point_scale")


@dataclass(frozen=True)
class Export:
    path: Path
    precision: str
    sha256: str
    kept_fp32: tuple[str, ...] = ()
    parity: float = 0.0


def onnx_paths(model_path: Path) -> dict[str, Path]:
    from autolabel.runtimes import exported_path

    return {p: exported_path(model_path, p) for p in ("fp32", "int8")}


def _metadata(model: LandmarkModel, precision: str) -> dict[str, str]:
    offset = getattr(model.net, "label_offset", None)
    return {"format": "autolabel-landmarks-onnx", "model_id": model.model_id, "input_size": str(model.input_size),
            "precision": precision, "flip": RUNTIME_FLIP, "meta": json.dumps(model.meta, default=str),
            "label_offset": json.dumps([0.0, 0.0] if offset is None else [float(v) for v in offset.detach()])}


#: a 4x4, stride-2, padding-1 transposed convolution as a 3x3 convolution to 4 phases x channels
#: + PixelShuffle(2): the transposed conv's kernel index for (output phase, 3x3 tap), None: no tap
SUB_PIXEL_TAPS = ((3, 1, None), (None, 2, 0))


def sub_pixel(ct: nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """`bn(ct(x))` for `ct` = ConvTranspose2d(Cin, Cout, 4, 2, 1) as a 3x3 Conv2d(Cin, 4 Cout)
    whose output, pixel-shuffled by 2, equals it (the batch norm folded in, eval mode)."""
    w = ct.weight.detach()  # (Cin, Cout, 4, 4)
    cin, cout = w.shape[:2]
    k = torch.zeros(cout, 2, 2, cin, 3, 3, dtype=w.dtype)
    for a, rows in enumerate(SUB_PIXEL_TAPS):
        for b, cols in enumerate(SUB_PIXEL_TAPS):
            for m, ki in enumerate(rows):
                for n, kj in enumerate(cols):
                    if ki is not None and kj is not None:
                        k[:, a, b, :, m, n] = w[:, :, ki, kj].T
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    conv = nn.Conv2d(cin, 4 * cout, 3, 1, 1, bias=True)
    conv.weight.data = (k * scale[:, None, None, None, None, None]).reshape(4 * cout, cin, 3, 3)
    conv.bias.data = (bn.bias - bn.running_mean * scale).detach().repeat_interleave(4)
    return conv


def deployable(net: nn.Module) -> nn.Module:
    """What is exported: `net` itself, or for a `HeatmapNet` a copy whose head's (ConvTranspose,
    BatchNorm, ReLU) triples are (sub-pixel Conv, ReLU, PixelShuffle): the same function (ReLU
    commutes with the shuffle), in layers ONNX Runtime runs in int8."""
    if not isinstance(net, HeatmapNet):
        return net
    layers = list(net.up)
    triples = list(zip(layers[::3], layers[1::3], layers[2::3]))
    if len(layers) % 3 or not all(isinstance(ct, nn.ConvTranspose2d) and (ct.kernel_size, ct.stride, ct.padding) == ((4, 4), (2, 2), (1, 1))
                                  and isinstance(bn, nn.BatchNorm2d) and isinstance(r, nn.ReLU) for ct, bn, r in triples):
        return net
    out = copy.deepcopy(net).eval()
    out.up = nn.Sequential(*[m for ct, bn, _ in triples for m in (sub_pixel(ct, bn), nn.ReLU(), nn.PixelShuffle(2))])
    return out


def export_fp32(model: LandmarkModel, path: Path) -> None:
    """The fp32 export: `InferenceGraph` of `deployable(net)` without flip and label offset (module docstring)."""
    import onnx

    graph = InferenceGraph(deployable(model.net), flip=False, offset=False).eval()
    x = torch.zeros((2, model.input_size, model.input_size), dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "m.onnx"
        torch.onnx.export(graph, (x,), str(f), dynamo=False, opset_version=OPSET, input_names=["crops"],
                          output_names=list(OUTPUTS), dynamic_axes={"crops": {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}})
        m = onnx.load(str(f))
    _set_metadata(m, _metadata(model, "fp32"))
    atomic_write_bytes(path, m.SerializeToString())


def _set_metadata(m, props: dict[str, str]) -> None:
    del m.metadata_props[:]
    for k, v in props.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v


def calibration_crops(source: Sequence[Path] | Sequence[Sample], size: int, n: int = 384, seed: int = 0,
                      aligned_scale: float | None = None) -> np.ndarray:
    """Face crops from 300-W style folders (or annotated samples, e.g. a finetune's training
    faces), cut like `autolabel run` cuts them (box from points); `aligned_scale`: as a second
    stage sees them (`geometry.aligned_transform` at that crop scale)."""
    samples = list(source) if source and isinstance(source[0], Sample) else find_samples(*source)
    if not samples:
        raise ModelError(f"no annotated faces in {', '.join(map(str, source)) or 'nothing'} to calibrate int8 on")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(samples), min(n, len(samples)), replace=False))
    if aligned_scale is not None:
        return np.stack([cut_aligned(load_gray(samples[i].image), aligned_transform(samples[i].points, size, aligned_scale))
                         for i in pick])
    crops = [crop_faces(load_gray(samples[i].image), [box_from_points(samples[i].points)], size)[0] for i in pick]
    return np.concatenate(crops)


def _session(model_bytes_or_path, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes_or_path, so, providers=["CPUExecutionProvider"])


def _run(model_bytes_or_path, crops: np.ndarray, meta: dict[str, str]) -> dict[bool, np.ndarray]:
    """Points of an export (path or bytes; `meta`: its metadata) on `crops`, as `autolabel run`
    gets them with flip averaging (True) and without (False, `--no-flip`)."""
    session, size = _session(model_bytes_or_path), int(meta["input_size"])
    offset = np.asarray(json.loads(meta["label_offset"]), np.float32) * size
    step = chunk_size(size)
    return {flip: np.concatenate([session_predict(session, crops[i : i + step], flip, offset, size)[0] for i in range(0, len(crops), step)])
            for flip in (True, False)}


def sensitivity(fp32_path: Path, crops: np.ndarray) -> dict[str, float]:
    """Per Conv node: uint8 step of its input's observed range / mean |input|. Large = int8 loses the input."""
    import onnx

    m = onnx.load(str(fp32_path))
    convs = [(n.name, n.input[0]) for n in m.graph.node if n.op_type == "Conv"]
    names = sorted({t for _, t in convs})
    for t in names:
        m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    s = _session(m.SerializeToString())
    acc = {t: [np.inf, -np.inf, 0.0, 0] for t in names}  # min, max, sum |x|, count per input tensor
    for i in range(0, len(crops), 32):
        for t, a in zip(names, s.run(names, {"crops": with_mirrors(crops[i : i + 32])})):
            r = acc[t]
            r[0], r[1], r[2], r[3] = min(r[0], a.min()), max(r[1], a.max()), r[2] + np.abs(a).sum(), r[3] + a.size
    step = {t: (hi - min(lo, 0.0)) / 255 / max(tot / cnt, 1e-12) for t, (lo, hi, tot, cnt) in acc.items()}
    return {n: float(step[t]) for n, t in convs}


def disagreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per face: mean point distance between two predictions / inter-ocular distance (an NME)."""
    return np.linalg.norm(a - b, axis=-1).mean(-1) / np.maximum(interocular(b), 1e-6)


def quantize(fp32_path: Path, out: Path, calib: np.ndarray, exclude: Sequence[str] = ()) -> None:
    """The int8 recipe (module docstring) applied once: `fp32_path` calibrated on the crops
    `calib` (N, S, S) uint8 and their mirror images, the Conv nodes named in `exclude` left in
    fp32, written to `out`."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"crops": with_mirrors(calib[i : i + 32])} for i in range(0, len(calib), 32)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    op_types_to_quantize=["Conv", "Relu"], nodes_to_exclude=list(exclude), activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)


def quantize_int8(fp32_path: Path, out: Path, calib: np.ndarray, check: np.ndarray, log=print) -> Export:
    import onnx

    meta = {e.key: e.value for e in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
    ref = _run(str(fp32_path), check, meta)
    sens = sensitivity(fp32_path, calib)
    tried = set()
    for th in THRESHOLDS:
        keep = tuple(sorted(n for n, v in sens.items() if v > th))
        if keep in tried:
            continue
        tried.add(keep)
        with tempfile.TemporaryDirectory() as tmp:
            q = Path(tmp) / "q.onnx"
            quantize(fp32_path, q, calib, keep)
            m = onnx.load(str(q))
        got = _run(m.SerializeToString(), check, meta)
        # the file serves both settings: each must agree (one pass has no mirror to average its noise with)
        dis, one = disagreement(got[True], ref[True]), disagreement(got[False], ref[False])
        d = float(dis.mean())
        log(f"int8 with {len(keep)} of {len(sens)} conv layers in fp32: disagreement with fp32 {d:.4f}, worst face {dis.max():.4f}; "
            f"without flip {one.mean():.4f}, {one.max():.4f} (bounds {PARITY_BOUND}, {PARITY_BOUND_FACE})")
        if max(d, float(one.mean())) <= PARITY_BOUND and max(dis.max(), one.max()) <= PARITY_BOUND_FACE:
            _set_metadata(m, {**meta, "precision": "int8", "kept_fp32": ",".join(keep)})
            data = m.SerializeToString()
            atomic_write_bytes(out, data)
            return Export(out, "int8", hashlib.sha256(data).hexdigest(), keep, d)
    raise ModelError("int8 export never agreed with fp32")  # unreachable: the last threshold keeps every conv in fp32


def export_onnx(model_path: Path, calibration: Sequence[Path] | Sequence[Sample], log=print) -> list[Export]:
    """Write `<stem>.fp32.onnx` and `<stem>.int8.onnx` beside `model_path`; returns what was
    written. `calibration`: 300-W folders or samples to calibrate int8 on (the training faces);
    2/3 of the crops (at most 256) calibrate, the rest check int8 against fp32."""
    model_path = Path(model_path)
    model = load_model(model_path)
    paths = onnx_paths(model_path)
    t = time.time()
    export_fp32(model, paths["fp32"])
    fp32 = Export(paths["fp32"], "fp32", hashlib.sha256(paths["fp32"].read_bytes()).hexdigest())
    crops = calibration_crops(calibration, model.input_size, n=384, aligned_scale=aligned_scale_of(model.meta))
    if len(crops) < 3:
        raise ModelError(f"{len(crops)} calibration faces: int8 needs at least 3 (some to calibrate, some to check)")
    k = min(256, 2 * len(crops) // 3)
    int8 = quantize_int8(paths["fp32"], paths["int8"], crops[:k], crops[k:], log)
    log(f"exported {model.model_id} -> {fp32.path.name}, {int8.path.name} in {time.time() - t:.0f} s")
    return [fp32, int8]


def main() -> None:
    import argparse

    from autolabel.resources import data_root, shipped_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, nargs="?", default=None, help="model file (default: the shipped one)")
    ap.add_argument("--calibration", type=Path, nargs="*", default=None,
                    help="300-W folders to calibrate int8 on (default: the 300-W training folders)")
    a = ap.parse_args()
    root = data_root() / "300w"
    calib = a.calibration or [root / "afw", root / "helen" / "trainset", root / "lfpw" / "trainset"]
    for e in export_onnx(a.model or shipped_model(), calib):
        print(json.dumps({"path": str(e.path), "precision": e.precision, "sha256": e.sha256, "kept_fp32": list(e.kept_fp32),
                          "parity": e.parity}))


if __name__ == "__main__":
    main()

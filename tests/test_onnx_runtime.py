"""The ONNX fast path: int8 agrees with torch on fixed faces, a labelling run with it never
imports torch, stale exports are refused, `auto` picks the runtime that is there, both network
architectures export exactly, and an install without torch answers one line naming the extra."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA

pytest.importorskip("onnxruntime")

from autolabel.resources import shipped_model
from autolabel.runtimes import default_runtime, exported_path, make_runtime
from autolabel.types import ModelError, UsageError

needs_export = pytest.mark.skipif(not exported_path(None).is_file(),
                                  reason="no ONNX export of the shipped model (python -m autolabel.training.export_onnx)")
REPO = Path(__file__).resolve().parents[1]

#: measured on all 330 helen/testset faces (shipped model v2.1, 2b401d23c0cd, every conv in int8):
#: int8 NME +0.009 points over torch, max point distance 1.70 px (1.97 px before the luma decode,
#: `images.load_gray`; its Conv-only export: +0.010,
#: 2.01 px; v2, c1e45fce0f5d: +0.006 points, 1.92 px;
#: v1, 47e1a0f51e02: +0.019 points, 2.33 px).
NME_BOUND = 0.0005  # 0.05 NME points
MAX_DEV_PX = 3.0


def _faces(n: int = 32):
    from autolabel.datasets import find_samples
    from autolabel.geometry import box_from_points
    from autolabel.images import load_image
    from autolabel.predictor import crop_faces

    samples = find_samples(DATA / "300w" / "helen" / "testset")[:n]
    crops, ts = [], []
    for s in samples:
        c, t = crop_faces(load_image(s.image).convert("L"), [box_from_points(s.points)], 128)
        crops.append(c)
        ts += t
    return np.concatenate(crops), ts, np.stack([s.points for s in samples])


@needs_export
@pytest.mark.needs_data
def test_int8_matches_torch_on_fixed_faces():
    pytest.importorskip("torch")
    from autolabel.metrics import nme
    from autolabel.predictor import Predictor

    crops, ts, gt = _faces()
    ref, *_ = Predictor(make_runtime("torch")).predict(crops, ts)
    got, conf, _ = Predictor(make_runtime("onnx")).predict(crops, ts)
    dev = np.linalg.norm(got - ref, axis=-1)
    assert abs(nme(got, gt).mean() - nme(ref, gt).mean()) < NME_BOUND
    assert dev.max() < MAX_DEV_PX
    assert np.isfinite(conf).all()


@needs_export
@pytest.mark.needs_data
def test_onnx_run_never_imports_torch(tmp_path):
    """Neither with flip averaging (the default) nor without (`--no-flip`)."""
    photo = DATA / "300w" / "helen" / "testset"
    files = sorted(photo.glob("*.jpg"))[:3]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    code = ("import sys; from pathlib import Path; from autolabel.labelling import run; "
            f"s = run([Path({str(tmp_path)!r})], Path({str(tmp_path / 'out.parquet')!r}), runtime='onnx', workers=0, progress=False); "
            "assert s.faces >= 3, s.text(); "
            f"s = run([Path({str(tmp_path)!r})], Path({str(tmp_path / 'fast.parquet')!r}), runtime='onnx', workers=0, progress=False, flip=False); "
            "assert s.faces >= 3, s.text(); "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); assert not bad, bad[:5]; print('ok')")
    p = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr[-2000:]


@needs_export
def test_stale_export_is_refused(tmp_path):
    pt = tmp_path / "landmarks.pt"
    pt.write_bytes(shipped_model().read_bytes() + b"changed")
    shutil.copy(exported_path(None), exported_path(pt))
    with pytest.raises(ModelError, match="stale"):
        make_runtime("onnx", pt)


@needs_export
def test_auto_picks_onnx_when_exported_else_torch(tmp_path):
    assert default_runtime(None) == "onnx"
    assert default_runtime(None, flip=False) == "onnx"  # one export serves both: the runtime averages flips
    pt = tmp_path / "m.pt"
    pt.write_bytes(b"")
    assert default_runtime(pt) == "torch"
    with pytest.raises(UsageError, match="auto, onnx"):
        make_runtime("tensorflow")


@needs_export
@pytest.mark.needs_data
def test_no_flip_runs_on_the_same_export_without_torch():
    """The shipped export predicts one crop per input; flip averaging is the runtime's. Without
    it: one network pass, NaN disagreement, torch's no-flip points."""
    pytest.importorskip("torch")
    crops, _, _ = _faces(8)
    rt = make_runtime("onnx-fp32", flip=False)
    assert rt.name == "onnx-fp32"
    got, dis, scale = rt.predict(crops)
    ref, _, ref_scale = make_runtime("torch", flip=False).predict(crops)
    assert np.isnan(dis).all() and np.isfinite(scale).all()
    assert np.abs(got - ref).max() < 1e-3 and np.abs(scale - ref_scale).max() < 1e-3
    flipped, fdis, _ = make_runtime("onnx-fp32").predict(crops)
    assert np.isfinite(fdis).all() and 0.05 < np.abs(flipped - got).mean() < 2  # averaging the mirror moves points a little


def test_an_old_export_with_flips_inside_falls_back_to_torch_for_no_flip(tmp_path, capsys):
    """Exports made before flip averaging moved into the runtime (metadata flip = "1") still
    load, for flip averaging; --no-flip on them runs on torch, with one line saying why."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from autolabel.model import InferenceGraph, LandmarkModel, build_network, load_model
    from autolabel.runtimes.onnx_runtime import FORMAT
    from autolabel.training.export_onnx import OPSET, OUTPUTS, _set_metadata

    torch.manual_seed(0)
    net = build_network("resnet18-1ch-hm")
    with torch.no_grad():
        net.label_offset.copy_(torch.tensor([0.01, -0.02]))
    pt = tmp_path / "m.pt"
    LandmarkModel(net, 128, {}).save(pt)
    model = load_model(pt)
    # the old export: flip averaging and the label offset inside the graph, metadata flip = "1"
    f = tmp_path / "old.onnx"
    torch.onnx.export(InferenceGraph(model.net, flip=True).eval(), (torch.zeros((2, 128, 128), dtype=torch.uint8),), str(f), dynamo=False,
                      opset_version=OPSET, input_names=["crops"], output_names=list(OUTPUTS),
                      dynamic_axes={"crops": {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}})
    m = onnx.load(str(f))
    _set_metadata(m, {"format": FORMAT, "model_id": model.model_id, "input_size": "128", "precision": "fp32", "flip": "1", "meta": "{}"})
    exported_path(pt, "fp32").write_bytes(m.SerializeToString())
    crops = np.random.default_rng(0).integers(0, 256, (20, 128, 128), dtype=np.uint8)
    got, dis, scale = make_runtime("onnx-fp32", pt).predict(crops)
    ref, ref_dis, ref_scale = make_runtime("torch", pt).predict(crops)
    assert max(np.abs(got - ref).max(), np.abs(dis - ref_dis).max(), np.abs(scale - ref_scale).max()) < 1e-3
    assert make_runtime("onnx-fp32", pt).name == "onnx-fp32"
    assert make_runtime("onnx-fp32", pt, flip=False).name == "torch"
    assert "old export that averages flips inside its graph" in capsys.readouterr().err
    # without torch: one line saying what to do
    shutil.copy(exported_path(pt, "fp32"), exported_path(pt, "int8"))
    p = _without_torch("run", str(tmp_path), "--out", str(tmp_path / "o.parquet"), "--model", str(pt), "--no-flip")
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "--no-flip on it needs the torch runtime: drop --no-flip" in err[0], p.stderr[-2000:]


@pytest.mark.parametrize("arch", ["resnet18-1ch-136", "resnet18-1ch-hm"])
def test_fp32_export_equals_torch_for_each_arch(tmp_path, arch):
    """Whatever network the model file builds, its exported InferenceGraph gives torch's points."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from autolabel.model import LandmarkModel, build_network, load_model
    from autolabel.training.export_onnx import export_fp32

    torch.manual_seed(0)
    net = build_network(arch)
    with torch.no_grad():
        if hasattr(net, "label_offset"):
            net.label_offset.copy_(torch.tensor([0.01, -0.02]))  # exercised, not zero
        else:
            net.fc.weight.mul_(0.02)  # points inside the crop, as a trained net's (random ones land ~150 px out)
    pt = tmp_path / "m.pt"
    LandmarkModel(net, 128, {"note": "random"}).save(pt)
    export_fp32(load_model(pt), exported_path(pt, "fp32"))
    crops = np.random.default_rng(0).integers(0, 256, (20, 128, 128), dtype=np.uint8)  # > CHUNK: two session calls
    ref, ref_dis, ref_scale = make_runtime("torch", pt).predict(crops)
    rt = make_runtime("onnx-fp32", pt)
    assert rt.name == "onnx-fp32" and rt.model_id == load_model(pt).model_id
    got, dis, scale = rt.predict(crops)
    assert np.abs(got - ref).max() < 1e-3 and np.abs(dis - ref_dis).max() < 1e-3
    assert np.abs(make_runtime("onnx-fp32", pt, flip=False).predict(crops)[0] - make_runtime("torch", pt, flip=False).predict(crops)[0]).max() < 1e-3
    if arch == "resnet18-1ch-hm":  # the per-point error scale travels through the export
        assert np.isfinite(scale).all() and (scale > 0).all() and np.abs(scale - ref_scale).max() < 1e-3
    else:
        assert np.isnan(scale).all()  # a regression net has none


def test_deployable_head_computes_what_the_trained_head_does():
    """The export's sub-pixel head (3x3 conv + PixelShuffle for each transposed conv + batch norm)
    is the trained head's function, with batch-norm statistics that are not the identity."""
    torch = pytest.importorskip("torch")
    from autolabel.model import build_network
    from autolabel.training.export_onnx import deployable

    torch.manual_seed(0)
    net = build_network("resnet18-1ch-hm").eval()
    with torch.no_grad():
        for bn in (net.up[1], net.up[4]):
            bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0), bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.2, 0.2)
    dep = deployable(net)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in dep.modules())
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())  # the trained net is left as it was
    x = torch.randn(3, 512, 5, 5).relu()
    with torch.no_grad():
        assert torch.allclose(dep.up(x), net.up(x), atol=1e-5)
        y = torch.randn(2, 1, 160, 160)
        assert torch.allclose(dep.forward_full(y)[0], net.forward_full(y)[0], atol=1e-5)


@needs_export
def test_shipped_int8_exports_run_their_convolutions_in_int8():
    """ONNX Runtime runs a Conv in int8 when its quantized output needs no round trip through
    fp32: no transposed convolution is left, and the only ReLUs are the residual ones after an Add
    (each ReLU after a Conv is folded into that Conv's output range)."""
    onnx = pytest.importorskip("onnx")
    from autolabel.runtimes import stage2_path

    for pt in (shipped_model(), stage2_path(None)):
        g = onnx.load(str(exported_path(pt, "int8"))).graph
        made_by = {o: n.op_type for n in g.node for o in n.output}
        fed_by = {n.output[0]: made_by.get(n.input[0]) for n in g.node if n.op_type == "DequantizeLinear"}
        relus = [fed_by.get(n.input[0], made_by.get(n.input[0])) for n in g.node if n.op_type == "Relu"]
        assert not [n for n in g.node if n.op_type == "ConvTranspose"], pt.name
        assert relus == ["Add"] * 8, (pt.name, relus)


@needs_export
@pytest.mark.parametrize("key,value", [("input_size", "0"), ("input_size", "-128"), ("input_size", "12O"), ("input_size", "100000"),
                                       ("label_offset", "[0.1]"), ("label_offset", "[NaN, 0]"), ("meta", "{not json")])
def test_a_hand_edited_export_is_refused_in_one_line(tmp_path, key, value):
    """An export whose metadata was edited to a size that is not a crop side, or to values that do
    not parse, is refused with one line naming the file, by the runtime and by `autolabel run`."""
    onnx = pytest.importorskip("onnx")
    pt = tmp_path / "m.pt"
    shutil.copy(shipped_model(), pt)
    m = onnx.load(str(exported_path(None, "fp32")))
    next(e for e in m.metadata_props if e.key == key).value = value
    onnx.save(m, str(exported_path(pt, "fp32")))
    with pytest.raises(ModelError, match="m.fp32.onnx: (input size|damaged export metadata)"):
        make_runtime("onnx-fp32", pt)
    (tmp_path / "in").mkdir()
    p = subprocess.run([sys.executable, "-m", "autolabel", "run", str(tmp_path / "in"), "--out", str(tmp_path / "o.parquet"),
                        "--model", str(pt), "--runtime", "onnx-fp32"], capture_output=True, text=True, cwd=REPO, timeout=300)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(err) == 1 and "m.fp32.onnx" in err[0], p.stderr[-2000:]  # a model error, not a usage error
    assert not (tmp_path / "o.parquet").exists()


@needs_export
def test_sessions_do_not_spin_waiting_for_work():
    """Two stages hold two sessions on the same cores: an idle one must not spin (see OnnxRuntime)."""
    rt = make_runtime("onnx", threads=2)
    assert rt.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


@needs_export
@pytest.mark.needs_data
def test_threads_run_calls_side_by_side_with_the_same_answers():
    """`threads` > 1: one-thread session calls on equal parts of the batch at once (each thread gets
    work even when the batch fits one call; the calls in flight hold no more crops than one call
    of one thread would, so the memory peak does not grow); each crop's answer is what one thread
    gives."""
    crops = _faces(20)[0]
    one, two = make_runtime("onnx", threads=1), make_runtime("onnx", threads=2)
    assert one.session.get_session_options().intra_op_num_threads == 1 == two.session.get_session_options().intra_op_num_threads
    calls: list[int] = []
    call = two._call
    two._call = lambda c: calls.append(len(c)) or call(c)
    for got, want in zip(two.predict(crops), one.predict(crops)):
        np.testing.assert_array_equal(got, want)
    assert calls == [5, 5, 5, 5] and two._pool is not None and one._pool is None  # 20 crops, 16 at most in flight
    calls.clear()
    for got, want in zip(two.predict(crops[:1]), one.predict(crops[:1])):  # one crop: no pool hand-off
        np.testing.assert_array_equal(got, want)
    assert calls == [1]
    if hasattr(os, "sched_getaffinity"):  # by default: the CPUs this process may use, not the machine's count
        assert make_runtime("onnx").threads == len(os.sched_getaffinity(0))


def test_session_calls_hold_as_many_pixels_at_any_input_size():
    """Without a memory arena a call's activations are its peak: a 160-px second stage
    takes 10 crops per call where the 128-px first stage takes 16, and a huge input one."""
    from autolabel.runtimes.onnx_runtime import CHUNK, chunk_size

    assert (chunk_size(128), chunk_size(160), chunk_size(64), chunk_size(4096)) == (CHUNK, 10, 4 * CHUNK, 1)


def _without_torch(*argv: str) -> subprocess.CompletedProcess:
    """`autolabel ARGV` in a process where `import torch` fails, as in a base install."""
    code = f"import sys; sys.modules['torch'] = None; sys.argv = ['autolabel', *{list(argv)!r}]; from autolabel.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO, timeout=300)


@needs_export
def test_without_torch_labelling_works_and_training_names_the_extra(tmp_path):
    p = _without_torch("models")
    assert p.returncode == 0 and "shipped" in p.stdout, p.stderr[-2000:]
    for argv, what in [(["train", "--recipe", "model/recipe.toml"], "train needs PyTorch"),
                       (["finetune", "--from", str(tmp_path)], "finetune needs PyTorch"),
                       (["run", str(tmp_path), "--out", str(tmp_path / "o.parquet"), "--runtime", "torch"], "torch runtime needs PyTorch")]:
        p = _without_torch(*argv)
        err = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(err) == 1 and what in err[0] and "pip install 'autolabel[train]'" in err[0], p.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.needs_data
def test_export_onnx_from_samples_writes_both_runtimes(tmp_path):
    """What `finetune` does with its new model: export it, int8 calibrated on its training faces."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from autolabel.datasets import find_samples
    from autolabel.training.export_onnx import export_onnx

    pt = tmp_path / "model.pt"
    shutil.copy(shipped_model(), pt)
    samples = find_samples(DATA / "300w" / "helen" / "trainset")[:12]
    written = export_onnx(pt, samples, log=lambda *_: None)
    assert [e.path for e in written] == [exported_path(pt, "fp32"), exported_path(pt, "int8")]
    crops, _, _ = _faces(8)
    ref, *_ = make_runtime("torch", pt).predict(crops)
    for name in ("onnx-fp32", "onnx"):
        got, dis, _ = make_runtime(name, pt).predict(crops)
        assert np.isfinite(dis).all() and np.linalg.norm(got - ref, axis=-1).max() < (1e-3 if name == "onnx-fp32" else MAX_DEV_PX)
    assert default_runtime(pt) == "onnx"

"""Write model/README.md (the model card) from a training run and an `autolabel eval` report.

    python benchmarks/make_model_card.py --run /work/runs/v2 --eval model/reports   (or --run model/reports: its history.json)
    --bench model/reports/bench_inference.txt
    python benchmarks/make_model_card.py --onnx-only     # after re-exporting: update only the card's ONNX section
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ONNX_HEADER = "## ONNX exports (the default runtime)"


def onnx_section(model_dir: Path = Path("model"), parity: Path = Path("model/reports/onnx_parity.txt")) -> str:
    """The card's ONNX section: each export of landmarks.pt with its size, SHA-256 and the model
    version it records (read from the files, onnxruntime only), and the int8 parity report."""
    import onnxruntime as ort

    from autolabel.files import content_hash

    rows, fresh = [], True
    for stem in ("landmarks", "landmarks.stage2"):
        pt = model_dir / f"{stem}.pt"
        if not pt.is_file():
            continue
        version = content_hash(pt.read_bytes())
        for prec in ("fp32", "int8"):
            f = model_dir / f"{stem}.{prec}.onnx"
            if not f.is_file():
                continue
            props = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
            kept = props.get("kept_fp32", "")
            n_kept = len(kept.split(",")) if kept else (0 if prec == "int8" else "-")
            fresh = fresh and props.get("model_id") == version
            sha = hashlib.sha256(f.read_bytes()).hexdigest()
            rows.append(f"| [`{f.name}`]({f.name}) | {prec} | {f.stat().st_size / 2**20:.1f} MiB | `{sha}` | `{props.get('model_id')}` | {n_kept} |")
    return f"""{ONNX_HEADER}

`autolabel run`, `eval`, `audit`, review and `Labeler` use `landmarks.int8.onnx` with onnxruntime
(`--runtime auto`, the default; no torch is imported), and `landmarks.stage2.int8.onnx` for `--refine`.
Each file is `InferenceGraph` (per-crop standardisation and the network, one crop per input) exported by
`python -m autolabel.training.export_onnx`; the runtime averages the flips (the crop and its mirror image in one call) and adds
the learned label offset the file records, so one file serves `--no-flip` too. Each records the model version it came from, and a file
whose version is not its `.pt`'s is refused{'' if fresh else ' (**these are stale: re-export**)'}. int8: onnxruntime static quantization (QDQ, per-channel 7-bit weights,
uint8 activations, MinMax calibration on 256 training crops and their mirror images, cut as each stage sees them) of the Conv layers and the ReLUs after them
(folded into each conv's output range); the heatmap head's transposed convs are exported as the equal 3×3 convs + pixel shuffle
(`export_onnx.deployable`), so every conv runs in int8. The layers whose input
int8 cannot hold are kept in fp32 until int8 agrees with fp32 on held-out crops.

| file | precision | size | SHA-256 | model version | convs kept fp32 |
|---|---|---|---|---|---|
{chr(10).join(rows)}

```
{parity.read_text().strip() if parity.is_file() else '(no parity report: model/reports/onnx_parity.txt)'}
```
"""


def stage2_section(model_dir: Path = Path("model")) -> str:
    """The card's second-stage section: what it is, how it was trained, and stage2_eval.py's
    table (validation split and helen/testset, every flip combination, passes per face)."""
    from autolabel.model import load_model

    s2 = load_model(model_dir / "landmarks.stage2.pt")
    meta, rr = s2.meta, s2.meta["recipe"]
    ev = json.loads((model_dir / "reports" / "stage2_eval.json").read_text())
    names = [k for k in ev["test"] if "->" in k and "averaged" not in k] + [k for k in ev["test"] if "->" not in k]
    rows = []
    for k in names:
        v, t = ev["val"][k], ev["test"][k]
        score = "stage 2 + moved / 2" if "->" in k else next(iter(t["confidence"]))
        rows.append(f"| {k} | {t['passes']} | {100 * v['nme']:.2f} % | {100 * t['nme']:.2f} % | {100 * t['fr']:.2f} % | "
                    f"{t['confidence'][score]['spearman']:.3f} / {100 * t['confidence'][score]['worst_in_top']:.0f} % |")
    a = rr["augment"]
    return f"""## The second stage (`landmarks.stage2.pt`, `{s2.model_id}`: on by default, `--no-refine` turns it off)

The same network, fine-tuned from the first stage's weights on crops **aligned by the labels**: centred
and sized by the points' box like the `gt` protocol, but {rr['aligned_scale']} × its side instead of 1.5 × (the first
stage has already found the face, so the face fills more of the crop), at {s2.input_size} px (the first stage: 128), and
rotated so the line between the eye centres is level. Training jitters that crop by rotation ±{a['rotation_deg']}°, scale ±{100 * a['scale']:.0f} %, shift
±{100 * a['shift']:.0f} % of the crop, standing in for the first stage's errors. At inference the crop is placed by the first
stage's points (`geometry.aligned_transform`, `cut_aligned`: a 1.5× canvas cut antialiased at the
crop's pixel scale, then rotated bilinearly, as in training), and the second stage's points are the
labels. At the default settings the first stage predicts once per face (its points only place this
crop) and the second stage's flips are averaged (`predictor.make_predictor`). Confidence = the second stage's own score + half the mean distance it moved the points
(over the eye-corner distance).

- `{meta.get('command', '')}` (code at git `{meta.get('git_commit', '')}`; [`recipe_v2_stage2.toml`](recipe_v2_stage2.toml):
  lr {rr['lr']} one-cycle, {rr['epochs']} epochs, EMA {rr['ema']}, seed {rr['seed']}; {meta.get('train_seconds', 0) / 60:.1f} min on 2 CPU cores). Validation
  NME on aligned crops of the held-out split: {100 * meta.get('best_val_nme', float('nan')):.2f} % (best epoch {meta.get('epoch')}). The run read a copy of this
  recipe whose `init` line named the weights `--init` loaded (v2.1); the package's code was the same
  at the commit it records.

`benchmarks/stage2_eval.py` (det protocol, both stages on torch; {ev['val']['stage 1 flip']['passes']} passes = flip averaging of one stage;
a {s2.input_size}-px pass costs about {(s2.input_size / 128) ** 2:.2f} × a 128-px one). The default is "stage 1 -> stage 2 flip".
Validation = the hash split (190 faces with a HOG box); test = helen/testset (322). Confidence on test:
Spearman / share of the worst 10 % in the least sure 10 %.

| pipeline | network passes per face | validation NME | test NME | test FR@0.08 | test confidence |
|---|---|---|---|---|---|
{chr(10).join(rows)}

![second stage loss curve](reports/stage2_loss_curve.png)
![second stage validation overlay](reports/stage2_val_overlay.png)
"""


def update_onnx_section(card: Path = Path("model/README.md")) -> None:
    """Replace (or insert before "## Speed") the ONNX section of an existing card, keeping the rest."""
    text = card.read_text()
    new = onnx_section().rstrip() + "\n\n"
    if ONNX_HEADER in text:
        head, _, rest = text.partition(ONNX_HEADER)
        nxt = rest.find("\n## ")
        text = head + new + (rest[nxt + 1 :] if nxt >= 0 else "")
    else:
        head, sep, rest = text.partition("## Speed")
        text = head + new + sep + rest if sep else text.rstrip() + "\n\n" + new
    card.write_text(text)
    print(f"updated the ONNX section of {card}")


def main() -> None:
    if "--onnx-only" in sys.argv:
        return update_onnx_section()
    from autolabel.evaluate import table
    from autolabel.model import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("runs/shipped"))
    ap.add_argument("--eval", type=Path, default=Path("model/reports"))
    ap.add_argument("--bench", type=Path, default=Path("model/reports/bench_inference.txt"))
    ap.add_argument("--notes", type=Path, default=Path("model/reports/notes.md"))
    ap.add_argument("--confidence", type=Path, default=Path("model/reports/confidence.json"))
    a = ap.parse_args()
    m = load_model(Path("model/landmarks.pt"))
    meta = m.meta
    rep = json.loads((a.eval / "eval.json").read_text())
    hist = json.loads((a.run / "history.json").read_text())
    det, gt = rep["protocols"]["det"], rep["protocols"]["gt"]
    r = meta["recipe"]
    best_epoch = meta.get("epoch")
    # a model started with --init records the earlier stage's meta under "init": walk the chain
    stages, m_ = [], meta
    while m_:
        stages.append(m_)
        m_ = m_.get("init", {}).get("meta")
    stages.reverse()
    total_min = sum(st.get("train_seconds", 0) for st in stages) / 60
    lines = []
    for i, st in enumerate(stages, 1):
        cmd = st.get("command", "")
        words = cmd.split()
        recipe = words[words.index("--recipe") + 1].split("/")[-1] if "--recipe" in words else "recipe.toml"
        rr = st["recipe"]
        named = f"[`{recipe}`]({recipe})" if (Path("model") / recipe).is_file() else f"`{recipe}` (outside model/; its settings, from the model file)"
        lines.append(f"- Stage {i}: `{cmd}` (code at git `{st.get('git_commit', '')}`; {named}: loss `{rr['loss']}`, "
                     f"AdamW lr {rr['lr']} one-cycle, batch {rr['batch_size']}, {rr['epochs']} epochs, patience {rr['patience']}, "
                     f"seed {rr['seed']}{', weight moving average ' + str(rr['ema']) if rr.get('ema') else ''}; "
                     f"{st.get('train_seconds', 0) / 60:.1f} min)")
    stages_text = "\n".join(lines)
    pre = [st for st in stages if not any(t.startswith("300w/") for t in st["recipe"].get("train", []))]
    pretrain_text = ("Pre-training (stage 1): " + ", ".join(f"`{t}/`" for st in pre for t in st["recipe"]["train"]) +
                     f", {sum(st.get('train_faces', 0) for st in pre)} machine-labelled faces, no 300-W face; its own 10 % hash split"
                     " chose its epoch." if pre else "`ytf68/` was not used.")
    if meta.get("arch", "resnet18-1ch-136") == "resnet18-1ch-hm":
        what = (f"A ResNet18 trunk (torchvision `resnet18(weights=None)`, first conv 1 channel) with a heatmap head (two stride-2\n"
                f"transposed convs to 16×16, 68 heatmaps, soft-argmax: integral regression), a learned label offset and a\n"
                f"per-point error scale, predicting the 68 iBUG / 300-W points from a {m.input_size}x{m.input_size} grayscale face crop.")
    else:
        what = (f"A ResNet18 (torchvision `resnet18(weights=None)`, first conv 1 channel, 136-value head) that\n"
                f"regresses the 68 iBUG / 300-W points from a {m.input_size}x{m.input_size} grayscale face crop.")
    val_text = (f"Validation (best epoch) = {meta['val_split']} ({meta.get('val_faces')} faces held out of the\n"
                f"  {meta.get('train_faces', 0) + meta.get('val_faces', 0)}); `300w/helen/testset` was not read during training"
                if "hash" in str(meta.get("val_split", "")) else f"Validation (early stopping, best epoch) = `300w/helen/testset` ({meta.get('val_faces')} faces)")
    conf = json.loads(a.confidence.read_text()) if a.confidence.is_file() else None
    conf_text = ""
    if conf:
        rows = [f"| {name} | {k} | {q['spearman']:.3f} | {100 * q['worst_in_top']:.0f} % |"
                for name in ("val", "test") for k, q in conf[name]["candidates"].items()]
        conf_text = f"""## Confidence: does it find the bad labels?

The review queue shows the least sure faces first, so the score must rank faces by their error.
`benchmarks/confidence_eval.py` (det protocol, flip averaging, runtime `{conf['runtime']}`): Spearman correlation between
each candidate score and the face's NME, and the share of the worst 10 % of faces that the score's top 10 % holds.
Shipped: **`shipped`** = scale + flip disagreement / 2 (`autolabel/predictor.py: face_confidence`), fixed in
the code before the run. `recrop` and `two-pass` need a second pass of the model on the crop placed by the
first pass's points (twice the landmark cost: opt-in `--refine`, not the default; see the notes below). The test rows are
reported as measured; `eval.txt` above gives the shipped score's figures for the int8 runtime.

| set | score | Spearman | worst 10 % in top 10 % |
|---|---|---|---|
{chr(10).join(rows)}
"""
    # earlier stages' curves are kept beside the last stage's as loss_curve_stage<N>.png
    earlier_curves = "".join(f"\n![{f.stem.removeprefix('loss_curve_')} loss curve](reports/{f.name})"
                             for f in sorted(Path("model/reports").glob("loss_curve_stage*.png")))
    s2 = load_model(Path("model/landmarks.stage2.pt")) if Path("model/landmarks.stage2.pt").is_file() else None
    s2_id, s2_size = (s2.model_id, s2.input_size) if s2 else (None, 128)
    one = Path("model/reports/one_stage/eval.txt")
    one_text = f"""
One stage (`--no-refine`: the first stage with flip averaging, two 128-px network passes per face instead of one 128-px and two {s2_size}-px ones):

```
{one.read_text().strip()}
```
""" if one.is_file() else ""
    card = f"""# autolabel landmark model `{m.model_id}`{f' + second stage `{s2_id}`' if s2_id else ''}

{what}
Trained from scratch on this 2-core CPU machine. The model version is the first 12 hex digits
of the SHA-256 of `landmarks.pt` (fp16 weights, {Path('model/landmarks.pt').stat().st_size / 2**20:.1f} MiB).

**Licence: trained on 300-W, whose images and annotations are for non-commercial research use
only. These weights inherit that restriction.**

## How it was made

{stages_text}
- Data: `300w/afw` + `300w/helen/trainset` + `300w/lfpw/trainset`: {meta.get('train_faces')} faces
  ({meta.get('train_hog_boxes')} with a dlib HOG box; the rest cropped from a box made from their points),
  fingerprint `{meta.get('train_fingerprint')}`. {val_text}. {pretrain_text}
- Training time: {total_min:.1f} minutes of epochs on 2 CPU cores{' over ' + str(len(stages)) + ' stages' if len(stages) > 1 else ''}; last stage: best epoch
  {best_epoch} of {len(hist['epoch'])} (validation NME {100 * meta.get('best_val_nme', float('nan')):.2f} % without flip averaging).
- Augmentation (all in one affine warp, so pixels and points move together): rotation ±{r['augment']['rotation_deg']}°,
  scale ±{100 * r['augment']['scale']:.0f} %, shift ±{100 * r['augment']['shift']:.0f} % of the crop, horizontal flip (p={r['augment']['flip']}) with the
  68-point mirror permutation, brightness ±{100 * r['augment']['brightness']:.0f} %, contrast ±{100 * r['augment']['contrast']:.0f} %.

![loss curve](reports/loss_curve.png){earlier_curves}
![validation overlay](reports/val_overlay.png)

## Input convention (`autolabel/geometry.py`)

face box (x0, y0, x1, y1) from dlib HOG → square of side 1.5 × max(w, h) centred on the box
centre moved down by 0.10 × h, snapped to whole pixels → cut out of the grayscale, EXIF-upright
image (black outside) → resized (antialiased) to {m.input_size} px → standardised per image (zero mean,
unit std). Outputs are crop coordinates, mapped back to image pixels by the inverse transform.
Training cuts a 1.5× larger canvas around the same centre and samples jittered crops from it.
For the `gt` protocol the box is made from the points with the HOG box's measured relation
(same centre x, centre 0.08 × side higher, side 1.03 × the points' larger extent).

## Accuracy on `300w/helen/testset` (330 faces)

Same faces, same boxes for both methods; dlib = dlib's own 68-point shape predictor
(`shape_predictor_68_face_landmarks.dat`, trained on 300-W with iBUG's full training set, which
probably includes these test faces). autolabel at its default settings: the second stage (below),
flip-averaged, after one pass of the first, int8 ONNX; the model version of these labels is `{rep.get('model_version', m.model_id)}`. `det` = the dlib HOG box best
matching each face (faces the detector misses are counted, not scored); `gt` = a box from the
ground-truth points. NME in % (inter-ocular = outer eye corners 36/45; inter-pupil = eye
centres); FR and AUC at NME 0.08; NMSE = mean squared error of the points in normalised crop
coordinates (crop side = 1); ≤3px/≤5px = share of points within 3 / 5 pixels at the
{m.input_size} px input resolution.

```
{table(rep)}
```

The whole report: [`reports/eval.txt`](reports/eval.txt), [`reports/eval.json`](reports/eval.json) (`autolabel eval`, runtime `{rep.get('runtime', '')}`).
{one_text}
![CED](reports/ced.png)

{stage2_section() if s2_id else ''}
{conf_text}
{onnx_section()}
## Speed (this machine: 2 CPU cores)

```
{a.bench.read_text().strip() if a.bench.is_file() else '(run benchmarks/bench_inference.py)'}
```

{a.notes.read_text().strip() if a.notes.is_file() else ''}
"""
    Path("model/README.md").write_text(card)
    print(f"wrote model/README.md for {m.model_id}: det NME {100 * det['autolabel']['nme_io']:.2f} %, gt {100 * gt['autolabel']['nme_io']:.2f} %")


if __name__ == "__main__":
    main()

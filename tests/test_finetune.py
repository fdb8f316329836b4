"""Finetuning from corrections: the demonstration on helen/testset and every bad input."""

import json
import os
import shutil

import numpy as np
import pytest

from autolabel.catalog import list_models
from autolabel.formats.corrections import CorrectionStore
from autolabel.formats.pts import format_pts, read_pts
from autolabel.training.finetune import MIN_HOLDOUT, decide, finetune, load_corrections, split
from autolabel.types import ModelError, UsageError

from helpers import DATA, HELEN_TEST, link_faces


@pytest.mark.needs_data
@pytest.mark.slow
def test_demonstration_corrections_make_the_model_better(tmp_path, shipped_model_path):
    """150 helen/testset faces act as corrections (their ground truth); the other 180 stay aside."""
    faces = sorted(HELEN_TEST.glob("*.jpg"))
    src = link_faces(tmp_path / "corrections", faces[:150])
    aside = link_faces(tmp_path / "aside", faces[150:])
    # CI's cut of the demonstration (the full one, 15 epochs replaying all 2,012 training faces and
    # finetuning both stages, is benchmarks/bench_finetune.py): 8 epochs, replaying afw only, the
    # first stage (the second stage's finetune is test_a_two_stage_finetune_keeps_both_stages)
    lin = finetune(src, tmp_path / "ft", base=shipped_model_path, replay=[DATA / "300w" / "afw"], eval_data=[aside], epochs=8,
                   progress=False, refine=False).lineage
    b, a = lin.before, lin.after
    assert lin.corrections_used + lin.corrections_held_out == 150 and lin.corrections_held_out == 30
    assert a["train_corrections"] < 0.85 * b["train_corrections"], (b, a)  # the faces used: much better
    assert a["holdout"] < b["holdout"], (b, a)  # unseen corrections: better
    assert a["reference"] <= b["reference"] + 0.001, (b, a)  # the other 180: within 0.1 point
    assert lin.usable and (tmp_path / "ft" / "model.pt").is_file() and not lin.stage2_version
    card = (tmp_path / "ft" / "README.md").read_text()
    assert lin.base_model in card and "non-commercial" in card
    from autolabel.model import load_model

    m = load_model(tmp_path / "ft" / "model.pt")
    assert m.model_id == lin.model_version and m.meta["finetune"]["base_model"] == lin.base_model
    assert any(x.version == lin.model_version for x in list_models([tmp_path]))


@pytest.mark.needs_data
def test_a_two_stage_finetune_keeps_both_stages(tmp_path, shipped_model_path):
    """The shipped model has a second stage: finetune (refine, the default) trains it too, on the
    same corrections, and writes it beside the new model; the new version labels with both and
    its scores are of both stages, as `run` uses them. One epoch on 30 faces: the mechanics (what
    it buys is benchmarks/bench_finetune.py's)."""
    from autolabel.model import load_model
    from autolabel.predictor import make_predictor
    from autolabel.runtimes import stage2_path

    src = link_faces(tmp_path / "corrections", sorted(HELEN_TEST.glob("*.jpg"))[:30])
    lin = finetune(src, tmp_path / "ft", base=shipped_model_path, epochs=1, force=True, progress=False).lineage
    assert lin.corrections_used == 20 and lin.corrections_held_out == MIN_HOLDOUT and lin.usable
    assert set(lin.before) == set(lin.after) == {"holdout", "train_corrections"}
    s2 = load_model(tmp_path / "ft" / "model.stage2.pt")
    assert lin.stage2_base == load_model(stage2_path(shipped_model_path)).model_id
    assert s2.model_id == lin.stage2_version != lin.stage2_base and s2.meta["recipe"]["crop"] == "aligned"
    assert s2.meta["recipe"]["aligned_scale"] == lin.stage2_recipe["aligned_scale"] == 1.2
    assert s2.meta["finetune"]["stage2_base"] == lin.stage2_base
    assert make_predictor("torch", tmp_path / "ft" / "model.pt").model_id == f"{lin.model_version}+{lin.stage2_version}"
    card = (tmp_path / "ft" / "README.md").read_text()
    assert lin.stage2_version in card and "both stages" in card


def test_decision_refuses_a_worse_model_unless_forced():
    before = {"holdout": 0.040, "train_corrections": 0.040, "reference": 0.038}
    assert decide(before, {"holdout": 0.039, "train_corrections": 0.03, "reference": 0.0385}, force=False).usable
    worse = decide(before, {"holdout": 0.039, "train_corrections": 0.03, "reference": 0.045}, force=False)
    assert not worse.usable and not worse.forced and worse.refused_because == ("reference set NME rose 3.80% -> 4.50%",)
    forced = decide(before, {"holdout": 0.05, "train_corrections": 0.03, "reference": 0.038}, force=True)
    assert forced.usable and forced.forced and "held-out corrections" in forced.refused_because[0]


def test_split_is_deterministic_and_has_a_minimum():
    keys = [f"img{i}.jpg#0" for i in range(50)]
    a, b = split(keys, 0.2), split(list(keys), 0.2)
    assert a == b and len(a[1]) == 10 and not set(a[0]) & set(a[1])
    assert len(split(keys[:25], 0.1)[1]) == MIN_HOLDOUT
    with pytest.raises(UsageError, match="at least 20"):
        split(keys[:19], 0.2)


@pytest.mark.needs_data
def test_bad_corrections_are_skipped_and_counted(tmp_path):
    faces = sorted(HELEN_TEST.glob("*.jpg"))[:6]
    d = link_faces(tmp_path / "c", faces[:2])
    good = read_pts(faces[2].with_suffix(".pts"))
    for name, text in {
        "nan": format_pts(np.full((68, 2), np.nan)),
        "short": format_pts(good[:30]),
        "far": format_pts(good + 5000),
    }.items():
        shutil.copy(faces[3], d / f"{name}.jpg")
        (d / f"{name}.pts").write_text(text)
    (d / "gone.pts").write_text(format_pts(good))  # image missing
    loaded = load_corrections(d)
    assert len(loaded.samples) == 2
    assert loaded.skipped == {"unreadable .pts": 1, "not 68 points": 1, "points far outside the image": 1, "image missing": 1}


@pytest.mark.needs_data
def test_review_store_source_excludes_rejected(tmp_path):
    faces = sorted(HELEN_TEST.glob("*.jpg"))[:3]
    store = CorrectionStore(tmp_path / "corr")
    for f, status in zip(faces, ["accepted", "corrected", "rejected"]):
        pts = read_pts(f.with_suffix(".pts"))
        store.record(f"{f.name}#0", status, pts, 0, image=f.name, abs_path=str(f), box=[0, 0, 100, 100], model_version="m", width=1, height=1)
    store.record("gone.jpg#0", "accepted", pts, 0, image="gone.jpg", abs_path=str(tmp_path / "gone.jpg"), box=[0, 0, 9, 9], model_version="m", width=1, height=1)
    store.close()
    loaded = load_corrections(tmp_path / "corr")
    assert sorted(loaded.keys) == sorted([f"{faces[0].name}#0", f"{faces[1].name}#0"])
    assert loaded.skipped == {"image missing": 1}


@pytest.mark.needs_data
def test_empty_missing_and_bad_base(tmp_path, random_model_path):
    with pytest.raises(UsageError, match="no such corrections folder"):
        load_corrections(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no corrections in it"):
        load_corrections(tmp_path / "empty")
    src = link_faces(tmp_path / "few", sorted(HELEN_TEST.glob("*.jpg"))[:5])
    with pytest.raises(UsageError, match="needs at least"):
        finetune(src, tmp_path / "o1", base=random_model_path, progress=False)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not an autolabel model"):
        finetune(src, tmp_path / "o2", base=tmp_path / "junk.pt", progress=False)
    # a model trained on box crops left where a second stage belongs (X.stage2.pt beside X.pt):
    # refused before any work, naming the way out; --no-refine (refine=False) ignores it
    import shutil

    shutil.copyfile(random_model_path, tmp_path / "base.pt")
    shutil.copyfile(random_model_path, tmp_path / "base.stage2.pt")
    with pytest.raises(ModelError, match=r"not a second stage \(it lies beside the base: .*--no-refine\)"):
        finetune(src, tmp_path / "o3", base=tmp_path / "base.pt", progress=False)
    assert not (tmp_path / "o3").exists()
    with pytest.raises(UsageError, match="needs at least"):
        finetune(src, tmp_path / "o4", base=tmp_path / "base.pt", progress=False, refine=False)


@pytest.mark.needs_data
def test_refuses_a_worse_model_unless_forced(tmp_path, shipped_model_path):
    """Corrections that are wrong (points shifted by 15 % of the face) make the model worse on
    the reference set: the new version is written as unusable, with the reason."""
    faces = sorted(HELEN_TEST.glob("*.jpg"))[:24]
    d = tmp_path / "wrong"
    d.mkdir()
    for f in faces:
        os.symlink(f, d / f.name)
        p = read_pts(f.with_suffix(".pts"))
        (d / f.with_suffix(".pts").name).write_text(format_pts(p + 0.15 * (p.max(0) - p.min(0))))
    ref = link_faces(tmp_path / "ref", sorted(HELEN_TEST.glob("*.jpg"))[200:230])
    # the first stage alone (refine=False): the decision is the same whichever stages are scored
    lin = finetune(d, tmp_path / "ft", base=shipped_model_path, eval_data=[ref], epochs=4, lr=1e-3, progress=False, refine=False).lineage
    assert not lin.stage2_version and not (tmp_path / "ft" / "model.unusable.stage2.pt").exists()
    assert not lin.usable and lin.refused_because
    assert (tmp_path / "ft" / "model.unusable.pt").is_file() and not (tmp_path / "ft" / "model.pt").exists()
    assert json.loads((tmp_path / "ft" / "finetune.json").read_text())["usable"] is False


def test_a_refused_two_stage_version_is_written_as_unusable_with_its_second_stage(tmp_path):
    """`save` of a refused version with a second stage: model.unusable.pt and
    model.unusable.stage2.pt (never model.pt beside a second stage), the stage's recipe kept,
    both versions in the lineage and the card; a later one-stage save leaves no stale stage."""
    import dataclasses

    from autolabel.model import LandmarkModel, build_network, load_model
    from autolabel.training.finetune import card, save
    from autolabel.types import Lineage

    lin = Lineage(base_model="b", base_path="shipped", source="s", source_kind="300-W folder", corrections_used=20, corrections_held_out=10,
                  replay_faces=0, repeat=3, skipped={}, epochs=1, lr=1e-4, before={"holdout": 0.03}, after={"holdout": 0.05}, usable=False,
                  forced=False, refused_because=("held-out corrections NME rose",), command="", seconds=1.0, created="now",
                  recipe={"crop": "box"}, stage2_base="s2", stage2_recipe={"crop": "aligned", "aligned_scale": 1.2})
    net = lambda: LandmarkModel(build_network("resnet18-1ch-hm"), 128, {})  # noqa: E731
    out = tmp_path / "ft"
    out.mkdir()
    got = save(net(), out, lin, net())
    assert (out / "model.unusable.pt").is_file() and (out / "model.unusable.stage2.pt").is_file()
    assert not (out / "model.pt").exists() and not (out / "model.stage2.pt").exists()
    s2 = load_model(out / "model.unusable.stage2.pt")
    assert s2.model_id == got.stage2_version and s2.meta["recipe"]["aligned_scale"] == 1.2 and s2.meta["finetune"]["stage2_base"] == "s2"
    assert json.loads((out / "finetune.json").read_text())["stage2_version"] == got.stage2_version
    assert "`model.unusable.stage2.pt`" in card(got) and "both stages" in card(got)
    # the same folder saved again as a one-stage version: the second stage beside it goes
    again = save(net(), out, dataclasses.replace(lin, stage2_base="", stage2_recipe={}))
    assert not again.stage2_version and not (out / "model.unusable.stage2.pt").exists()
    assert "one pass" in card(again)

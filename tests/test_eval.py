"""`autolabel eval` end to end on a few real faces, and the Labeler API."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import HELEN_TEST, cli

pytestmark = pytest.mark.needs_data


def test_eval_writes_json_table_and_ced(tmp_path, shipped_model_path):
    d = tmp_path / "faces"
    d.mkdir()
    for f in sorted(HELEN_TEST.glob("*.jpg"))[:12]:
        os.symlink(f, d / f.name)
        os.symlink(f.with_suffix(".pts"), d / f.with_suffix(".pts").name)
    out = tmp_path / "ev"
    p = cli("eval", "--data", d, "--model", shipped_model_path, "--out", out, "--quiet", check_rc=0)
    assert "det      autolabel" in p.stdout and "gt       dlib" in p.stdout
    rep = json.loads((out / "eval.json").read_text())
    assert rep["faces"] == 12 and rep["input_size"] == 128 and rep["runtime"] == "onnx"  # auto: the shipped int8 export
    for proto in ("det", "gt"):
        e = rep["protocols"][proto]
        assert e["faces"] + e["missed_by_detector"] == 12
        for method in ("autolabel", "dlib"):
            m = e[method]
            assert 0 < m["nme_io"] < 0.1 and m["nme_ip"] > m["nme_io"]  # pupils are closer than eye corners
            assert 0 <= m["within_3px"] <= m["within_5px"] <= 1 and 0 < m["auc_008"] <= 1
            assert len(m["per_face_nme_io"]) == e["faces"]
    assert (out / "ced.png").stat().st_size > 10_000


def test_labeler_api(shipped_model_path):
    from autolabel import Labeler
    from autolabel.formats.pts import read_pts
    from autolabel.metrics import nme

    f = sorted(HELEN_TEST.glob("*.jpg"))[3]
    faces = Labeler(model=shipped_model_path).label(Image.open(f))
    gt = read_pts(f.with_suffix(".pts"))
    best = min(faces, key=lambda x: np.linalg.norm(x.points.mean(0) - gt.mean(0)))
    assert best.points.shape == (68, 2) and best.points.dtype == np.float32
    assert nme(best.points, gt) < 0.08 and best.confidence >= 0

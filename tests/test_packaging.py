"""`pip install .` (not only editable) carries the shipped weights, their ONNX exports, what the
model card links to and the editor's web code; the base install does not pull torch."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_weights_and_web_assets(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    wheel = next(tmp_path.glob("autolabel-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for need in ["autolabel/shipped/landmarks.pt", "autolabel/shipped/README.md", "autolabel/shipped/recipe.toml",
                 "autolabel/web/editor.js", "autolabel/web/editor.css", "autolabel/web/editor.html", "autolabel/cli.py",
                 "autolabel/shipped/landmarks.int8.onnx", "autolabel/shipped/landmarks.fp32.onnx", "autolabel/shipped/reports/eval.json"]:
        assert need in names, need
    # every file the model card links to or names (reports/..., recipes) resolves in an install
    card = (REPO / "model" / "README.md").read_text()
    linked = set(re.findall(r"(?:\]\(|`)((?:reports/)?[\w.-]+\.(?:png|txt|toml|json|md))[)`]", card))
    assert {"reports/ced.png", "reports/eval.txt"} <= linked
    for f in sorted(linked):
        if (REPO / "model" / f).is_file():
            assert f"autolabel/shipped/{f}" in names, f
    # torch is the train extra's, not the base install's
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert any("onnxruntime" in r for r in base) and not any(re.search(r"\b(torch|torchvision)\b", r) for r in base), base
    assert any(r.startswith("Requires-Dist: torch==") and 'extra == "train"' in r for r in requires), requires

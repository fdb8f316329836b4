"""`pip install .` (not only editable) carries the shipped weights and the editor's web code."""

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
                 "autolabel/web/editor.js", "autolabel/web/editor.css", "autolabel/web/editor.html", "autolabel/cli.py"]:
        assert need in names, need

"""The one place that knows the checkout and package layout: where the shipped model
(`model/`), the editor's browser code (`web/`) and the shared data (`../shared/data`) are.

In a checkout, `model/` and `web/` sit beside the package; `pip install .` copies them into the
package as `autolabel/shipped` and `autolabel/web` (see pyproject.toml's package-dir).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]

#: environment variable that points at the shared data folder (default ../shared/data).
DATA_ENV = "AUTOLABEL_DATA"


def _find(package: str, repo_folder: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            if Path(loc).is_dir():
                return Path(loc)
    return _REPO / repo_folder


def model_dir() -> Path:
    return _find("autolabel.shipped", "model")


def web_dir() -> Path:
    return _find("autolabel.web", "web")


def shipped_model() -> Path:
    return model_dir() / "landmarks.pt"


def shipped_eval_report() -> Path:
    """The shipped model's `autolabel eval` report (`model/reports/eval.json`)."""
    return model_dir() / "reports" / "eval.json"


def data_root() -> Path:
    """Where the shared data lives: $AUTOLABEL_DATA or ../shared/data beside the checkout."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return _REPO.parent / "shared" / "data"

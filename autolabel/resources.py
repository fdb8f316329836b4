"""Where the shipped model (`model/`) and the editor's browser code (`web/`) are.

In a checkout they sit beside the package; `pip install .` copies them into the package as
`autolabel/shipped` and `autolabel/web` (see pyproject.toml's package-dir).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


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

"""Shared fixtures: the shipped weights and a small untrained model, so pipeline tests do not
depend on training. Tests marked `needs_data` read real faces and photos from ../shared/data
(or $AUTOLABEL_DATA) and are skipped, alone, when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import DATA


def pytest_collection_modifyitems(config, items):
    if DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"shared data not found at {DATA} (set AUTOLABEL_DATA)")
    for it in items:
        if it.get_closest_marker("needs_data"):
            it.add_marker(skip)


@pytest.fixture(scope="session")
def random_model_path(tmp_path_factory) -> Path:
    """An untrained LandmarkNet saved in the autolabel format (pipeline mechanics only)."""
    import torch

    from autolabel.model import LandmarkModel, build_network

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random.pt"
    LandmarkModel(build_network(), 128, {"note": "random test model"}).save(path)
    return path


@pytest.fixture(scope="session")
def shipped_model_path() -> Path:
    from autolabel.resources import shipped_model

    p = shipped_model()
    if not p.is_file():
        pytest.fail(f"shipped weights missing at {p}")
    return p

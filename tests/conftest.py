"""Shared fixtures: real 300-W faces and photos from ../shared/data (or $AUTOLABEL_DATA), and a
small model so pipeline tests do not depend on training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autolabel.data import data_root

DATA = data_root()
HELEN_TEST = DATA / "300w" / "helen" / "testset"
PHOTOS = DATA / "photos"


def pytest_collection_modifyitems(config, items):
    if not DATA.is_dir():
        skip = pytest.mark.skip(reason=f"shared data not found at {DATA} (set AUTOLABEL_DATA)")
        for it in items:
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


def face_image(path: Path, size: tuple[int, int] | None = None):
    """A real face photo (a 300-W crop) as a PIL image, optionally resized."""
    from PIL import Image

    im = Image.open(path)
    im.load()
    return im.resize(size) if size else im


@pytest.fixture(scope="session")
def helen_faces() -> list[Path]:
    return sorted(HELEN_TEST.glob("*.jpg"))


def rng() -> np.random.Generator:
    return np.random.default_rng(0)

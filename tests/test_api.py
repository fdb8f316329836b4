"""The library API labels exactly as `autolabel run` does: same decoding (EXIF orientation,
a colour JPEG decoded straight to grey), same detector settings, same crop-and-predict path, so
the same points."""

import numpy as np
import pytest
from PIL import Image

from autolabel.formats.parquet import points_array, read_labels
from autolabel.images import load_gray
from autolabel.types import ImageError

from helpers import HELEN_TEST, PHOTOS, cli

pytestmark = pytest.mark.needs_data


def _run_points(photo, out, model) -> np.ndarray:
    cli("run", photo, "--out", out, "--model", model, "--quiet", check_rc=0)
    df = read_labels(out)
    return points_array(df[df.status == "ok"]).reshape(-1, 68, 2)


def test_label_file_and_label_agree_exactly_with_run(tmp_path, shipped_model_path):
    from autolabel import Labeler

    src = sorted(HELEN_TEST.glob("*.jpg"))[3]
    rotated = tmp_path / "rotated.jpg"  # stored sideways; its EXIF tag says "rotate 90° clockwise to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(src).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(rotated, exif=exif.tobytes(), quality=95)
    labeler = Labeler(model=shipped_model_path)
    for i, photo in enumerate([rotated, PHOTOS / "groups" / "bald_guys.jpg"]):
        ran = _run_points(photo, tmp_path / f"run{i}.parquet", shipped_model_path)
        assert len(ran) >= 1
        for faces in (labeler.label_file(photo), labeler.label(load_gray(photo))):  # the pixels run decodes
            np.testing.assert_array_equal(np.stack([f.points for f in faces]), ran)
        # Pillow's RGB decode, converted to grey: the same faces, upright, within the decode's rounding
        decoded = np.stack([f.points for f in labeler.label(Image.open(photo))])
        gap = np.abs(decoded - ran)
        assert decoded.shape == ran.shape and gap.mean() < 0.15 and gap.max() < 1.5  # measured: 0.08-0.09, 0.7-1.0 px


def test_label_file_names_an_unreadable_file(tmp_path, random_model_path):
    from autolabel import Labeler

    bad = tmp_path / "text.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="text.jpg"):
        Labeler(model=random_model_path).label_file(bad)

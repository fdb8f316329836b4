"""Discovery and decoding: every odd input is handled or refused with a clear reason."""

import os

import numpy as np
import pytest
from PIL import Image

from autolabel.images import count_non_images, discover, load_gray, load_image
from autolabel.types import ImageError

from helpers import HELEN_TEST, make_bomb_png


def test_discovery_is_recursive_sorted_case_insensitive_and_loop_safe(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    for name in ["b/c/z.JPG", "b/a.png", "a.TIFF", "b/c/y.webp", "notes.txt", "b/x.jpeg.bak"]:
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "b", tmp_path / "b" / "c" / "loop")  # a symlink loop
    found = [f.relative_to(tmp_path).as_posix() for _, f in discover([tmp_path])]
    assert found == ["a.TIFF", "b/a.png", "b/c/y.webp", "b/c/z.JPG"]
    assert count_non_images([tmp_path]) == 2
    only = [f.name for _, f in discover([tmp_path], ["*.png", "b/c/*.webp"])]
    assert only == ["a.png", "y.webp"]


@pytest.mark.needs_data
def test_exif_orientation_is_applied(tmp_path):
    src = Image.open(next(HELEN_TEST.glob("*.jpg"))).convert("RGB")
    stored = src.transpose(Image.Transpose.ROTATE_90)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and tagged "rotate 90 clockwise to view", which undoes ROTATE_90 (counter-clockwise)
    stored.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    up = load_image(tmp_path / "r.jpg")
    assert up.size == src.size
    diff = np.abs(np.asarray(up, np.int16) - np.asarray(src, np.int16)).mean()
    assert diff < 4  # only JPEG noise


@pytest.mark.needs_data
@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1", "LA"])
def test_any_mode_decodes_to_8bit(tmp_path, mode):
    src = Image.open(next(HELEN_TEST.glob("*.jpg"))).convert("RGB")
    if mode == "I;16":
        img = Image.fromarray(np.asarray(src.convert("L"), np.uint16) * 257)
        path = tmp_path / "x.png"
    else:
        img = src.convert(mode)
        path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    out = load_image(path)
    assert out.mode in ("L", "RGB") and out.size == src.size
    if mode in ("L", "I;16", "RGBA", "CMYK"):  # same content as the grey original, within rounding
        g = np.asarray(out.convert("L"), np.int16)
        assert np.abs(g - np.asarray(src.convert("L"), np.int16)).mean() < 6


@pytest.mark.needs_data
def test_load_gray_decodes_a_colour_jpeg_to_its_luma(tmp_path):
    """`load_gray` (every labelling path's decode) has libjpeg decode a colour JPEG's luma only: the
    grey Pillow gets from the RGB decode, to within rounding (and clipping of saturated colours in
    the RGB decode), and EXIF orientation still applied."""
    src = next(HELEN_TEST.glob("*.jpg"))
    via_rgb = np.asarray(load_image(src).convert("L"), np.int16)
    luma = load_gray(src)
    assert luma.mode == "L" and luma.size == (via_rgb.shape[1], via_rgb.shape[0])
    diff = np.abs(np.asarray(luma, np.int16) - via_rgb)
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 2
    rgb = Image.open(src).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    assert load_gray(tmp_path / "r.jpg").size == rgb.size  # upright
    for name, img in (("g.png", rgb), ("c.jpg", rgb.convert("CMYK")), ("l.jpg", rgb.convert("L"))):
        img.save(tmp_path / name)  # not a colour JPEG (CMYK: libjpeg has no luma of it): decoded, then converted
        np.testing.assert_array_equal(np.asarray(load_gray(tmp_path / name)), np.asarray(load_image(tmp_path / name).convert("L")))


@pytest.mark.needs_data
def test_bad_files_raise_image_error_with_reason(tmp_path):
    good = next(HELEN_TEST.glob("*.jpg")).read_bytes()
    cases = {
        "empty.jpg": (b"", "cannot decode"),
        "text.jpg": (b"this is not a picture\n" * 10, "cannot decode"),
        "truncated.jpg": (good[: len(good) // 2], "cannot decode"),
        "corrupt.png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "cannot decode"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError, match=msg):
            load_image(tmp_path / name)
    make_bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "gone.jpg")


@pytest.mark.needs_data
def test_unreadable_file_is_an_error_row_reason(tmp_path):
    f = tmp_path / "locked.jpg"
    f.write_bytes(next(HELEN_TEST.glob("*.jpg")).read_bytes())
    f.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(ImageError, match="permission denied"):
            load_image(f)
        return
    # root reads anything: try as an unprivileged user in a forked child
    import pwd

    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            load_image(f)
            msg = "no error"
        except ImageError as e:
            msg = str(e)
        except BaseException as e:  # noqa: BLE001
            msg = f"{type(e).__name__}: {e}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    msg = os.read(r, 1000).decode()
    os.waitpid(pid, 0)
    assert msg == "permission denied"

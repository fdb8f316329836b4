"""The command line's contract (issue 14): the output format follows `--out`, usage errors exit 2
in one line before any work, `--quiet/-q`, `--model` and `--workers` mean the same on every
command, and long steps show progress with a total."""

import json
import socket
import subprocess
import sys
import threading
import time

import click
import pytest
import typer
from PIL import Image

from autolabel.cli import app
from autolabel.formats import EXTENSIONS, FOLDER_FORMAT, WRITERS, guess_format
from autolabel.training.loop import TrainConfig
from autolabel.types import UsageError

from helpers import HELEN_TEST, REPO, cli


def _commands() -> dict[str, click.Command]:
    return typer.main.get_command(app).commands


# ------------------------------------------------------------------ the format follows --out
def test_every_known_extension_picks_its_format(tmp_path):
    assert EXTENSIONS[".parquet"] == "parquet" and FOLDER_FORMAT == "pts"
    for ext, fmt in EXTENSIONS.items():
        if fmt in WRITERS:
            assert guess_format(tmp_path / f"labels{ext}", None) == fmt
            assert guess_format(tmp_path / f"labels{ext.upper()}", None) == fmt
    assert guess_format(tmp_path / "labels", None) == "pts"
    (tmp_path / "existing.d").mkdir()
    assert guess_format(tmp_path / "existing.d", None) == "pts"  # an existing folder, whatever its name
    assert guess_format(tmp_path / "whatever.txt", "pts") == "pts"  # --format wins


def test_unknown_extension_is_a_usage_error_naming_the_formats(tmp_path):
    with pytest.raises(UsageError, match=r"\.parquet") as e:
        guess_format(tmp_path / "labels.txt", None)
    assert "a folder" in str(e.value)
    img = tmp_path / "in" / "sky.jpg"
    img.parent.mkdir()
    Image.new("RGB", (64, 48)).save(img)
    p = cli("run", img, "--out", tmp_path / "labels.txt", "--quiet", check_rc=2)
    assert p.stderr.count("\n") == 1 and "labels.txt" in p.stderr and ".parquet" in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["in"]  # nothing written, no stray folder


@pytest.mark.parametrize("ext", [e for e, f in EXTENSIONS.items() if f in WRITERS and e != ".parquet"])
def test_run_writes_the_format_its_extension_names(ext, tmp_path, random_model_path):
    from autolabel import labelling

    img = tmp_path / "in" / "sky.jpg"
    img.parent.mkdir()
    Image.new("RGB", (64, 48)).save(img)
    out = tmp_path / f"labels{ext}"
    labelling.run([img.parent], out, model=random_model_path, workers=0, progress=False)
    assert out.is_file() and not (tmp_path / "labels").exists()
    if ext == ".json":
        assert "images" in json.loads(out.read_text())  # COCO


# ------------------------------------------------------------------ the same flags everywhere
def _option(cmd: click.Command, name: str) -> click.Option | None:
    return next((p for p in cmd.params if p.name == name), None)


def test_quiet_model_and_workers_mean_the_same_on_every_command():
    cmds = _commands()
    expect = {"quiet": {"run", "train", "eval", "finetune"}, "model": {"run", "eval", "review", "finetune"}, "workers": {"run"},
              "runtime": {"run", "eval"}}
    for name, where in expect.items():
        opts = {c: _option(cmds[c], name) for c in where}
        assert all(opts.values()), f"--{name} missing on {[c for c, o in opts.items() if o is None]}"
        first = next(iter(opts.values()))
        for c, o in opts.items():
            assert (o.opts, o.help, o.default) == (first.opts, first.help, first.default), (name, c)
    assert _option(cmds["run"], "quiet").opts == ["--quiet", "-q"] and _option(cmds["eval"], "model").opts == ["--model", "-m"]


# ------------------------------------------------------------------ what a command accepts
def test_eval_on_a_folder_without_pts_exits_2(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "photos" / "a.jpg")
    p = cli("eval", "--data", tmp_path / "photos", "--out", tmp_path / "ev", "--quiet", check_rc=2)
    assert p.stderr.count("\n") == 1 and "no annotated faces" in p.stderr and ".pts" in p.stderr
    assert not (tmp_path / "ev").exists()


def test_review_names_what_it_accepts(tmp_path):
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "a.pts").write_text("version: 1\nn_points: 68\n{\n}\n")
    for target in (tmp_path / "faces", tmp_path / "none.parquet"):
        p = cli("review", target, "--corrections", tmp_path / "corr", check_rc=2)
        assert p.stderr.count("\n") == 1 and "labels.parquet" in p.stderr and "autolabel run" in p.stderr, p.stderr
    assert not (tmp_path / "corr").exists()


def test_bad_recipe_is_one_line_before_any_work(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('epochs = "ten"\n')
    t0 = time.time()
    p = cli("train", "--recipe", recipe, "--out", tmp_path / "run", check_rc=2)
    assert p.stderr.count("\n") == 1 and "epochs" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists() and time.time() - t0 < 60


@pytest.mark.parametrize("recipe", ["recipe_v2_restart.toml", "recipe_v2_stage2.toml"])
def test_a_recipe_that_continues_other_weights_needs_init(tmp_path, recipe):
    # without --init these would silently train from scratch: refused before any work
    p = cli("train", "--recipe", REPO / "model" / recipe, "--out", tmp_path / "run", check_rc=2)
    assert p.stderr.count("\n") == 1 and "--init" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ progress
def test_run_progress_bar_has_a_total(tmp_path, random_model_path, capsys):
    from autolabel import labelling

    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 48), (i, i, i)).save(d / f"{i}.jpg")
    labelling.run([d], tmp_path / "l.parquet", model=random_model_path, workers=0, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "100%" in err


@pytest.mark.needs_data
def test_eval_shows_progress_after_detection(tmp_path, random_model_path, capsys):
    from autolabel import evaluate

    d = tmp_path / "faces"
    d.mkdir()
    for f in sorted(HELEN_TEST.glob("*.jpg"))[:2]:
        (d / f.name).symlink_to(f)
        (d / f.with_suffix(".pts").name).symlink_to(f.with_suffix(".pts"))
    evaluate.eval_model([d], tmp_path / "ev", random_model_path, protocols=("gt",), progress=True)
    err = capsys.readouterr().err
    assert "gt: autolabel" in err and "gt: dlib" in err and "2/2" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.needs_data
def test_review_prints_its_address_and_no_share_hint(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from autolabel.formats.parquet import SCHEMA

    img = min(HELEN_TEST.glob("*.jpg"))
    row = {"image": img.name, "abs_path": str(img), "file_size": 1, "file_mtime_ns": 1, "width": 10, "height": 10, "status": "no_face"}
    labels = tmp_path / "l.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=SCHEMA), labels)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "autolabel", "review", str(labels), "--corrections", str(tmp_path / "corr"),
                             "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(180, proc.kill)  # never hang the suite on a server that does not start
    watchdog.start()
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if f":{port}" in line:
                break
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=60)
        watchdog.cancel()
    out = "".join(lines) + rest
    assert f"http://127.0.0.1:{port}" in out and "share=True" not in out, out


# ------------------------------------------------------------------ the training recipe
SHIPPED_RECIPE = REPO / "model" / "recipe_v2.toml"


def test_shipped_recipe_is_valid():
    cfg = TrainConfig.from_toml(SHIPPED_RECIPE)
    assert cfg.epochs == 70 and cfg.augment.flip == 0.5 and cfg.arch == "resnet18-1ch-hm" and cfg.val_fraction == 0.1


@pytest.mark.parametrize("text, key", [
    ("epoch = 3", "'epoch'"),
    ('epochs = "ten"', "epochs"),
    ("epochs = 0", "epochs"),
    ("epochs = 2.5", "epochs"),
    ("batch_size = true", "batch_size"),
    ("lr = -0.1", "lr"),
    ("ema = 1.0", "ema"),
    ("context = 0.5", "context"),
    ('loss = "huber"', "loss"),
    ('train = "300w/afw"', "train"),
    ("val = [1, 2]", "val"),
    ("augment = 3", "augment"),
    ("[augment]\nflip = 2.0", "augment.flip"),
    ("[augment]\nrotate = 10", "augment.rotate"),
    ('[augment]\nscale = "big"', "augment.scale"),
    ("epochs = ", "TOML"),
    ('crop = "rotated"', "crop"),
    ("aligned_scale = 0.5", "aligned_scale"),
])
def test_recipe_mistakes_name_the_key(tmp_path, text, key):
    path = tmp_path / "r.toml"
    path.write_text(text + "\n")
    with pytest.raises(UsageError) as e:
        TrainConfig.from_toml(path)
    msg = str(e.value)
    assert key in msg and "\n" not in msg and str(path) in msg, msg


def test_recipe_overrides_are_checked_too():
    with pytest.raises(UsageError, match="epochs"):
        TrainConfig.from_toml(SHIPPED_RECIPE, epochs=0)

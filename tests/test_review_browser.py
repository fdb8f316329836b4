"""The review editor in a real browser (Debian's Chromium driven by Playwright): drag a point,
save, accept and reject with the keyboard, reload, and try to read files through the server."""

import json
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import PHOTOS

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "tests" / "artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.needs_data]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory, shipped_model_path):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    from autolabel.formats.parquet import ParquetWriter
    from autolabel.labelling import label_paths
    from autolabel.predictor import Predictor
    from autolabel.review.app import serve
    from autolabel.runtimes import make_runtime

    tmp = tmp_path_factory.mktemp("review")
    photos = tmp / "photos"
    photos.mkdir()
    for name in ["portraits", "groups"]:
        for f in sorted((PHOTOS / name).glob("*.jpg"))[:3]:
            shutil.copy(f, photos / f.name)
    labels = tmp / "labels.parquet"
    w = ParquetWriter(labels, {"model_version": "test"})
    label_paths([photos], w, Predictor(make_runtime("torch", shipped_model_path)), workers=0, progress=False)
    w.close()
    port = free_port()
    demo, session = serve(labels, tmp / "corr", port=port, model=shipped_model_path, block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "session": session, "corr": tmp / "corr", "photos": photos}
    demo.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def journal(corr: Path) -> list[dict]:
    return [json.loads(x) for x in (corr / "journal.jsonl").read_text().splitlines() if x.strip()]


def open_editor(page, url):
    page.goto(url)
    page.wait_for_selector(".al-root[data-ready='1']", timeout=60_000)
    page.wait_for_selector("circle.al-pt")


def test_drag_save_accept_reject_reload(app, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    open_editor(page, app["url"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review_editor.png"))
    face = page.evaluate("window.__autolabel.face")
    before = np.array(page.evaluate("window.__autolabel.points"))
    scale = page.evaluate("window.__autolabel.view.s")
    # drag point 30 (nose tip) by (+40, -25) screen pixels
    box = page.locator("circle.al-pt[data-i='30']").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 40, y - 25, steps=10)
    page.mouse.up()
    page.keyboard.press("s")  # save correction
    page.wait_for_function(f"document.querySelector('.al-root').dataset.key !== {json.dumps(face['key'])}")
    rec = journal(app["corr"])[-1]
    assert rec["key"] == face["key"] and rec["status"] == "corrected"
    saved = np.array(rec["points"])
    np.testing.assert_allclose(saved[30] - before[30], [40 / scale, -25 / scale], atol=0.6)
    np.testing.assert_allclose(np.delete(saved, 30, 0), np.delete(before, 30, 0), atol=1e-2)
    # accept and reject with the keyboard
    k2 = page.evaluate("window.__autolabel.face.key")
    page.keyboard.press("a")
    page.wait_for_function(f"document.querySelector('.al-root').dataset.key !== {json.dumps(k2)}")
    k3 = page.evaluate("window.__autolabel.face.key")
    page.keyboard.press("r")
    page.wait_for_function(f"document.querySelector('.al-root').dataset.key !== {json.dumps(k3)}")
    assert [(r["key"], r["status"]) for r in journal(app["corr"])][-2:] == [(k2, "accepted"), (k3, "rejected")]
    # reload: the state is kept, the queue resumes at the next face to do
    page.reload()
    open_editor(page, app["url"])
    assert "reviewed 3 /" in page.inner_text(".al-count")
    assert page.evaluate("window.__autolabel.face.key") not in (face["key"], k2, k3)
    page.select_option(".al-status", "corrected")
    page.wait_for_function(f"window.__autolabel.face && window.__autolabel.face.key === {json.dumps(face['key'])}")
    np.testing.assert_allclose(np.array(page.evaluate("window.__autolabel.points"))[30], saved[30], atol=1e-2)
    page.screenshot(path=str(ARTIFACTS / "review_editor_after.png"))
    page.close()


def test_undo_redo_and_group_toggle(app, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    open_editor(page, app["url"])
    before = page.evaluate("window.__autolabel.points")
    box = page.locator("circle.al-pt[data-i='8']").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 30, y + 30, steps=5)
    page.mouse.up()
    assert page.evaluate("window.__autolabel.points")[8] != before[8]
    page.keyboard.press("Control+z")
    assert page.evaluate("window.__autolabel.points") == before
    page.keyboard.press("Control+y")
    assert page.evaluate("window.__autolabel.points")[8] != before[8]
    n = page.locator("circle.al-pt").count()
    page.locator(".al-groups label", has_text="jaw").locator("input").uncheck()
    assert page.locator("circle.al-pt").count() == n - 17
    page.close()


def test_no_file_can_be_read_through_the_server(app):
    base = app["url"]
    some_image = str(next(app["photos"].glob("*.jpg")))
    for path in ["gradio_api/file=/etc/passwd", "gradio_api/file=" + some_image, "file=/etc/passwd",
                 "gradio_api/file=../../../../etc/passwd", "gradio_api/file=%2e%2e/%2e%2e/etc/passwd"]:
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                body = r.read()
            assert b"root:" not in body and r.status != 200, path
        except urllib.error.HTTPError as e:
            assert e.code in (403, 404), (path, e.code)
    # uploads are refused (max_file_size=1 byte)
    req = urllib.request.Request(base + "gradio_api/upload", data=b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.txt\"\r\n\r\nhello\r\n--x--\r\n",
                                 headers={"Content-Type": "multipart/form-data; boundary=x"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code in (400, 403, 413)


def test_keys_and_buttons_run_the_same_actions(app, browser):
    """Keys and toolbar buttons are two ways into one action table; the key list is drawn from it."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    open_editor(page, app["url"])
    pts = lambda: np.array(page.evaluate("window.__autolabel.points"))
    p0 = pts()
    page.keyboard.press("]")  # rotate the whole shape 2 degrees about its centroid
    p1 = pts()
    c = p0.mean(0)
    ang = np.degrees(np.arctan2(*(p1 - c)[:, ::-1].T) - np.arctan2(*(p0 - c)[:, ::-1].T))
    np.testing.assert_allclose((ang + 180) % 360 - 180, 2, atol=1e-3)
    page.keyboard.press("Shift+ArrowRight")  # nudge by one pixel
    np.testing.assert_allclose(pts() - p1, np.tile([1, 0], (68, 1)), atol=1e-6)
    page.click("[data-act='undo']")
    page.click("[data-act='undo']")
    np.testing.assert_allclose(pts(), p0, atol=1e-9)
    page.keyboard.press("Control+Shift+z")
    np.testing.assert_allclose(pts(), p1, atol=1e-9)
    # select with a band around the jaw's first points only, then scale just those
    view = page.evaluate("window.__autolabel.view")
    rect = page.locator(".al-svg").bounding_box()
    sx = lambda x, y: (rect["x"] + x * view["s"], rect["y"] + y * view["s"])
    lo, hi = p1[0:3].min(0) - 1.5, p1[0:3].max(0) + 1.5
    page.mouse.move(*sx(*lo))
    page.mouse.down()
    page.mouse.move(*sx(*hi), steps=5)
    page.mouse.up()
    assert page.locator("circle.al-pt.sel").count() >= 3
    page.keyboard.press("Escape")
    assert page.locator("circle.al-pt.sel").count() == 0
    page.keyboard.press("b")
    assert "al-on" in page.get_attribute("[data-act='addface']", "class")
    page.click("[data-act='addface']")
    assert "al-on" not in page.get_attribute("[data-act='addface']", "class")
    keys = page.inner_text(".al-keys")
    assert "→ / N next" in keys and "Ctrl+Z undo" in keys and "B draw a box" in keys
    assert not errors
    page.close()

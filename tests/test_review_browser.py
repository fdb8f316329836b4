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
from helpers import PHOTOS, cli

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
    yield {"url": f"http://127.0.0.1:{port}/", "session": session, "corr": tmp / "corr", "photos": photos, "labels": labels}
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
    # the points whose predicted error scale is large are ringed (a model with a scale: v2)
    assert page.locator("circle.al-unc").count() == len(face["uncertain_points"])
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
    # uploads are refused, whatever their size (the route answers 403)
    for content in (b"", b"h", b"hello"):
        form = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\n' + content + b"\r\n--x--\r\n"
        req = urllib.request.Request(base + "gradio_api/upload", data=form, headers={"Content-Type": "multipart/form-data; boundary=x"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 403, content


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
    pad = 12 / view["s"]  # start the band clear of the dots (12 screen pixels)
    lo, hi = p1[0:3].min(0) - pad, p1[0:3].max(0) + pad
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


# ------------------------------------------------------------------ the editor protects the person's work (issue 10)
def drag(page, selector, dx, dy):
    box = page.locator(selector).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=8)
    page.mouse.up()


def wait_key(page, key, same=True):
    op = "===" if same else "!=="
    page.wait_for_function(f"window.__autolabel.face && window.__autolabel.face.key {op} {json.dumps(key)}")


def test_unsaved_edit_survives_leaving_the_face(app, browser):
    """Drag a point, press →, press ←: the edit is still there (a journaled draft), also after a reload."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    open_editor(page, app["url"])
    key = page.evaluate("window.__autolabel.face.key")
    before = np.array(page.evaluate("window.__autolabel.points"))
    drag(page, "circle.al-pt[data-i='8']", 30, 20)  # the chin: no other dot on it
    edited = np.array(page.evaluate("window.__autolabel.points"))
    assert np.abs(edited[8] - before[8]).max() > 3
    page.keyboard.press("ArrowRight")
    wait_key(page, key, same=False)
    page.keyboard.press("ArrowLeft")
    wait_key(page, key)
    np.testing.assert_allclose(page.evaluate("window.__autolabel.points"), edited, atol=1e-2)
    assert "unsaved edits" in page.inner_text(".al-msg")
    page.reload()
    open_editor(page, app["url"])
    wait_key(page, key)
    np.testing.assert_allclose(page.evaluate("window.__autolabel.points"), edited, atol=1e-2)
    assert all(r["key"] != key for r in journal(app["corr"]))  # a draft is not a correction
    page.keyboard.press("s")  # saving it clears the draft
    wait_key(page, key, same=False)
    rec = journal(app["corr"])[-1]
    assert rec["key"] == key and rec["status"] == "corrected"
    np.testing.assert_allclose(rec["points"], edited, atol=1e-2)
    assert app["session"].drafts.get(key) is None
    page.close()


def test_conflict_lets_the_person_keep_their_edit(app, browser):
    """Two tabs on one face: the second save meets a conflict, sees the other version and chooses."""
    a = browser.new_page(viewport={"width": 1280, "height": 900})
    b = browser.new_page(viewport={"width": 1280, "height": 900})
    open_editor(a, app["url"])
    open_editor(b, app["url"])
    key = a.evaluate("window.__autolabel.face.key")
    assert b.evaluate("window.__autolabel.face.key") == key
    a.keyboard.press("a")  # tab A accepts
    wait_key(a, key, same=False)
    status_a = journal(app["corr"])[-1]["status"]
    drag(b, "circle.al-pt[data-i='30']", 25, 0)  # tab B edits, then saves
    mine = np.array(b.evaluate("window.__autolabel.points"))
    b.keyboard.press("s")
    b.wait_for_selector(".al-conflict:not([hidden])")
    assert b.locator(".al-ref[data-ref='theirs'] circle").count() == 68
    assert f"as {status_a} (revision 1)" in b.inner_text(".al-conflict")
    b.screenshot(path=str(ARTIFACTS / "review_conflict.png"))
    b.click("[data-act='keepMine']")
    wait_key(b, key, same=False)
    rec = journal(app["corr"])[-1]
    assert (rec["key"], rec["status"], rec["rev"]) == (key, "corrected", 2)
    np.testing.assert_allclose(rec["points"], mine, atol=1e-2)
    # the other choice: take the version saved elsewhere
    key2 = a.evaluate("window.__autolabel.face.key")
    b.evaluate(f"document.querySelector('.al-jump').value = {json.dumps(key2.split('#')[0])}")
    b.press(".al-jump", "Enter")
    wait_key(b, key2)
    drag(a, "circle.al-pt[data-i='8']", 0, 20)
    theirs = np.array(a.evaluate("window.__autolabel.points"))
    a.keyboard.press("s")
    wait_key(a, key2, same=False)
    b.keyboard.press("a")
    b.wait_for_selector(".al-conflict:not([hidden])")
    b.click("[data-act='takeTheirs']")
    np.testing.assert_allclose(b.evaluate("window.__autolabel.points"), theirs, atol=1e-2)
    assert b.evaluate("window.__autolabel.face.rev") == 1 and b.locator(".al-conflict").is_hidden()
    a.close()
    b.close()


def test_point_size_follows_zoom_model_overlay_and_reset(app, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    open_editor(page, app["url"])
    size = lambda: page.locator("circle.al-pt[data-i='30']").bounding_box()["width"]
    s0, d0 = page.evaluate("window.__autolabel.view.s"), size()
    stage = page.locator(".al-stage").bounding_box()
    page.mouse.move(stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2)
    for _ in range(3):
        page.mouse.wheel(0, -300)
    page.wait_for_function(f"window.__autolabel.view.s > {2 * s0}")
    d1 = size()
    assert d0 >= 9 and abs(d1 - d0) < 1, (d0, d1)  # about 10 screen pixels at any zoom
    page.keyboard.press("0")
    model = np.array(page.evaluate("window.__autolabel.face.model_points"))
    assert page.locator(".al-ref[data-ref='model'] circle").count() == 0
    page.keyboard.press("o")  # overlay of the model's points
    assert page.locator(".al-ref[data-ref='model'] circle").count() == 68
    drag(page, "circle.al-pt[data-i='8']", 0, 25)
    ref8 = page.locator(".al-ref[data-ref='model'] circle[data-i='8']")
    assert abs(float(ref8.get_attribute("cx")) - model[8, 0]) < 1e-3 and abs(float(ref8.get_attribute("cy")) - model[8, 1]) < 1e-3
    assert np.abs(np.array(page.evaluate("window.__autolabel.points"))[8] - model[8]).max() > 3
    page.screenshot(path=str(ARTIFACTS / "review_overlay.png"))
    page.keyboard.press("m")  # reset to the model's points
    np.testing.assert_allclose(page.evaluate("window.__autolabel.points"), model, atol=1e-6)
    page.keyboard.press("Control+z")
    assert np.abs(np.array(page.evaluate("window.__autolabel.points"))[8] - model[8]).max() > 3
    page.close()


def test_occluded_flags_box_and_reviewer_are_saved(app, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    open_editor(page, app["url"])
    key = page.evaluate("window.__autolabel.face.key")
    box0 = page.evaluate("window.__autolabel.box")
    page.keyboard.press("v")  # nothing selected: says what to do
    assert "select" in page.inner_text(".al-msg") and page.locator("circle.al-pt.occ").count() == 0
    page.evaluate("(a => { a.state.sel = new Set([36, 37]); a.render.draw(); })(window.__autolabel)")  # eye dots sit close
    page.keyboard.press("v")
    assert page.locator("circle.al-pt.occ").count() == 2
    scale = page.evaluate("window.__autolabel.view.s")
    drag(page, ".al-handle[data-c='2']", 20, 10)  # the box's bottom-right corner
    box1 = page.evaluate("window.__autolabel.box")
    np.testing.assert_allclose(np.subtract(box1, box0), [0, 0, 20 / scale, 10 / scale], atol=0.6)
    page.keyboard.press("s")
    wait_key(page, key, same=False)
    rec = journal(app["corr"])[-1]
    assert rec["key"] == key and [i for i, o in enumerate(rec["occluded"]) if o] == [36, 37]
    np.testing.assert_allclose(rec["box"], box1, atol=1e-3)
    assert rec["user"] == app["session"].user
    app["session"].state_writer.wait()
    import pyarrow.parquet as pq

    row = pq.read_table(app["corr"] / "corrections.parquet").to_pandas().set_index("key").loc[key]
    assert list(np.flatnonzero(row["occluded"])) == [36, 37] and row["user"] == rec["user"]
    page.close()


def test_brightness_strip_and_toolbar(app, browser):
    for width in (1200, 1400):
        page = browser.new_page(viewport={"width": width, "height": 900})
        open_editor(page, app["url"])
        mids = page.evaluate("[...document.querySelectorAll('.al-bar > *')].map(e => e.getBoundingClientRect())"
                             ".filter(r => r.height > 0).map(r => r.top + r.height / 2)")
        assert len(mids) >= 12 and max(mids) - min(mids) < 6, mids  # one line
        assert page.evaluate("(b => b.scrollWidth <= b.clientWidth)(document.querySelector('.al-bar'))")
        if width == 1200:
            page.screenshot(path=str(ARTIFACTS / "review_toolbar_1200.png"))
        page.close()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    open_editor(page, app["url"])
    page.evaluate("(i => { i.value = 180; i.dispatchEvent(new Event('input')); })(document.querySelector('[data-look=brightness]'))")
    assert "brightness(180%)" in page.get_attribute(".al-img", "style")
    page.select_option(".al-status", "all")
    page.wait_for_function("document.querySelectorAll('.al-thumb img').length === 9")
    n = page.locator(".al-thumb").count()
    assert n >= 3 and page.locator(".al-thumb.al-here").count() == 1
    page.locator(".al-thumb").nth(2).click()
    page.wait_for_function("window.__autolabel.face.position === 3")
    page.close()


def test_server_functions_refuse_nonsense_with_a_message(app):
    """Every browser function answers bad input with a message, never an HTTP 500."""
    base = app["url"]
    with urllib.request.urlopen(base + "config", timeout=10) as r:
        cfg = json.load(r)
    comp = next(c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == "autolabel-editor")
    s = app["session"]
    key, row = s.q.key(0), 0
    img = s.q.image[0]
    bad = {
        "act": [[key, "corrected", [[1e30, 1e30]] * 68, 0], [img + "#+999", "accepted", [[10, 10]] * 68, 0], [key, "corrected", "x", 0],
                [key, "nonsense", [[10, 10]] * 68, 0], [key, "corrected", [[10, 10]] * 68, 0, {"occluded": [True]}], [], None, "x"],
        "add_face": [[-1, [10, 10, 100, 100]], [10**9, [10, 10, 100, 100]], [row, [0, 0, "a", 1]], [row, [0, 0, 1e9, 1e9]]],
        "step": [[-5, 1, "todo", ""], [row, 7, "todo", ""], [row, 1, "bogus", ""], [row, 1, "todo", 5]],
        "jump": [[{"a": 1}, "todo", ""]], "first": [[1, 2], ["todo", "", "extra"]],
        "draft": [[key, 0, [[None, 0]] * 68, {}], ["nope#3", 0, [[1, 1]] * 68, {}]],
        "strip": [["x", "todo", ""]],
    }
    for fn, cases in bad.items():
        for data in cases:
            body = json.dumps({"session_hash": "t", "component_id": comp, "fn_name": fn, "data": data}).encode()
            req = urllib.request.Request(base + "gradio_api/component_server", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                res = json.load(r)
            assert r.status == 200 and res["ok"] is False and res["message"], (fn, data, res)
    assert all(k != img + "#+999" for k in s.store.state)


def test_a_second_server_on_the_same_corrections_folder_is_refused(app):
    """It would not see the first server's saves and would overwrite them: refused at once,
    naming the holder."""
    from autolabel.review.app import serve
    from autolabel.types import UsageError

    before = {p.name: p.stat().st_mtime_ns for p in app["corr"].iterdir()}
    with pytest.raises(UsageError, match=r"in use by another autolabel review server \(pid \d+.*open that server's page"):
        serve(app["labels"], app["corr"], port=free_port(), block=False)
    assert {p.name: p.stat().st_mtime_ns for p in app["corr"].iterdir()} == before  # nothing in the folder touched
    r = cli("review", app["labels"], "--corrections", app["corr"], "--port", str(free_port()), check_rc=2)
    assert "in use by another autolabel review server" in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in app["corr"].iterdir()} == before


def test_login_guesses_are_slowed(app, tmp_path):
    """With passwords, failed logins in a row wait longer and longer; the right one still opens."""
    import time
    import urllib.parse

    from autolabel.review.app import serve

    port = free_port()
    demo, _ = serve(app["labels"], tmp_path / "corr", port=port, block=False, auth={"ann": "s3cret"}, auth_delay=0.2)

    def login(password):
        data = urllib.parse.urlencode({"username": "ann", "password": password}).encode()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", data=data, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        t0 = time.perf_counter()
        assert [login(p) for p in ("a", "b", "c", "d")] == [400] * 4
        assert time.perf_counter() - t0 >= 0.2 + 0.4 + 0.8  # unslowed, 4 tries take a few ms
        assert login("s3cret") == 200
        with pytest.raises(urllib.error.HTTPError):  # the editor itself needs the login
            urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10)
    finally:
        demo.close()

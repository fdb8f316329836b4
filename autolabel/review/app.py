"""`autolabel review`: the Gradio wiring around ReviewSession (no logic here).

The editor is a `gr.HTML` whose browser code lives in `web/` (editor.html/.css/.js). It talks
to Python only through `server_functions`; images travel as data: URLs of the labelled files,
so Gradio serves no file path at all (no allowed_paths), and the upload routes answer 403.
Every browser call goes through `answer`: bad input comes back as a message, never an HTTP 500.
"""

from __future__ import annotations

import atexit
import getpass
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from starlette.middleware import Middleware

from autolabel.files import OutputLock
from autolabel.formats.corrections import CorrectionStore
from autolabel.labelling import Labeler
from autolabel.markup import GROUP_COLORS, GROUPS, connections
from autolabel.resources import web_dir
from autolabel.review.access import RefuseUploads, SlowAuth, exposure_warning
from autolabel.review.queue import Queue
from autolabel.review.session import InputError, ReviewSession, StateWriter
from autolabel.types import AutolabelError, UsageError

log = logging.getLogger("autolabel.review")

EDITOR_SCRIPTS = ("editor-state.js", "editor-render.js", "editor-input.js", "editor.js")


def editor_assets() -> tuple[str, str, str]:
    d = web_dir()
    cfg = {"groups": [[g, a, b] for g, (a, b, _) in GROUPS.items()], "colors": GROUP_COLORS, "edges": connections()}
    html = (d / "editor.html").read_text() + f'<div class="al-config" hidden>{json.dumps(cfg)}</div>'
    # js_on_load takes one script: the state, rendering and input parts, then the wiring
    js = "\n".join((d / name).read_text() for name in EDITOR_SCRIPTS)
    return html, (d / "editor.css").read_text(), js


def login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        return ""


def browser_api(session: ReviewSession) -> dict[str, Callable[[list, str | None], dict]]:
    """The functions the editor calls, by name: each takes the browser's argument list and the
    logged-in user (None without --auth)."""
    return {
        "info": lambda a, user: session.info(),
        "first": lambda a, user: session.first(*a),
        "step": lambda a, user: session.step(*a),
        "jump": lambda a, user: session.jump(*a),
        "act": lambda a, user: session.act(*a[:4], **_extras(a[4:]), user=user),
        "add_face": lambda a, user: session.add_face(*a),
        "draft": lambda a, user: session.draft(*a, user=user),
        "strip": lambda a, user: session.strip(*a[:3]),
    }


def _extras(rest: list) -> dict:
    extra = rest[0] if rest else {}
    if not isinstance(extra, dict) or set(extra) - {"occluded", "box"}:
        raise InputError("the action's extras are {occluded, box}")
    return extra


def answer(name: str, fn, args, user: str | None) -> dict:
    """Call one browser function; every failure becomes a message for the page, never an HTTP 500."""
    try:
        if name != "info" and not isinstance(args, list):
            raise InputError(f"{name}: expected a list of arguments")
        return fn(args, user)
    except AutolabelError as e:
        return {"ok": False, "error": str(e), "message": str(e)}
    except (TypeError, ValueError, KeyError, IndexError) as e:  # wrong number or kind of arguments
        return {"ok": False, "error": f"bad request to {name}: {e}", "message": f"bad request to {name}: {e}"}
    except Exception as e:
        log.exception("review: %s failed", name)
        return {"ok": False, "error": f"{name} failed on the server: {e}", "message": f"{name} failed on the server: {e}"}


def build_app(session: ReviewSession, title: str = "autolabel review"):
    import gradio as gr

    html, css, js = editor_assets()

    def expose(name, fn):
        def server_fn(args=None, request=None):
            return answer(name, fn, args, getattr(request, "username", None))

        server_fn.__name__ = server_fn.__qualname__ = name
        server_fn.__annotations__ = {"request": gr.Request}  # Gradio passes the request (who is logged in)
        return server_fn

    fns = [expose(name, fn) for name, fn in browser_api(session).items()]
    with gr.Blocks(title=title) as demo:
        gr.HTML(value="", html_template=html, css_template=css, js_on_load=js, server_functions=fns, elem_id="autolabel-editor")
    return demo


def review_lock(corrections: Path) -> OutputLock:
    """The corrections folder's lock, taken (the folder is made): one server per folder, since a
    second would not see the first's saves and would overwrite them (one server takes many
    reviewers: each opens its page). UsageError naming the holder when it is taken."""
    try:
        Path(corrections).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write corrections to {corrections}: {e.strerror or e}") from None
    lock = OutputLock(Path(corrections) / ".review.lock", f"the corrections folder {corrections}", by="review server",
                      hint="open that server's page instead (many reviewers can share one), or give another --corrections")
    lock.acquire()
    return lock


def serve(labels: Path, corrections: Path, root: Path | None = None, host: str = "127.0.0.1", port: int = 7860,
          auth: dict[str, str] | None = None, model: Path | None = None, open_browser: bool = False, block: bool = True,
          user: str | None = None, auth_delay: float = 0.5, lock: OutputLock | None = None):
    """Take the corrections folder's lock (`review_lock`, unless `lock` is the one already taken),
    open the store and the queue and start the server; closing the app lets go of the lock.

    auth: user -> password (checked by SlowAuth); user: the reviewer's name written in each
    journal record when nobody logs in (default: the login name on this machine)."""
    lock = review_lock(corrections) if lock is None else lock
    try:
        queue = Queue.from_parquet(labels, root)
        store = CorrectionStore(corrections, labels, root)
    except BaseException:
        lock.release()
        raise
    atexit.register(lock.release)
    writer = StateWriter(store)
    atexit.register(store.close)

    def labeler():  # loads the model only when a face is added
        return Labeler(model)

    session = ReviewSession(queue, store, labeler, user=login_name() if user is None else user, state_writer=writer)
    warning = exposure_warning(host, bool(auth))
    if warning:
        log.warning(warning)
        print(f"autolabel: warning: {warning}", file=sys.stderr)
    demo = build_app(session)
    close = demo.close

    def close_and_unlock(*a, **kw):
        try:
            return close(*a, **kw)
        finally:
            lock.release()

    demo.close = close_and_unlock
    try:
        demo.launch(server_name=host, server_port=port, auth=SlowAuth(auth, base=auth_delay).check if auth else None,
                    inbrowser=open_browser, prevent_thread_lock=not block, max_file_size=1, show_error=True, quiet=not block,
                    app_kwargs={"middleware": [Middleware(RefuseUploads)]})
    except BaseException:
        lock.release()
        raise
    return demo, session

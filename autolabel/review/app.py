"""`autolabel review`: the Gradio wiring around ReviewSession (no logic here).

The editor is a `gr.HTML` whose browser code lives in `web/` (editor.html/.css/.js). It talks
to Python only through `server_functions`; images travel as data: URLs of the labelled files,
so Gradio serves no file path at all (no allowed_paths), and uploads are refused.
"""

from __future__ import annotations

import atexit
import json
from pathlib import Path

from autolabel.formats.corrections import CorrectionStore
from autolabel.labelling import Labeler
from autolabel.markup import GROUP_COLORS, GROUPS, connections
from autolabel.resources import web_dir
from autolabel.review.queue import Queue
from autolabel.review.session import ReviewSession

EDITOR_SCRIPTS = ("editor-state.js", "editor-render.js", "editor-input.js", "editor.js")


def editor_assets() -> tuple[str, str, str]:
    d = web_dir()
    cfg = {"groups": [[g, a, b] for g, (a, b, _) in GROUPS.items()], "colors": GROUP_COLORS, "edges": connections()}
    html = (d / "editor.html").read_text() + f'<div class="al-config" hidden>{json.dumps(cfg)}</div>'
    # js_on_load takes one script: the state, rendering and input parts, then the wiring
    js = "\n".join((d / name).read_text() for name in EDITOR_SCRIPTS)
    return html, (d / "editor.css").read_text(), js


def build_app(session: ReviewSession, title: str = "autolabel review"):
    import gradio as gr

    html, css, js = editor_assets()

    # Server functions: Gradio passes the browser's arguments as one list. Thin, named
    # wrappers keep the browser's API small and explicit.
    def info(*_):
        return session.info()

    def first(args):
        status, folder = args
        return session.first(status, folder)

    def step(args):
        row, direction, status, folder = args
        return session.step(int(row), int(direction), status, folder)

    def jump(args):
        text, status, folder = args
        return session.jump(str(text), status, folder)

    def act(args):
        key, status, points, base_rev = args
        return session.act(str(key), str(status), points, int(base_rev))

    def add_face(args):
        row, box = args
        return session.add_face(int(row), box)

    with gr.Blocks(title=title) as demo:
        gr.HTML(value="", html_template=html, css_template=css, js_on_load=js,
                server_functions=[info, first, step, jump, act, add_face], elem_id="autolabel-editor")
    return demo


def serve(labels: Path, corrections: Path, root: Path | None = None, host: str = "127.0.0.1", port: int = 7860,
          auth: tuple[str, str] | None = None, model: Path | None = None, open_browser: bool = False, block: bool = True):
    """Open the store and the queue and start the server."""
    queue = Queue.from_parquet(labels, root)
    store = CorrectionStore(corrections, labels, root)
    atexit.register(store.close)

    def labeler():  # loads torch and the model only when a face is added
        return Labeler(model)

    session = ReviewSession(queue, store, labeler)
    demo = build_app(session)
    demo.launch(server_name=host, server_port=port, auth=auth, inbrowser=open_browser, prevent_thread_lock=not block,
                max_file_size=1, show_error=True, quiet=not block)
    return demo, session

"""Unsaved edits, kept per face in `drafts.jsonl` beside the corrections journal.

A draft is what a person changed on a face but has not saved (accepted, corrected, ...). The
editor sends one shortly after each edit and again when leaving the face, so moving on,
reloading or closing the tab loses nothing; saving the face clears it. Drafts are not
corrections: export and finetune never read them.

Each draft is a line appended and fsynced like the journal; the latest line per face wins and
a line with `"points": null` clears the face's draft. Opening the store rewrites the file with
the live drafts only (atomically), which also drops a line cut short by a crash.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from autolabel.files import atomic_write_text

log = logging.getLogger("autolabel.review")

DRAFTS = "drafts.jsonl"


class DraftStore:
    """Latest unsaved edit per face key. Thread-safe."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / DRAFTS
        self.lock = threading.Lock()
        self.drafts: dict[str, dict] = {}
        if self.path.is_file():
            for n, line in enumerate(self.path.read_bytes().splitlines(), 1):
                try:
                    rec = json.loads(line)
                    key = str(rec["key"])
                except (ValueError, KeyError, TypeError):
                    log.warning("%s line %d skipped", self.path, n)
                    continue
                if rec.get("points") is None:
                    self.drafts.pop(key, None)
                else:
                    self.drafts[key] = rec
            atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.drafts.values()))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open while the server runs)

    def get(self, key: str) -> dict | None:
        return self.drafts.get(key)

    def put(self, key: str, base_rev: int, points: list | None, occluded: list[bool] | None = None,
            box: list[float] | None = None, user: str = "") -> None:
        """Keep (or with points=None, drop) the draft of face `key`, edited from revision base_rev."""
        rec = {"key": key, "base_rev": int(base_rev), "points": points, "occluded": occluded, "box": box, "user": user, "ts": time.time()}
        with self.lock:
            if points is None and key not in self.drafts:
                return
            self._file.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            if points is None:
                self.drafts.pop(key, None)
            else:
                self.drafts[key] = rec

    def close(self) -> None:
        self._file.close()

"""Output formats: the `Writer` contract, documented once, and an explicit name -> writer
registry that feeds `autolabel run --format`.

Modules: `parquet.py` (one row per face), `pts.py` (the 300-W `.pts` file itself),
`pts_folder.py` (a 300-W folder of `.pts` files), `corrections.py` (the review corrections
journal, reading it back, and its export as a 300-W folder); the interchange formats `coco.py`,
`dlib_xml.py`, `csv_wide.py`, `label_studio.py` on `labelset.py` (the `LabelSet` every reader
returns, the streaming single-file writer they share). `READERS` feeds every command that reads
labels (`export`, `review`, `finetune --from`, `audit`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Protocol

from autolabel.formats.labelset import LabelSet
from autolabel.types import ImageResult, UsageError


class Writer(Protocol):
    """What every output format honours, so `label_paths` and the CLI treat them all alike.

    Made as `factory(out, metadata=None, overwrite=False)`:
    - `metadata`: the run's description (autolabel_version, model_version, model_path,
      detector settings, command). Every writer stores it with its output, as its format
      allows (Parquet: the file's `autolabel` key-value metadata; a folder: `run.json`).
    - `overwrite`: start over instead of resuming.

    - `done_keys()`: abs_path -> (file size, mtime_ns) of images already labelled (ok or
      no_face) in `out`; failed images are not done, so a rerun retries them.
    - `write_result(result, rel, stat)`: one image's result; `rel` is its path relative to
      the folder given (posix), `stat` its (size, mtime_ns) or None.
    - `flush()`: make everything written so far durable (a kill loses nothing flushed).
    - `close()`: flush and finish the output (after this `out` is complete).
    """

    def done_keys(self) -> dict[str, tuple[int, int]]: ...

    def write_result(self, result: ImageResult, rel: str, stat: tuple[int, int] | None) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def is_parquet_dataset(out: Path) -> bool:
    """Whether Parquet output to `out` is a dataset (a folder of part files) rather than one file:
    an existing folder, or a name without the .parquet suffix."""
    return Path(out).is_dir() or Path(out).suffix.lower() != ".parquet"


def _parquet(out: Path, **kw) -> Writer:
    from autolabel.formats.parquet import ParquetDatasetWriter, ParquetWriter

    return (ParquetDatasetWriter if is_parquet_dataset(out) else ParquetWriter)(out, **kw)


def _pts(out: Path, **kw) -> Writer:
    from autolabel.formats.pts_folder import PtsFolderWriter

    return PtsFolderWriter(out, **kw)


def _single_file(module: str, cls: str) -> Callable[..., Writer]:
    """A factory for an interchange writer (`labelset.PartsWriter`), imported when made."""

    def make(out: Path, **kw) -> Writer:
        return getattr(importlib.import_module(f"autolabel.formats.{module}"), cls)(out, **kw)

    return make


#: name -> factory(out, metadata=None, overwrite=False)
WRITERS: dict[str, Callable[..., Writer]] = {
    "parquet": _parquet,
    "pts": _pts,
    "coco": _single_file("coco", "CocoWriter"),
    "dlib": _single_file("dlib_xml", "DlibXmlWriter"),
    "csv": _single_file("csv_wide", "CsvWriter"),
    "label-studio": _single_file("label_studio", "LabelStudioWriter"),
}


def _reader(module: str) -> Callable[..., LabelSet]:
    def read(path: Path, root: Path | None = None, check_images: bool = True) -> LabelSet:
        return importlib.import_module(f"autolabel.formats.{module}").read(path, root=root, check_images=check_images)

    return read


#: name -> read(path, root=None, check_images=True) -> LabelSet: every reader returns the same
#: in-memory form and reports bad items in it (`LabelSet.skipped`) instead of raising
READERS: dict[str, Callable[..., LabelSet]] = {
    "parquet": _reader("parquet"),
    "pts": _reader("pts_folder"),
    "corrections": _reader("corrections"),
    "coco": _reader("coco"),
    "dlib": _reader("dlib_xml"),
    "csv": _reader("csv_wide"),
    "label-studio": _reader("label_studio"),
}


#: `--out` suffix -> the format it picks (only formats registered in WRITERS count); an `--out`
#: without a suffix, or an existing folder, is a folder of FOLDER_FORMAT files. Label Studio
#: also writes .json: ask for it with `--format label-studio`.
EXTENSIONS: dict[str, str] = {".parquet": "parquet", ".json": "coco", ".csv": "csv", ".xml": "dlib"}
FOLDER_FORMAT = "pts"


def guess_format(out: Path, fmt: str | None) -> str:
    """The format `fmt` (checked), else the one `out`'s suffix names; UsageError for a suffix
    no registered format claims, naming the ones that do."""
    if fmt:
        if fmt not in WRITERS:
            raise UsageError(f"unknown format {fmt!r}; choose one of: {', '.join(WRITERS)}")
        return fmt
    suffix = Path(out).suffix.lower()
    if not suffix or Path(out).is_dir():
        return FOLDER_FORMAT
    if EXTENSIONS.get(suffix) in WRITERS:
        return EXTENSIONS[suffix]
    known = [f"{ext} ({name})" for ext, name in EXTENSIONS.items() if name in WRITERS] + [f"a folder ({FOLDER_FORMAT})"]
    raise UsageError(f"--out {out}: unknown extension {suffix!r}; known: {', '.join(known)}, or give --format")


def make_writer(fmt: str, out: Path, metadata: dict | None = None, overwrite: bool = False) -> Writer:
    return WRITERS[fmt](out, metadata=metadata, overwrite=overwrite)


def read_labels(path: Path):
    """What `autolabel run` wrote, as a pandas DataFrame in the Parquet schema: a labels
    Parquet file, or a `--format pts` run folder (read through its `index.csv`)."""
    from autolabel.formats.pts_folder import is_run_folder, read_run

    if Path(path).is_dir():
        if not is_run_folder(path):
            raise UsageError(f"{path}: a folder, but not one `autolabel run --format pts` wrote (no index.csv)")
        return read_run(path)
    from autolabel.formats.parquet import read_labels as read_parquet

    return read_parquet(path)


def detect_format(path: Path) -> str:
    """Which reader reads `path`: a folder with a review journal is a corrections folder, another
    folder a 300-W folder; a file goes by its suffix (EXTENSIONS), a `.json` by its content (a
    list of tasks, or an object with `data` and no `images`: Label Studio; else COCO)."""
    path = Path(path)
    if path.is_dir():
        return "corrections" if (path / "journal.jsonl").is_file() else FOLDER_FORMAT
    if not path.is_file():
        raise UsageError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".json":
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(1 << 16).lstrip()
        ls = head.startswith("[") or (head.startswith("{") and '"images"' not in head and '"data"' in head)
        return "label-studio" if ls else "coco"
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    raise UsageError(f"{path}: cannot tell its format from the name; readable: a folder, or {', '.join(EXTENSIONS)} files")


def read_labels_any(path: Path, fmt: str | None = None, root: Path | None = None, check_images: bool = True) -> LabelSet:
    """Labels in any readable format (`fmt`, else found by `detect_format`) as a LabelSet."""
    fmt = fmt or detect_format(path)
    if fmt not in READERS:
        raise UsageError(f"unknown format {fmt!r}; readable: {', '.join(READERS)}")
    return READERS[fmt](Path(path), root=root, check_images=check_images)


def safe_name(name: str) -> str | None:
    """`name` as a relative posix path that stays under an output folder, or None (absolute, a
    drive, or climbing out with `..`): names read from other people's files decide output paths.
    A backslash separates folders (Windows names), except in the `\\x80`-`\\xff` escapes
    `files.path_text` writes for bytes that are not UTF-8."""
    p = PurePosixPath(re.sub(r"\\(?!x[89a-fA-F][0-9a-fA-F])", "/", str(name)))
    if p.is_absolute() or ".." in p.parts or not p.parts or PureWindowsPath(str(name)).drive:
        return None
    return p.as_posix()


def write_labels(labels: LabelSet, out: Path, kind: str, metadata: dict | None = None) -> list[str]:
    """Write every image of `labels` to `out` as `kind` (from scratch). Returns the images refused
    because their names lead outside `out` (one message each); they are not written."""
    refused: list[str] = []
    writer = make_writer(kind, Path(out), metadata=metadata, overwrite=True)
    for name, r in labels.images:
        rel = safe_name(name)
        if rel is None:
            refused.append(f"{labels.source}: image {name!r}: its name leads outside {out}")
            continue
        writer.write_result(r, rel, None)
    writer.close()
    return refused


def export(source: Path, out: Path, to: str | None = None, fmt: str | None = None, root: Path | None = None,
           metadata: dict | None = None) -> tuple[LabelSet, list[str]]:
    """`autolabel export`: read `source` (any readable format, or `fmt`) and write its images to
    `out` as `to` (default: from `out`'s suffix). Returns what was read (its `skipped`: items
    that could not be read) and the images refused (`write_labels`)."""
    kind = guess_format(Path(out), to)
    labels = read_labels_any(source, fmt, root)
    return labels, write_labels(labels, out, kind, metadata)

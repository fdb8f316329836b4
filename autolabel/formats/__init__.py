"""Output formats: the `Writer` contract, documented once, and an explicit name -> writer
registry that feeds `autolabel run --format`.

Modules: `parquet.py` (one row per face), `pts.py` (the 300-W `.pts` file itself),
`pts_folder.py` (a 300-W folder of `.pts` files), `corrections.py` (the review corrections
journal, reading it back, and its export as a 300-W folder).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

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


#: name -> factory(out, metadata=None, overwrite=False)
WRITERS: dict[str, Callable[..., Writer]] = {"parquet": _parquet, "pts": _pts}


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

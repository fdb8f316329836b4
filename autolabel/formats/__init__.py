"""Output formats: an explicit name -> writer registry. Every writer takes ImageResults as
they stream in, is resumable (`done_keys`) and crash-safe (`flush` writes atomically)."""

from __future__ import annotations

from pathlib import Path

from autolabel.types import UsageError


def _parquet(out, **kw):
    from autolabel.formats.parquet import ParquetWriter

    return ParquetWriter(out, **kw)


def _pts(out, **kw):
    from autolabel.formats.pts_folder import PtsFolderWriter

    return PtsFolderWriter(out, **kw)


WRITERS = {"parquet": _parquet, "pts": _pts}


def guess_format(out: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in WRITERS:
            raise UsageError(f"unknown format {fmt!r}; choose one of: {', '.join(WRITERS)}")
        return fmt
    return "parquet" if out.suffix.lower() == ".parquet" else "pts"


def make_writer(fmt: str, out: Path, **kw):
    return WRITERS[fmt](out, **kw)

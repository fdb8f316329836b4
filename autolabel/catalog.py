"""The model versions autolabel knows (`autolabel models`): the shipped model with its
`autolabel eval` figures, and every finetuned version with its lineage. Reads files only: no
torch, so listing is instant.
"""

from __future__ import annotations

import json
from pathlib import Path

from autolabel.evaluate import read_nme
from autolabel.files import content_hash
from autolabel.resources import shipped_eval_report, shipped_model
from autolabel.types import Lineage, ModelInfo

LINEAGE = "finetune.json"


def read_lineage(path: Path) -> Lineage:
    """A finetuned version's `finetune.json`."""
    return Lineage.from_dict(json.loads(Path(path).read_text()))


def list_models(folders: list[Path]) -> list[ModelInfo]:
    """The shipped model and every finetuned version found under `folders`."""
    out = []
    sp = shipped_model()
    if sp.is_file():
        out.append(ModelInfo(content_hash(sp.read_bytes()), str(sp), "shipped", True, read_nme(shipped_eval_report())))
    for f in folders:
        for path in sorted(Path(f).rglob(LINEAGE)):
            lin = read_lineage(path)
            out.append(ModelInfo(lin.model_version, lin.model_path, f"finetune of {lin.base_model}", lin.usable,
                                 {f"{k} (after)": v for k, v in lin.after.items()}))
    return out

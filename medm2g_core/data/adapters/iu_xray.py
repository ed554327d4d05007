"""IU X-ray (Open-i, Indiana University) in the layout R2Gen distributes: official splits, one case per report.

Assumed layout (``root`` is the ``iu_xray`` folder or the folder holding it)::

    iu_xray/annotation.json    {"train": [...], "val": [...], "test": [...]}
    iu_xray/images/CXR2384_IM-0942/0.png
    iu_xray/images/CXR2384_IM-0942/1.png

Each annotation item is ``{"id": "CXR2384_IM-0942", "report": "...", "image_path": ["CXR2384_IM-0942/0.png",
"CXR2384_IM-0942/1.png"], "split": "train"}``. The list an item is in gives its split. Image 0 (the frontal
view in R2Gen's ordering) is the case's X-ray; the other views are kept in ``meta["other_views"]``. The
subject is the report number (``CXR2384``): Open-i has one report per patient study. No labels.
"""

import json
from pathlib import Path

from medm2g_core.data.adapters.common import Progress, finish, manifest_path, relative, tick
from medm2g_core.data.manifest import SPLITS, CaseRecord
from medm2g_core.errors import InputError

DATASET = "iu-xray"


def prepare_iu_xray(root: Path, out: Path, overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Write ``out/manifest.jsonl`` for the R2Gen IU X-ray folder in ``root``; returns the manifest path."""
    root, out = Path(root), Path(out)
    target = manifest_path(DATASET, root, out, overwrite)
    folder = root if (root / "annotation.json").is_file() else root / "iu_xray"
    items = [(split, item) for split, entries in _annotation(folder / "annotation.json").items() for item in entries]
    records, seen = [], set()
    for done, (split, item) in enumerate(items, start=1):
        record = _record(folder, out, split, item)
        if record.id in seen:
            raise InputError(f"{DATASET}: case {record.id} appears twice in annotation.json")
        seen.add(record.id)
        records.append(record)
        tick(progress, done, len(items))
    return finish(DATASET, records, target, overwrite)


def _annotation(path: Path) -> dict[str, list]:
    if not path.is_file():
        raise InputError(f"{DATASET}: no annotation.json in {path.parent} (R2Gen's iu_xray layout)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{DATASET}: cannot read {path} ({exc})") from exc
    if not isinstance(data, dict) or set(data) - set(SPLITS) or not all(isinstance(v, list) for v in data.values()):
        raise InputError(f"{DATASET}: {path} must map train/val/test to lists of cases")
    return data


def _record(folder: Path, out: Path, split: str, item: dict) -> CaseRecord:
    case = item.get("id") if isinstance(item, dict) else None
    if not case or not isinstance(item.get("image_path"), list) or not item["image_path"]:
        raise InputError(f"{DATASET}: an entry of the {split} list has no id or no image_path: {str(item)[:80]}")
    paths = []
    for name in item["image_path"]:
        path = folder / "images" / name
        if not path.is_file():
            raise InputError(f"{DATASET}: case {case} misses its image {path}")
        paths.append(relative(path, out))
    report = " ".join(str(item.get("report") or "").split()) or None
    return CaseRecord(
        id=case,
        split=split,
        subject=case.split("_")[0],
        source=DATASET,
        images={"xray": paths[0]},
        report=report,
        meta={"other_views": paths[1:]},
    )

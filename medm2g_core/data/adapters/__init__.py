"""Dataset adapters: turn a publisher's raw layout into a manifest (``medm2g prepare <dataset>``).

Every adapter is ``prepare_<name>(root, out, overwrite=False, progress=None, **options) -> Path``: it scans
``root``, pairs the images of each case by subject or study, applies the official split where one exists
(else the stable hash split of :func:`~medm2g_core.data.manifest.split_for`), and atomically writes
``out/manifest.jsonl``, whose paths point back into ``root`` (nothing is copied). A missing or unpaired file
is an :class:`~medm2g_core.errors.InputError` with one line naming the dataset and the case.

Options beyond the common ones: ``mimic-cxr`` takes ``reports`` (``mimic-cxr-reports.zip`` or its
folder); ``ixi`` and ``brain-ct-mri`` take ``allow_incomplete`` (keep what pairs, drop the rest, logged).

``meta["aligned"]``, where a record has it, lists the image keys that share one voxel grid; without it every
CT/MRI image of the case should. ``medm2g_core.data.verify`` checks exactly that.
"""

from collections.abc import Callable
from pathlib import Path

from medm2g_core.data.adapters.brain_ct_mri import prepare_brain_ct_mri
from medm2g_core.data.adapters.brats import prepare_brats
from medm2g_core.data.adapters.gold_atlas import prepare_gold_atlas
from medm2g_core.data.adapters.iu_xray import prepare_iu_xray
from medm2g_core.data.adapters.ixi import prepare_ixi
from medm2g_core.data.adapters.mimic_cxr import CHEXPERT_LABELS, prepare_mimic_cxr

ADAPTERS: dict[str, Callable[..., Path]] = {
    "mimic-cxr": prepare_mimic_cxr,
    "iu-xray": prepare_iu_xray,
    "brats": prepare_brats,
    "ixi": prepare_ixi,
    "gold-atlas": prepare_gold_atlas,
    "brain-ct-mri": prepare_brain_ct_mri,
}

# Label vocabulary of the adapters that write labels: (names, complete). A complete vocabulary is on every
# case of the source; an incomplete one (CheXpert: a finding the report does not mention is left out) only
# bounds the names used. Sources without an entry are checked against their majority (see verify).
LABEL_VOCABULARY: dict[str, tuple[frozenset[str], bool]] = {
    "mimic-cxr": (frozenset(CHEXPERT_LABELS.values()), False),
    "brats": (frozenset({"tumor"}), True),
    "brain-ct-mri": (frozenset({"tumor"}), True),
}

__all__ = [
    "ADAPTERS",
    "LABEL_VOCABULARY",
    "prepare_brain_ct_mri",
    "prepare_brats",
    "prepare_gold_atlas",
    "prepare_iu_xray",
    "prepare_ixi",
    "prepare_mimic_cxr",
]

"""The synthetic chest: a CT in HU with a structure label map, and its PA radiograph computed from the same voxels.

By concern: :mod:`.grid` (the voxel grid, label names and the canvas being painted), :mod:`.thorax` (per-seed
dimensions of body, heart and mediastinum), :mod:`.anatomy` with :mod:`.vessels` and :mod:`.bones` (painting the
synthetic anatomy), :mod:`.lobes` (lobes, landmarks and the lung space findings are drawn into), :mod:`.lesions`
and :mod:`.devices` (the findings), :mod:`.segmentation` (a real CT as the base anatomy) and :mod:`.case`
(:func:`make_chest_case`, which puts a case together from a seed).
"""

from medm2g_core.phantoms.chest.case import ChestCase, make_chest_case
from medm2g_core.phantoms.chest.grid import LABEL, LABELS

__all__ = ["LABEL", "LABELS", "ChestCase", "make_chest_case"]

"""What a phantom case shows: the findings the anatomy generators draw and the reports describe.

One vocabulary serves the chest and brain generators, the report writer and the labeler, so that the
labels stored with each case are exactly what its images and report contain. Sizes are millimetres.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from medm2g_core.vocabulary import CHEST_LABELS

LUNG_LOBES = ("right upper", "right middle", "right lower", "left upper", "left lower")
SIDES = ("left", "right")
DEVICES = ("endotracheal tube", "central venous catheter", "pacemaker")
BRAIN_LOBES = ("frontal", "parietal", "temporal", "occipital")



@dataclass(frozen=True)
class Lesion:
    """A round lung lesion: a nodule (< 30 mm) or a mass (>= 30 mm)."""

    lobe: str
    size_mm: float


@dataclass(frozen=True)
class ChestFindings:
    """Findings of one chest case; ``None`` or empty means absent."""

    cardiothoracic_ratio: float = 0.45  # > 0.5 is cardiomegaly
    effusion: dict[str, float] = field(default_factory=dict)  # side -> fraction of hemithorax height filled
    nodules: tuple[Lesion, ...] = ()
    mass: Lesion | None = None
    consolidation: str | None = None  # lobe
    pneumothorax: tuple[str, float] | None = None  # (side, rim width as a fraction of hemithorax width)
    atelectasis: str | None = None  # lobe
    device: str | None = None  # one of DEVICES

    def labels(self) -> dict[str, int]:
        return {
            "cardiomegaly": int(self.cardiothoracic_ratio > 0.5),
            "pleural_effusion": int(bool(self.effusion)),
            "nodule": int(bool(self.nodules)),
            "mass": int(self.mass is not None),
            "consolidation": int(self.consolidation is not None),
            "pneumothorax": int(self.pneumothorax is not None),
            "atelectasis": int(self.atelectasis is not None),
            "support_device": int(self.device is not None),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def sample(cls, rng: np.random.Generator, normal_fraction: float = 0.3) -> "ChestFindings":
        """Random findings: about ``normal_fraction`` of cases are normal, the rest have one to three findings."""
        if rng.random() < normal_fraction:
            return cls(cardiothoracic_ratio=float(rng.uniform(0.38, 0.48)))
        chosen = set(rng.choice(CHEST_LABELS, size=int(rng.integers(1, 4)), replace=False).tolist())
        ratio = float(rng.uniform(0.55, 0.68)) if "cardiomegaly" in chosen else float(rng.uniform(0.38, 0.48))
        effusion = {}
        if "pleural_effusion" in chosen:
            sides = [str(rng.choice(SIDES))] if rng.random() < 0.7 else list(SIDES)
            effusion = {side: float(rng.uniform(0.15, 0.4)) for side in sides}
        nodules = tuple(
            Lesion(str(rng.choice(LUNG_LOBES)), float(rng.uniform(6, 25)))
            for _ in range(int(rng.integers(1, 3)) if "nodule" in chosen else 0)
        )
        return cls(
            cardiothoracic_ratio=ratio,
            effusion=effusion,
            nodules=nodules,
            mass=Lesion(str(rng.choice(LUNG_LOBES)), float(rng.uniform(35, 60))) if "mass" in chosen else None,
            consolidation=str(rng.choice(LUNG_LOBES)) if "consolidation" in chosen else None,
            pneumothorax=(str(rng.choice(SIDES)), float(rng.uniform(0.1, 0.3))) if "pneumothorax" in chosen else None,
            atelectasis=str(rng.choice(LUNG_LOBES)) if "atelectasis" in chosen else None,
            device=str(rng.choice(DEVICES)) if "support_device" in chosen else None,
        )


@dataclass(frozen=True)
class Tumor:
    """A BraTS-like glioma: enhancing rim around a necrotic core, surrounded by oedema."""

    hemisphere: str
    lobe: str
    radius_mm: float  # enhancing tumour outer radius
    necrosis_fraction: float  # core radius / tumour radius
    edema_mm: float  # oedema extent beyond the tumour


@dataclass(frozen=True)
class BrainFindings:
    """Findings of one brain case; ``None``/0 means absent."""

    tumor: Tumor | None = None
    wm_lesions: int = 0  # number of white-matter hyperintensities
    atrophy: float = 0.0  # 0 none .. 1 severe (widened sulci and ventricles)

    def labels(self) -> dict[str, int]:
        return {
            "tumor": int(self.tumor is not None),
            "wm_lesions": int(self.wm_lesions > 0),
            "atrophy": int(self.atrophy >= 0.3),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def sample(cls, rng: np.random.Generator, normal_fraction: float = 0.3) -> "BrainFindings":
        """Random findings: a tumour in about half of abnormal cases, lesions and atrophy otherwise."""
        if rng.random() < normal_fraction:
            return cls(atrophy=float(rng.uniform(0.0, 0.15)))
        kind = rng.choice(["tumor", "tumor", "wm_lesions", "atrophy"])
        tumor = None
        if kind == "tumor":
            tumor = Tumor(
                hemisphere=str(rng.choice(SIDES)),
                lobe=str(rng.choice(BRAIN_LOBES)),
                radius_mm=float(rng.uniform(8, 22)),
                necrosis_fraction=float(rng.uniform(0.2, 0.6)),
                edema_mm=float(rng.uniform(5, 20)),
            )
        return cls(
            tumor=tumor,
            wm_lesions=int(rng.integers(3, 15)) if kind == "wm_lesions" else 0,
            atrophy=float(rng.uniform(0.4, 0.9)) if kind == "atrophy" else float(rng.uniform(0.0, 0.15)),
        )

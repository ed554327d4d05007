"""The spatial guide: source images laid out as input channels of a target's denoiser (our extension, not the paper's).

Cross-attention carries what a guide *is* (paper 3.4); where things are in an image-to-image flow (MRI -> CT,
T2 + FLAIR -> T1) it carries poorly (docs/METHOD.md). The spatial path gives the target's denoiser the sources'
clean latents at the input, on the same latent grid, one fixed *slot* per possible source:

    CT target:  T1, T1ce, T2, FLAIR, PD               (5 slots)
    MRI target: CT, T1, T1ce, T2, FLAIR, PD           (6 slots; the target contrast's own slot stays empty)

Each slot is the source's scaled latent [C, h, w] followed by a presence plane [1, h, w] (1 where the source is
given, 0 otherwise), so any subset of the sources can guide (a missing contrast is zeros with presence 0) and
the unconditional input of classifier-free guidance is the all-absent layout (all zeros).

2.5D (``neighbours`` n > 0, issue 16): a slot holds the source's latents of the 2n + 1 slices centred on the target's
slice, [(2n+1) C, h, w] in slice order, so the target denoiser sees where the anatomy goes above and below it.
At a volume's first and last slices (and for a single 2D image) the missing neighbours repeat the nearest slice
there is (:func:`slab_rows`), in training and in sampling alike.
"""

import numpy as np
import torch

from medm2g_core.vocabulary import MRI_CONTRASTS

SPATIAL_SLOTS: dict[str, tuple[str, ...]] = {"ct": MRI_CONTRASTS, "mri": ("CT", *MRI_CONTRASTS)}


def spatial_channels(target: str, latent_channels: int, neighbours: int = 0) -> int:
    """How many input channels the spatial path of ``target``'s denoiser adds (``neighbours`` slices each side)."""
    return len(SPATIAL_SLOTS[target]) * ((2 * neighbours + 1) * latent_channels + 1)


def slab_rows(count: int, neighbours: int) -> np.ndarray:
    """For the ``count`` slices of one volume in slice order, the rows [count, 2n + 1] of the slices ``-n .. +n``
    around each, in order; a neighbour past either end is the end slice itself."""
    offsets = np.arange(-neighbours, neighbours + 1)
    return np.clip(np.arange(count)[:, None] + offsets[None], 0, count - 1)


def slab(latents: torch.Tensor, neighbours: int) -> torch.Tensor:
    """A single slice's slot latents [B, C, h, w] as a slab [B, (2n+1) C, h, w]: the slice repeated (no neighbours
    known, as at a volume's end)."""
    return latents.repeat(1, 2 * neighbours + 1, 1, 1)


def slot_of(modality: str, contrast: str | None) -> str:
    """The slot a source fills: "CT" for a CT, its contrast for an MRI (T1 when the file does not say)."""
    if modality == "ct":
        return "CT"
    if modality == "mri":
        return contrast or MRI_CONTRASTS[0]
    raise ValueError(f"a {modality} image cannot be a spatial guide (CT or MRI only)")


def spatial_input(target: str, latents: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The spatial input [B, S*(C+1), h, w] from every slot's latents [B, S, C, h, w] and presence [B, S] (bool);
    absent slots are zeroed whatever their latents hold."""
    batch, slots, _, height, width = latents.shape
    if slots != len(SPATIAL_SLOTS[target]) or present.shape != (batch, slots):
        raise ValueError(f"{target} needs {len(SPATIAL_SLOTS[target])} slots; got latents {tuple(latents.shape)}, "
                         f"presence {tuple(present.shape)}")
    mask = present.to(latents.dtype)[:, :, None, None, None]  # [B, S, 1, 1, 1]
    planes = mask.expand(batch, slots, 1, height, width)
    return torch.cat([latents * mask, planes], dim=2).flatten(1, 2)  # [B, S*(C+1), h, w]


def fill_slots(target: str, sources: list[tuple[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots latents [B, S, C, h, w] and presence [B, S] from (slot name, latents [B, C, h, w]) pairs."""
    names = SPATIAL_SLOTS[target]
    first = sources[0][1]
    latents = first.new_zeros(first.shape[0], len(names), *first.shape[1:])
    present = torch.zeros(first.shape[0], len(names), dtype=torch.bool, device=first.device)
    for name, value in sources:
        if name not in names:
            raise ValueError(f"{name} cannot guide {target} spatially (slots: {', '.join(names)})")
        index = names.index(name)
        latents[:, index] = value
        present[:, index] = True
    return latents, present

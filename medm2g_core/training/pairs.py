"""Paired training data for the multi-modal stages: which report, X-ray, CT slice and MRI slice belong together.

The central alignment (paper 3.2) and the cross-guided rounds (3.4, 3.5) learn from pairs of modalities of the
same case: a report and its X-ray (``text-xray``), a report and a slice of its CT (``text-ct``, ``text-mri``), a
CT slice and the MRI slice at the same position on the same grid (``ct-mri``, every contrast). The model-ready
cache keeps the slices of a case's volumes paired (one slice index per position, see
:func:`medm2g_core.data.cache.case_images`), so pairs are found by (case, slice).

A :class:`Store` holds one modality of one split as tensors (images, contrast labels, token ids, and latents
where a stage adds them); :class:`PairedItems` is the dataset: item ``i`` holds pair ``i mod n_k`` of every
requested kind ``k`` (so each batch has pairs of each kind), its fields named ``"<kind>:<modality>:<field>"``
plus ``"<kind>:case"`` (the case number, so the same case drawn twice in a batch is not a negative of itself).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medm2g_core.data.cache import Cache
from medm2g_core.data.manifest import key_modality
from medm2g_core.errors import InputError
from medm2g_core.models.image_denoiser import contrast_label
from medm2g_core.vocabulary import MODALITY_KEYS, PAIR_KINDS


def pair_sides(kind: str) -> tuple[str, str]:
    """``"text-ct"`` -> ("text", "ct"); an error for unknown kinds."""
    if kind not in PAIR_KINDS:
        raise InputError(f"unknown pair kind {kind!r}; known: {', '.join(PAIR_KINDS)}")
    left, right = kind.split("-")
    return left, right


@dataclass
class Store:
    """One modality of one split. Images: ``image`` [M,1,R,R], ``label`` [M] (MRI contrast), ``case``/``slice`` [M].
    Text: one row per case number (rows of cases without a report are padding), ``ids``/``mask`` [C,L]."""

    modality: str
    tensors: dict[str, torch.Tensor]
    case: np.ndarray  # [M] case number of each row
    slice: np.ndarray  # [M] slice index (0 for text and X-ray)

    def __len__(self) -> int:
        return len(self.case)


def image_store(cache: Cache, split: str, modality: str) -> Store | None:
    """Every slice of ``modality`` (MRI: every contrast) in ``split`` (or several: ``"val+test"``), or None when
    there are none."""
    found = [(s, k) for s in split.split("+") for k in MODALITY_KEYS[modality] if f"{s}/{k}" in cache.index["shards"]]
    if not found:
        return None
    keys = [k for _, k in found]
    streams = [cache.stream(s, k) for s, k in found]
    images = torch.from_numpy(np.concatenate([s["images"] for s in streams]))[:, None]  # [M,1,R,R]
    labels = torch.cat([torch.full((len(s["case"]),), contrast_label(key_modality(k)[1]), dtype=torch.long)
                        for k, s in zip(keys, streams, strict=True)])
    return Store(modality, {"image": images, "label": labels},
                 np.concatenate([s["case"] for s in streams]), np.concatenate([s["slice"] for s in streams]))


def text_store(cache: Cache, split: str, tokenize: Callable[[list[str]], dict[str, torch.Tensor]]) -> Store | None:
    """The reports of ``split`` (or ``"val+test"``) tokenised (padded to the longest), one row per case with one."""
    splits = split.split("+")
    numbers = [n for n, case in enumerate(cache.index["cases"])
               if case["split"] in splits and (case.get("report") or "").strip()]
    if not numbers:
        return None
    tokens = tokenize([cache.index["cases"][n]["report"] for n in numbers])
    return Store("text", {"ids": tokens["input_ids"], "mask": tokens["attention_mask"]},
                 np.asarray(numbers), np.zeros(len(numbers), np.int64))


def has_pairs(cache: Cache, split: str, kind: str) -> bool:
    """Whether ``split`` holds at least two cases with both modalities of ``kind`` (enough for a preview)."""
    cases: list[set[int]] = []
    for modality in pair_sides(kind):
        if modality == "text":
            cases.append({n for n, c in enumerate(cache.index["cases"])
                          if c["split"] == split and (c.get("report") or "").strip()})
        else:
            cases.append({int(n) for k in MODALITY_KEYS[modality] if f"{split}/{k}" in cache.index["shards"]
                          for n in np.unique(cache.stream(split, k)["case"])})
    return len(cases[0] & cases[1]) >= 2


def pair_rows(left: Store, right: Store) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row indices (left [N], right [N]) and case numbers [N] of every pair. Text pairs with each image row of its
    case; two image modalities pair where case and slice agree (every MRI contrast with the one CT slice)."""
    def key(store: Store, row: int) -> tuple[int, int]:
        return int(store.case[row]), 0 if "text" in (left.modality, right.modality) else int(store.slice[row])

    lookup = {key(left, row): row for row in range(len(left))}
    rows = [(lookup[key(right, r)], r) for r in range(len(right)) if key(right, r) in lookup]
    if not rows:
        raise InputError(f"no {left.modality}-{right.modality} pairs: no case holds both")
    pairs = torch.tensor(rows, dtype=torch.long)
    return pairs[:, 0], pairs[:, 1], torch.from_numpy(left.case[pairs[:, 0].numpy()].astype(np.int64))


class PairedItems(Dataset):
    """Item ``i``: pair ``i mod n_k`` of each kind ``k``, fields ``"<kind>:<modality>:<field>"`` and ``"<kind>:case"``.
    The length is the largest kind's pair count, so one epoch visits every pair at least once."""

    def __init__(self, stores: dict[str, Store], kinds: tuple[str, ...]) -> None:
        self.stores, self.kinds = stores, tuple(kinds)
        self.pairs = {}
        for kind in self.kinds:
            left, right = pair_sides(kind)
            if left not in stores or right not in stores:
                missing = left if left not in stores else right
                raise InputError(f"{kind} pairs need {missing} data, and this split has none")
            self.pairs[kind] = pair_rows(stores[left], stores[right])

    def count(self, kind: str) -> int:
        return len(self.pairs[kind][2])

    def __len__(self) -> int:
        return max(self.count(kind) for kind in self.kinds)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {}
        for kind in self.kinds:
            left_rows, right_rows, cases = self.pairs[kind]
            j = index % len(cases)
            for modality, row in zip(pair_sides(kind), (left_rows[j], right_rows[j]), strict=True):
                for name, tensor in self.stores[modality].tensors.items():
                    item[f"{kind}:{modality}:{name}"] = tensor[row]
            item[f"{kind}:case"] = cases[j]
        return item


def embed(encoder: nn.Module, fields: dict[str, torch.Tensor]) -> torch.Tensor:
    """A prompt encoder's embedding [B, E] of one side of a batch or store (text: ids/mask; images: image)."""
    return encoder(fields["ids"], fields["mask"]) if "ids" in fields else encoder(fields["image"])


@torch.no_grad()
def store_embeddings(encoder: nn.Module, store: Store, batch_size: int = 64) -> torch.Tensor:
    """The L2-normalised embeddings [M, E] of every row of ``store``, in eval mode, on the CPU."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    rows = []
    for start in range(0, len(store), batch_size):
        chunk = {name: t[start:start + batch_size].to(device) for name, t in store.tensors.items()}
        rows.append(F.normalize(embed(encoder, chunk).float(), dim=-1).cpu())
    encoder.train(was_training)
    return torch.cat(rows)


def part(batch: dict[str, torch.Tensor], kind: str, modality: str, device: torch.device) -> dict[str, torch.Tensor]:
    """The fields of one side of one kind in a collated batch, on ``device``."""
    prefix = f"{kind}:{modality}:"
    return {name[len(prefix):]: value.to(device) for name, value in batch.items() if name.startswith(prefix)}

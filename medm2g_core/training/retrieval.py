"""Cross-modal retrieval with the aligned prompt encoders: how well the shared space pairs modalities of a case.

A case's embedding in a modality is the mean of the L2-normalised embeddings of its images (every slice, every
MRI contrast) or its report, normalised again. Retrieval from modality A to B ranks every case's B embedding by
cosine similarity to the query case's A embedding; recall@k is the share of queries whose own case is among the
top k (chance: k / number of cases).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medm2g_core.training.pairs import Store, store_embeddings


def case_embeddings(encoder: nn.Module, store: Store) -> tuple[np.ndarray, torch.Tensor]:
    """Case numbers [C] (sorted) and their normalised embeddings [C, E] from every row of ``store``."""
    embeddings = store_embeddings(encoder, store)  # [M, E]
    cases, inverse = np.unique(store.case, return_inverse=True)
    sums = torch.zeros(len(cases), embeddings.shape[1]).index_add_(0, torch.from_numpy(inverse), embeddings)
    return cases, F.normalize(sums, dim=-1)


def retrieval_scores(
    cases_a: np.ndarray, embeddings_a: torch.Tensor, cases_b: np.ndarray, embeddings_b: torch.Tensor,
    ks: tuple[int, ...] = (1, 5),
) -> dict[str, float] | None:
    """Recall@k of A -> B over the cases both have, with chance levels; None when fewer than 2 cases are shared."""
    shared, ia, ib = np.intersect1d(cases_a, cases_b, return_indices=True)
    if len(shared) < 2:
        return None
    similarity = embeddings_a[ia] @ embeddings_b[ib].T  # [N, N]
    own = similarity.diagonal()[:, None]
    rank = (similarity > own).sum(1)  # 0 = own case first
    scores: dict[str, float] = {"cases": float(len(shared))}
    for k in ks:
        scores[f"r@{k}"] = float((rank < k).float().mean())
        scores[f"chance@{k}"] = min(k, len(shared)) / len(shared)
    return scores


def retrieval_matrix(encoders: dict[str, nn.Module], stores: dict[str, Store]) -> dict[str, dict[str, float]]:
    """Recall@1/@5 for every ordered pair of modalities (``"text->xray"``) that share at least two cases."""
    embedded = {m: case_embeddings(encoders[m], store) for m, store in stores.items()}
    scores = {}
    for a, (cases_a, emb_a) in embedded.items():
        for b, (cases_b, emb_b) in embedded.items():
            result = None if a == b else retrieval_scores(cases_a, emb_a, cases_b, emb_b)
            if result is not None:
                scores[f"{a}->{b}"] = result
    return scores

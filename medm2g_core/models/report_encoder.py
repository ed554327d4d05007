"""The downstream report encoder: hashed words and word pairs, averaged, then an MLP (Table 8's harness).

MGCA and ConVIRT read reports with BERT. The phantom's reports come from a small grammar where a finding and its
negation are told apart by neighbouring words ("no pneumothorax", "small left"), so a bag of unigrams and bigrams
carries what pre-training needs at a fraction of the cost. Words are hashed (CRC-32, stable across processes and
runs) into ``buckets`` rows of an ``nn.EmbeddingBag`` (mean), so the vocabulary never depends on which corpus is
mixed in and every row of the table sees the same encoder.
"""

import itertools
import re
import zlib
from dataclasses import dataclass

import torch
from torch import nn

WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class ReportEncoderConfig:
    buckets: int = 8192  # hash buckets of words and word pairs
    width: int = 256
    embed_dim: int = 128  # the shared image-report space


def hashed_terms(text: str, buckets: int) -> list[int]:
    """Bucket ids of the words and adjacent word pairs of ``text`` (lower-cased); never empty."""
    words = WORD.findall(text.lower())
    terms = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    return [zlib.crc32(term.encode()) % buckets for term in terms] or [0]


class ReportEncoder(nn.Module):
    def __init__(self, config: ReportEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.bag = nn.EmbeddingBag(config.buckets, config.width, mode="mean")
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(config.width, config.width), nn.GELU(),
                                 nn.Linear(config.width, config.embed_dim))

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat bucket ids [T] and the offset [B] where each text's ids start (EmbeddingBag's input)."""
        ids = [hashed_terms(text, self.config.buckets) for text in texts]
        offsets = torch.tensor([0, *(len(i) for i in ids[:-1])]).cumsum(0)
        return torch.tensor([t for i in ids for t in i]), offsets

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """-> [B, embed_dim] in the shared space (not normalised)."""
        return self.mlp(self.bag(ids, offsets))

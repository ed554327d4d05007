"""Stage "text-vae": train the text VAE (BERT encoder, GPT-2 decoder) on the reports of a cache or manifest.

The tokenizer is trained on the training reports unless a tokenizer folder is given; the model's vocabulary
size is the tokenizer's. The KL weight warms up linearly from 0 to ``config.kl_weight`` over
``kl_anneal_steps`` training loss calls (micro-batches, so ``grad_accum`` multiplies them); the count is a
buffer of the ``kl_schedule`` module, so checkpoints hold it and a resumed run continues the schedule exactly.
Quality is reported as corpus BLEU-4 of greedy reconstructions (:func:`reconstruction_bleu4`).
"""

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from medm2g_core.atomic import write_text
from medm2g_core.data.cache import Cache
from medm2g_core.data.manifest import SPLITS, Manifest, read_manifest
from medm2g_core.errors import InputError
from medm2g_core.metrics.text_metrics import corpus_bleu
from medm2g_core.models.medm2g import export_component
from medm2g_core.models.text_vae import TextVAE, TextVAEConfig
from medm2g_core.models.tokenizer import load_tokenizer, normalise_report, train_tokenizer

logger = logging.getLogger(__name__)

PREVIEW_REPORTS = 4


def reports_from_cache(cache: Cache) -> dict[str, list[str]]:
    """The non-empty reports of a model-ready cache, by split."""
    return _by_split((case["split"], case.get("report")) for case in cache.index["cases"])


def reports_from_manifest(manifest: Manifest | str | os.PathLike) -> dict[str, list[str]]:
    """The non-empty reports of a manifest (or a manifest file), by split."""
    manifest = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    return _by_split((record.split, record.report) for record in manifest.records)


def _by_split(pairs: Iterable[tuple[str, str | None]]) -> dict[str, list[str]]:
    reports: dict[str, list[str]] = {}
    for split, report in pairs:
        if report and report.strip():
            reports.setdefault(split, []).append(report)
    return reports


class KLSchedule(nn.Module):
    """The KL weight: 0 at the first training step, ``kl_weight`` from step ``anneal_steps`` on, linear between."""

    def __init__(self, kl_weight: float, anneal_steps: int) -> None:
        super().__init__()
        self.kl_weight, self.anneal_steps = kl_weight, anneal_steps
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def weight(self) -> float:
        if self.anneal_steps <= 0:
            return self.kl_weight
        return self.kl_weight * min(1.0, int(self.step) / self.anneal_steps)

    def advance(self) -> None:
        self.step += 1


class ReportTokens(Dataset):
    """Reports as ``input_ids`` and ``attention_mask`` [max_length] (right-padded) plus the ``report`` text."""

    def __init__(self, vae: TextVAE, reports: list[str]) -> None:
        self.reports = reports
        self.tokens = vae.tokenize(reports, padding="max_length") if reports else None

    def __len__(self) -> int:
        return len(self.reports)

    def __getitem__(self, index: int) -> dict:
        return {
            "input_ids": self.tokens["input_ids"][index], "attention_mask": self.tokens["attention_mask"][index],
            "report": self.reports[index],
        }


class TextVAEStage:
    """The text VAE stage of the shared trainer (see :class:`medm2g_core.training.stage.Stage`)."""

    name = "text-vae"

    def __init__(
        self,
        reports_by_split: dict[str, list[str]],
        config: TextVAEConfig,
        tokenizer: str | os.PathLike | None = None,
        init_encoder: str | os.PathLike | None = None,
        init_decoder: str | os.PathLike | None = None,
        kl_anneal_steps: int = 1000,
    ) -> None:
        self.reports = reports_by_split
        if not reports_by_split.get("train"):
            raise InputError("the text VAE stage needs training reports; none of the train cases has a report")
        if tokenizer is None:
            loaded = train_tokenizer(reports_by_split["train"], vocab_size=config.vocab_size)
        else:
            loaded = load_tokenizer(tokenizer)
        self.config = replace(config, vocab_size=len(loaded))
        self.vae = TextVAE(**asdict(self.config), tokenizer=loaded)
        if init_encoder is not None or init_decoder is not None:
            self.vae.adapt_pretrained(init_encoder, init_decoder)
        self.kl_schedule = KLSchedule(config.kl_weight, kl_anneal_steps)
        self._warn_truncation(reports_by_split["train"])

    def _warn_truncation(self, reports: list[str]) -> None:
        lengths = [len(ids) for ids in self.vae.tokenizer(reports)["input_ids"]]
        cut = sum(length > self.config.max_length for length in lengths)
        if cut:
            logger.warning("%d of %d training reports are longer than max_length=%d tokens (longest %d) and are "
                           "truncated", cut, len(reports), self.config.max_length, max(lengths))

    def modules(self) -> dict[str, nn.Module]:
        return {"text_vae": self.vae, "kl_schedule": self.kl_schedule}

    def trainable(self) -> Iterable[nn.Parameter]:
        return self.vae.parameters()

    def ema_modules(self) -> dict[str, nn.Module]:
        return {"text_vae": self.vae}

    def dataset(self, split: str) -> Dataset:
        if split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        return ReportTokens(self.vae, self.reports.get(split, []))

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        weight = self.kl_schedule.weight()
        total, recon, kl = self.vae.loss(batch, generator, kl_weight=weight)
        if torch.is_grad_enabled() and self.vae.training:
            self.kl_schedule.advance()
        tokens = float(batch["attention_mask"][:, 1:].sum()) / len(batch["attention_mask"])  # predicted per report
        metrics = {"recon": recon.item(), "kl": kl.item(), "kl_weight": weight, "nll_per_token": recon.item() / tokens}
        return total, metrics

    def sample(self, folder: Path, step: int) -> None:
        """Write ``text-vae-<step>.txt``: a few validation reports and their greedy reconstructions."""
        originals = (self.reports.get("val") or self.reports["train"])[:PREVIEW_REPORTS]
        with torch.no_grad():
            rebuilt = self.vae.decode(self.vae.encode(originals)[0])
        text = "".join(f"original:      {normalise_report(original)}\nreconstructed: {copy}\n\n"
                       for original, copy in zip(originals, rebuilt, strict=True))
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_text(Path(folder) / f"{self.name}-{step:06d}.txt", text, overwrite=True)

    def export(self, folder: Path) -> None:
        """Save ``folder/text_vae``: config.json, safetensors weights and the tokenizer."""
        export_component(self.vae, Path(folder) / "text_vae")


@torch.no_grad()
def reconstruct(vae: TextVAE, reports: list[str], batch_size: int = 32, num_beams: int = 1) -> list[str]:
    """Decode the posterior mean of each report (greedy by default), in batches."""
    rebuilt = []
    for start in range(0, len(reports), batch_size):
        mean, _ = vae.encode(reports[start:start + batch_size])
        rebuilt += vae.decode(mean, num_beams=num_beams)
    return rebuilt


def reconstruction_bleu4(vae: TextVAE, reports: list[str], batch_size: int = 32) -> float:
    """Corpus BLEU-4 of the greedy reconstructions of ``reports`` against the reports themselves."""
    return corpus_bleu(reconstruct(vae, reports, batch_size), reports)

"""What the shared trainer trains: a stage names its modules, its loss, its data and its exports.

Every stage of the paper (image and text autoencoders, single-modal LDMs, central alignment, cross-guided
rounds) implements :class:`Stage`; :func:`medm2g_core.training.trainer.train` runs any of them with the same
optimiser, mixed precision, accumulation, EMA, checkpoints, resume, metrics and progress.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import Dataset


@dataclass
class OptimConfig:
    """How one stage is optimised (a recipe section maps onto this)."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    ema_decay: float | None = None  # e.g. 0.999 for denoisers; None: no EMA
    mixed_precision: str = "no"  # no | fp16 | bf16 (accelerate); fp32 is the fast path on AVX2 CPUs
    log_every: int = 10
    sample_every: int = 0  # 0: no sample grids during training
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    num_workers: int = 0
    seed: int = 0


class Stage(Protocol):
    """One training stage. Modules are built before training starts; the trainer moves them to the device."""

    name: str  # e.g. "vae-xray", "ldm-ct"

    def modules(self) -> dict[str, nn.Module]:
        """Every module whose state a checkpoint must hold (trainable and frozen), by a stable name that is
        usable as a file name (``[\\w.-]+``)."""

    def trainable(self) -> Iterable[nn.Parameter]:
        """The parameters the optimiser updates (everything else stays frozen, bit for bit)."""

    def ema_modules(self) -> dict[str, nn.Module]:
        """The subset of :meth:`modules` that gets an EMA copy when ``ema_decay`` is set (may be empty)."""

    def dataset(self, split: str) -> Dataset:
        """The examples of ``split`` (train/val); items are dicts of tensors (and strings) that collate by default."""

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss of one batch and metrics to log (the same metric names every step: they are reduced
        across processes). All randomness (noise, timesteps, dropout of the condition) must come from
        ``generator`` so that a resumed run repeats the uninterrupted one exactly; it lives on the CPU, so draw
        there and move (``diffusers.utils.torch_utils.randn_tensor(shape, generator=g, device=d)``). Every
        trainable parameter must take part in every step (DDP runs with ``find_unused_parameters=False``)."""

    def sample(self, folder: Path, step: int) -> None:
        """Write a preview (a PNG sample grid or a text file of decoded reports) into the existing ``folder``,
        named by step and replacing an earlier file (a resumed run can repeat a step). Runs on the main process
        only, in eval mode, without gradients, with EMA weights."""

    def export(self, folder: Path) -> None:
        """Save the trained component(s) (EMA weights where kept) as diffusers/transformers-style subfolders of
        ``folder``, which does not exist yet: the stage creates it, the trainer makes the whole export atomic."""

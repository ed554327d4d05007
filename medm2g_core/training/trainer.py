"""The shared trainer: runs any :class:`~medm2g_core.training.stage.Stage` on accelerate.

One call, :func:`train`, gives every stage the same machinery: AdamW over ``stage.trainable()`` (everything else
frozen, bit for bit), linear warmup then a constant learning rate (the LDM/Stable Diffusion schedule; constant
after warmup also means ``steps`` can be raised to extend a finished run), gradient clipping, gradient
accumulation, mixed precision, an EMA of ``stage.ema_modules()``, metrics, progress, samples, checkpoints and
exact resume. It runs unchanged under ``accelerate launch`` (DDP; gloo on CPU).

Determinism. A run is a pure function of ``config.seed`` and the process count:

- data order: epoch ``e`` visits ``randperm(len(dataset))`` from a generator seeded by ``(seed, e)``; each global
  batch (``batch_size`` x processes consecutive indices) is split by rank, the incomplete tail is dropped; the
  position in that order follows from the optimiser step alone, so resuming skips to it without loading data;
- loss randomness: step ``s`` of process ``r`` hands ``stage.loss`` a CPU generator seeded by ``(seed, s, r)``,
  the same generator for all accumulated micro-batches of the step;
- the global RNGs (dropout and anything else that bypasses the generator) are seeded from ``(seed, rank)`` when a
  run starts, saved in every checkpoint and restored on resume; the DataLoader gets its own generator so that it
  never draws from them.

Seeds are derived with NumPy's ``SeedSequence``, so distinct ``(seed, epoch)`` or ``(seed, step, rank)`` tuples
never collide the way ``seed * 1000 + epoch`` would.

EMA. A short EMA of our own (:class:`EMA`) rather than ``diffusers.training_utils.EMAModel``: it keys the shadow
weights by ``<module>.<parameter>`` name, so they are saved as safetensors next to the module weights (EMAModel's
state dict is a positional list mixed with Python scalars, i.e. a pickle) and swapped in by name around
``stage.sample`` and ``stage.export``. Its decay follows EMAModel's default warmup, ``min(decay, (1 + n) / (10 + n))``
after ``n`` optimiser steps, so early weights are not averaged in for thousands of steps.

Interrupts. The first Ctrl-C (SIGINT) is noted and training stops at the end of the current step (all processes
agree on the step through the per-step reduction), writes a checkpoint there and raises ``KeyboardInterrupt``; a
second Ctrl-C stops at once.
"""

import contextlib
import json
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import accelerate
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.utils import gather_object, send_to_device
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset

import medm2g_core
from medm2g_core.atomic import atomic_dir, write_text
from medm2g_core.devices import resolve_device
from medm2g_core.errors import InputError, Medm2gError, OutputExistsError
from medm2g_core.training import checkpoint as ckpt
from medm2g_core.training.stage import OptimConfig, Stage

# Fields of OptimConfig a resumed run must share with its checkpoint: they define the trajectory it continues.
RESUME_KEYS = ("batch_size", "lr", "weight_decay", "warmup_steps", "grad_accum", "max_grad_norm", "ema_decay",
               "mixed_precision", "seed")
_DATA, _LOSS, _WORKERS, _GLOBAL = 0, 1, 2, 3  # first word of each derived seed, so that the streams never overlap


@dataclass
class TrainResult:
    """What one :func:`train` call did."""

    steps: int  # the optimiser step the run is at now
    metrics: dict[str, float]  # the last logged metrics line
    run_dir: Path
    wall_s: float
    steps_per_s: float  # optimiser steps of this call per wall-clock second
    epoch_steps: float = 0.0  # optimiser steps in one pass over the training set (all processes together)
    examples: int = 0  # examples in the training set


def train(
    stage: Stage,
    config: OptimConfig,
    run_dir: Path,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train ``stage`` for ``config.steps`` optimiser steps, writing metrics, samples, checkpoints and the export
    into ``run_dir``.

    ``resume=True`` continues from the newest checkpoint in ``run_dir`` (or starts afresh when there is none);
    ``resume=False`` refuses a ``run_dir`` that already holds checkpoints. ``on_step(step, values)`` is called on
    every process after every optimiser step with the step's loss (mean over processes), stage metrics and lr.
    """
    started = time.perf_counter()
    _check_config(config)
    run = _Run(stage, config, Path(run_dir), _make_accelerator(config, device), progress)
    first = run.start(resume)
    if not run.finished:
        run.loop(on_step)
        run.finish()
    wall = time.perf_counter() - started
    examples = len(stage.dataset("train"))
    epoch = examples / (config.batch_size * config.grad_accum * run.acc.num_processes)
    return TrainResult(run.step, run.last_metrics, run.run_dir, wall, (run.step - first) / wall, epoch, examples)


def _check_config(config: OptimConfig) -> None:
    positive = ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints")
    bad = [name for name in positive if getattr(config, name) < 1]
    bad += [name for name in ("checkpoint_every", "sample_every", "warmup_steps", "num_workers", "seed")
            if getattr(config, name) < 0]
    if config.ema_decay is not None and not 0.0 < config.ema_decay < 1.0:
        bad.append("ema_decay")
    if bad:
        raise InputError(f"invalid training settings: {', '.join(bad)} (see {asdict(config)})")


def _make_accelerator(config: OptimConfig, device: str) -> Accelerator:
    """An Accelerator on the requested device; a missing device is a DeviceError, never a fallback."""
    resolved = resolve_device(device)
    if PartialState._shared_state and not torch.distributed.is_initialized():
        # A second train() in one process (e.g. several stages) may change mixed precision or device; accelerate
        # keeps those in process-wide singletons, which are safe to clear when no process group exists.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    if resolved.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if ":" in device:
            raise InputError(f"device {device} names one GPU, but under a multi-process launch each process uses "
                             "its own; use device auto or cuda", option="device")
    elif resolved.type == "cuda" and resolved.index is not None:
        torch.cuda.set_device(resolved)  # accelerate's single-process device is the current CUDA device
    return Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
                       cpu=resolved.type == "cpu")


def derive_seed(*words: int) -> int:
    """A 64-bit seed that depends on every word (NumPy ``SeedSequence``: stable across versions and platforms)."""
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0])


class EMA:
    """Exponential moving average of the trainable parameters of some modules, keyed ``<module>.<parameter>``."""

    def __init__(self, modules: dict[str, nn.Module], decay: float) -> None:
        self.decay = decay
        self.params = {f"{name}.{key}": param for name, module in modules.items()
                       for key, param in module.named_parameters() if param.requires_grad}
        self.shadow = {key: param.detach().clone() for key, param in self.params.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the current weights after optimiser step ``step`` (1-based)."""
        weight = 1.0 - min(self.decay, (1 + step) / (10 + step))
        for key, param in self.params.items():
            self.shadow[key].lerp_(param.detach(), weight)

    @torch.no_grad()
    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Replace the shadow weights (from a checkpoint); names must match exactly."""
        if tensors.keys() != self.shadow.keys():
            raise InputError("the checkpoint's EMA weights do not match the stage's EMA modules")
        for key, value in tensors.items():
            self.shadow[key].copy_(value)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Swap the EMA weights into the modules; the training weights come back bit for bit afterwards."""
        with torch.no_grad():
            saved = {key: param.detach().clone() for key, param in self.params.items()}
            for key, param in self.params.items():
                param.copy_(self.shadow[key])
        try:
            yield
        finally:
            with torch.no_grad():
                for key, param in self.params.items():
                    param.copy_(saved[key])


class _LossModule(nn.Module):
    """Holds the stage's modules so that accelerate/DDP can wrap them; forward is ``stage.loss``."""

    def __init__(self, modules: dict[str, nn.Module], loss: Callable) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules.values())
        self.loss = loss

    def forward(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(batch, generator)


class _EpochBatches:
    """The index batches of one process, from absolute micro-batch ``start`` on, forever (see module doc)."""

    def __init__(self, size: int, batch_size: int, rank: int, world: int, seed: int, start: int) -> None:
        self.size, self.batch_size, self.rank, self.world, self.seed = size, batch_size, rank, world, seed
        self.per_epoch = size // (batch_size * world)
        self.start = start

    def __iter__(self) -> Iterator[list[int]]:
        epoch, position = divmod(self.start, self.per_epoch)
        while True:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(
                derive_seed(_DATA, self.seed, epoch)))
            for index in range(position, self.per_epoch):
                first = (index * self.world + self.rank) * self.batch_size
                yield order[first:first + self.batch_size].tolist()
            epoch, position = epoch + 1, 0


@dataclass
class _Window:
    """Sums of the per-step values since the last metrics line (saved in checkpoints for exact means)."""

    steps: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, values: dict[str, float]) -> None:
        self.steps += 1
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self) -> dict[str, float]:
        return {key: value / self.steps for key, value in self.sums.items()}


class _MetricsLog:
    """``metrics.jsonl``: one JSON line per logged step, appended by the main process.

    Lines are appended (rewriting the whole file atomically per line would be quadratic); a line cut short by a
    crash, and every line after the step a run resumes from, is dropped by :meth:`truncate`, atomically."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def truncate(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                if json.loads(line)["step"] <= step:
                    kept.append(line + "\n")
        write_text(self.path, "".join(kept), overwrite=True)

    def append(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


@contextlib.contextmanager
def _interrupt_flag() -> Iterator[Callable[[], bool]]:
    """Note the first SIGINT instead of raising; yields ``requested()``. A second SIGINT raises at once."""
    hit = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield hit.is_set
        return

    def note(signum: int, frame: object) -> None:
        hit.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield hit.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress_bar(enabled: bool, description: str, total: int, done: int) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} steps/s"),
               TimeElapsedColumn(), TimeRemainingColumn())
    bar = Progress(*columns, console=Console(stderr=True, highlight=False), disable=not enabled)
    bar.add_task(description, total=total, completed=done, loss="-", rate="-")
    return bar


class _Run:
    """The state of one training run; :func:`train` drives it through start, loop and finish."""

    def __init__(self, stage: Stage, config: OptimConfig, run_dir: Path, accelerator: Accelerator,
                 progress: bool) -> None:
        self.stage, self.config, self.run_dir, self.acc = stage, config, run_dir, accelerator
        self.main = accelerator.is_main_process
        self.console = Console(stderr=True, highlight=False, quiet=not (progress and self.main))
        self.show_progress = progress and self.main
        self.checkpoints = run_dir / "checkpoints"
        self.log = _MetricsLog(run_dir / "metrics.jsonl", self.main)
        self.step, self.saved_step, self.finished = 0, -1, False
        self.window, self.last_metrics = _Window(), {}
        self.timer = (time.perf_counter(), 0)  # start of the current metrics window: (time, step)
        self.modules = stage.modules()
        self.params = self._freeze_and_place()
        self.ema = EMA(stage.ema_modules(), config.ema_decay) if config.ema_decay else None
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda done: min(1.0, (done + 1) / warmup) if warmup else 1.0)

    def _freeze_and_place(self) -> list[nn.Parameter]:
        bad = [name for name in self.modules if not re.fullmatch(r"[\w.-]+", name)]
        if bad:
            raise ValueError(f"stage {self.stage.name!r}: module names {bad} are not usable as file names")
        for module in self.modules.values():
            module.to(self.acc.device)
        trainable = list({id(param): param for param in self.stage.trainable()}.values())
        wanted = {id(param) for param in trainable}
        owned = {id(param): param for module in self.modules.values() for param in module.parameters()}
        if not wanted or not wanted <= owned.keys():
            raise ValueError(f"stage {self.stage.name!r}: trainable() must be a non-empty subset of the "
                             "parameters of modules()")
        for key, param in owned.items():
            param.requires_grad_(key in wanted)
        for module in self.modules.values():
            module.train(any(param.requires_grad for param in module.parameters()))
        return trainable

    # -- start -----------------------------------------------------------------------------------------------

    def start(self, resume: bool) -> int:
        """Load the newest checkpoint if resuming; return the step the run starts from."""
        if self.main:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            ckpt.remove_leftovers(self.checkpoints)
        self.acc.wait_for_everyone()
        latest = ckpt.latest_checkpoint(self.checkpoints)
        if latest is not None and not resume:
            raise OutputExistsError(f"{self.run_dir} already holds a training run (checkpoint {latest.name}); "
                                    "ask for resume to continue it, or choose another folder", option="resume")
        rng = self._load(latest) if latest is not None else None
        # A run stopped between its last step and its export only needs the export.
        self.finished = self.step >= self.config.steps and (self.run_dir / "model").is_dir()
        if self.finished:
            self.console.print(f"{self.run_dir}: already trained to step {self.step}; nothing to do")
            return self.step
        if latest is not None:
            self.console.print(f"resuming {self.stage.name} from {latest}")
        self.log.truncate(self.step)
        self.model, self.optimizer = self.acc.prepare(_LossModule(self.modules, self.stage.loss), self.optimizer)
        rank = self.acc.process_index
        if rng is not None and rank < len(rng):
            ckpt.restore_rng(rng[rank])
        else:
            ckpt.seed_rng(derive_seed(_GLOBAL, self.config.seed, rank))
        return self.step

    def _load(self, path: Path) -> list[dict]:
        meta = ckpt.read_meta(path)
        self._check_compatible(path, meta)
        ckpt.load_modules(path, self.modules)
        if self.ema is not None:
            self.ema.load(ckpt.load_ema(path))
        training = ckpt.load_training(path)
        try:
            self.optimizer.load_state_dict(training["optimizer"])
        except ValueError as error:
            raise InputError(f"checkpoint {path}: its optimizer state does not fit the trainable parameters "
                             f"({error})") from error
        self.scheduler.load_state_dict(training["scheduler"])
        self.step = self.saved_step = meta["step"]
        self.window = _Window(meta["window"]["steps"], meta["window"]["sums"])
        self.last_metrics = meta["metrics"]
        return ckpt.load_rng(path)

    def _check_compatible(self, path: Path, meta: dict) -> None:
        problems = []
        if meta["stage"] != self.stage.name:
            problems.append(f"stage {meta['stage']!r} (now {self.stage.name!r})")
        if meta["num_processes"] != self.acc.num_processes:
            problems.append(f"{meta['num_processes']} processes (now {self.acc.num_processes})")
        now = asdict(self.config)
        then = meta["config"]
        problems += [f"{key}={then.get(key)!r} (now {now[key]!r})" for key in RESUME_KEYS if then.get(key) != now[key]]
        if problems:
            raise InputError(f"cannot resume from {path}: it was trained with {'; '.join(problems)}; "
                             "use the same settings or choose another folder")

    # -- loop ------------------------------------------------------------------------------------------------

    def _batches(self) -> Iterator[dict]:
        dataset: Dataset = self.stage.dataset("train")
        world, size = self.acc.num_processes, len(dataset)
        if size < self.config.batch_size * world:
            raise InputError(f"the training set has {size} examples, fewer than one batch "
                             f"({self.config.batch_size} x {world} processes)")
        start = self.step * self.config.grad_accum
        sampler = _EpochBatches(size, self.config.batch_size, self.acc.process_index, world, self.config.seed, start)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=self.config.num_workers,
                            pin_memory=self.acc.device.type == "cuda",
                            generator=torch.Generator().manual_seed(derive_seed(_WORKERS, self.config.seed, start)))
        return iter(loader)

    def loop(self, on_step: Callable[[int, dict], None] | None) -> None:
        """Optimiser steps up to ``config.steps``; on an interrupt, a checkpoint and ``KeyboardInterrupt``."""
        if self.step >= self.config.steps:
            return
        batches = self._batches()
        self.timer = begun = (time.perf_counter(), self.step)
        with _interrupt_flag() as interrupted, _progress_bar(
                self.show_progress, f"train {self.stage.name}", self.config.steps, self.step) as bar:
            while self.step < self.config.steps:
                values, stop = self._train_step(batches, interrupted)
                if on_step is not None:
                    on_step(self.step, values)
                self._after_step(values)
                rate = (self.step - begun[1]) / (time.perf_counter() - begun[0])
                bar.update(bar.task_ids[0], completed=self.step, loss=f"{values['loss']:.4g}", rate=f"{rate:.2f}")
                if stop and self.step < self.config.steps:
                    self._checkpoint()
                    self.console.print(f"interrupted: checkpoint of step {self.step} written; continue with --resume")
                    raise KeyboardInterrupt
        self.console.print(f"{self.stage.name}: trained to step {self.step} in {self.run_dir}")

    def _train_step(self, batches: Iterator[dict], interrupted: Callable[[], bool]) -> tuple[dict[str, float], bool]:
        self.step += 1
        lr = self.optimizer.param_groups[0]["lr"]
        generator = torch.Generator().manual_seed(derive_seed(_LOSS, self.config.seed, self.step,
                                                              self.acc.process_index))
        losses, sums = [], {}
        for _ in range(self.config.grad_accum):
            loss, metrics = self._micro_step(send_to_device(next(batches), self.acc.device), generator)
            losses.append(loss)
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        if self.ema is not None:
            self.ema.update(self.step)
        values, stop = self._reduce(torch.stack(losses).mean(), sums, interrupted())
        return {**values, "lr": lr}, stop

    def _micro_step(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        with self.acc.accumulate(self.model):
            loss, metrics = self.model(batch, generator)
            self.acc.backward(loss)
            if self.acc.sync_gradients:
                if self.config.max_grad_norm:
                    self.acc.clip_grad_norm_(self.params, self.config.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().float(), metrics

    def _reduce(self, loss: torch.Tensor, sums: dict[str, float], interrupted: bool) -> tuple[dict[str, float], bool]:
        """Mean loss and metrics over micro-batches and processes; whether any process was interrupted."""
        keys = sorted(sums)
        accum = self.config.grad_accum
        local = [loss.double().item()] + [sums[key] / accum for key in keys] + [float(interrupted)]
        totals = torch.tensor(local, dtype=torch.float64, device=self.acc.device)
        if self.acc.num_processes > 1:
            totals = self.acc.reduce(totals, reduction="sum")
        values = (totals / self.acc.num_processes).tolist()
        if not math.isfinite(values[0]):
            raise Medm2gError(f"{self.stage.name}: the loss became {values[0]} at step {self.step}; lower the "
                              f"learning rate or check the data ({self.checkpoints} keeps the earlier checkpoints)")
        return {"loss": values[0], **dict(zip(keys, values[1:-1], strict=True))}, totals[-1].item() > 0

    def _after_step(self, values: dict[str, float]) -> None:
        self.window.add({key: value for key, value in values.items() if key != "lr"})
        last = self.step == self.config.steps
        if self.step % self.config.log_every == 0 or last:
            self._log(values)
        if self.config.sample_every and self.step % self.config.sample_every == 0 and not last:
            self._sample()
        if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0 and not last:
            self._checkpoint()

    def _log(self, values: dict[str, float]) -> None:
        now = time.perf_counter()
        rate = (self.step - self.timer[1]) / (now - self.timer[0])
        self.timer = (now, self.step)
        samples = self.config.batch_size * self.config.grad_accum * self.acc.num_processes
        means = self.window.means()
        record = {"step": self.step, "loss": means.pop("loss"), "loss_last": values["loss"], "lr": values["lr"],
                  "steps_per_s": rate, "samples_per_s": rate * samples}
        record.update({key: value for key, value in means.items() if key not in record})
        self.log.append(record)
        self.last_metrics, self.window = record, _Window()

    # -- samples, checkpoints, export ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """EMA weights (when kept) and eval mode for sampling or export; training state restored afterwards."""
        modes = {module: module.training for part in self.modules.values() for module in part.modules()}
        for part in self.modules.values():
            part.eval()
        try:
            with self.ema.applied() if self.ema is not None else contextlib.nullcontext(), torch.no_grad():
                yield
        finally:
            for module, mode in modes.items():
                module.training = mode

    def _sample(self) -> None:
        if self.main:
            folder = self.run_dir / "samples"
            folder.mkdir(parents=True, exist_ok=True)
            with self._inference():
                self.stage.sample(folder, self.step)

    def _checkpoint(self) -> None:
        rng = gather_object([ckpt.capture_rng()])
        if self.main and self.step != self.saved_step:
            meta = {"stage": self.stage.name, "config": asdict(self.config), "num_processes": self.acc.num_processes,
                    "medm2g_version": medm2g_core.__version__, "torch_version": torch.__version__,
                    "accelerate_version": accelerate.__version__, "modules": sorted(self.modules),
                    "ema": self.ema is not None, "window": asdict(self.window), "metrics": self.last_metrics}
            training = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
            ema = self.ema.shadow if self.ema is not None else None
            ckpt.save_checkpoint(self.checkpoints, self.step, self.modules, ema, training, rng, meta)
            ckpt.rotate(self.checkpoints, self.config.keep_checkpoints)
        self.saved_step = self.step

    def finish(self) -> None:
        """Final sample, checkpoint and export (EMA weights where kept) into ``run_dir/model``."""
        self._sample()
        self._checkpoint()
        self.acc.wait_for_everyone()
        if self.main:
            # The stage gets a folder that does not exist yet and creates it (save_pretrained, atomic_dir, mkdir);
            # the trainer makes the whole export atomic and replaces an earlier one (a run extended by more steps).
            with atomic_dir(self.run_dir / "model", overwrite=True) as tmp, self._inference():
                tmp.rmdir()
                self.stage.export(tmp)
        self.acc.wait_for_everyone()

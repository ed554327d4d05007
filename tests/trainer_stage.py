"""A small but real stage for the trainer tests, and a command line that trains it in a subprocess.

The stage regresses ``tanh(x @ W)`` from 8-d inputs with a 2-layer MLP (with dropout, so that the global RNG
matters) behind a frozen random projection. Input noise comes from the trainer's generator. It records the
dataset indices it trains on and the weights it sees while sampling, so that tests can check both.

``python tests/trainer_stage.py RUN_DIR [--steps N] [--resume] [--slow-after S]`` trains it; ``--slow-after``
sleeps after every step past S so that a test can kill the process at a known point.
"""

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset

from medm2g_core.atomic import write_text
from medm2g_core.training.stage import OptimConfig
from medm2g_core.training.trainer import train

BASE = {"steps": 60, "batch_size": 8, "lr": 1e-2, "warmup_steps": 5, "log_every": 1, "checkpoint_every": 20,
        "keep_checkpoints": 2, "seed": 0}


def settings(**changes: object) -> OptimConfig:
    """The tests' optimisation settings with ``changes`` applied."""
    return OptimConfig(**{**BASE, **changes})


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state."""
    return {key: value.detach().cpu().clone() for key, value in module.state_dict().items()}


class Pairs(Dataset):
    """``size`` deterministic (x, y) pairs; items carry their index."""

    def __init__(self, size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, 8, generator=generator)
        self.y = torch.tanh(self.x @ torch.randn(8, 4, generator=generator))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "y": self.y[index], "index": index}


class RegressionStage:
    """A frozen projection followed by a trainable MLP (the EMA module)."""

    name = "test-regression"

    def __init__(self, size: int = 64, seed: int = 0) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.frozen = nn.Linear(8, 8)
            self.mlp = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 4))
        self.data = Pairs(size, seed)
        self.seen: list[int] = []
        self.sampled: list[dict[str, torch.Tensor]] = []

    def modules(self) -> dict[str, nn.Module]:
        return {"frozen": self.frozen, "mlp": self.mlp}

    def trainable(self) -> list[nn.Parameter]:
        return list(self.mlp.parameters())

    def ema_modules(self) -> dict[str, nn.Module]:
        return {"mlp": self.mlp}

    def dataset(self, split: str) -> Dataset:
        return self.data

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        self.seen += batch["index"].tolist()
        noise = 0.05 * torch.randn(batch["x"].shape, generator=generator)
        prediction = self.mlp(self.frozen(batch["x"] + noise.to(batch["x"].device)))
        loss = nn.functional.mse_loss(prediction, batch["y"])
        return loss, {"abs_error": (prediction - batch["y"]).abs().mean().item()}

    def sample(self, folder: Path, step: int) -> None:
        self.sampled.append(weights(self.mlp))
        prediction = self.mlp(self.frozen(self.data.x[:4].to(self.mlp[0].weight.device)))
        write_text(folder / f"sample-{step:08d}.txt", f"{prediction.tolist()}\n", overwrite=True)

    def export(self, folder: Path) -> None:
        folder.mkdir()
        for name, module in self.modules().items():
            save_file(weights(module), str(folder / f"{name}.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=BASE["steps"])
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--slow-after", type=int, default=None)
    args = parser.parse_args()

    def on_step(step: int, values: dict) -> None:
        if args.slow_after is not None and step > args.slow_after:
            time.sleep(0.2)

    result = train(RegressionStage(), settings(steps=args.steps), args.run_dir, resume=args.resume,
                   progress=False, on_step=on_step)
    print(asdict(result)["steps"])


if __name__ == "__main__":
    main()

"""Run by tests/test_trainer.py under ``accelerate launch`` with two CPU processes (gloo).

``distributed_step.py OUTDIR`` trains the test stage (with EMA and a mid-run checkpoint) for 6 steps into
``OUTDIR/run``, and again into ``OUTDIR/resumed`` as 3 steps then a resume to 6. Each process then writes its
initial, final and resumed MLP weights and the dataset indices it trained on into ``OUTDIR``.
"""

import json
import sys
from dataclasses import asdict
from pathlib import Path

from accelerate import PartialState
from safetensors.torch import save_file
from trainer_stage import RegressionStage, settings, weights

from medm2g_core.atomic import write_text
from medm2g_core.training.trainer import train


def main() -> None:
    out = Path(sys.argv[1])
    stage = RegressionStage()
    initial = weights(stage.mlp)
    config = settings(steps=6, batch_size=4, checkpoint_every=3, ema_decay=0.9)
    train(stage, config, out / "run", progress=False)
    train(RegressionStage(), settings(**{**asdict(config), "steps": 3}), out / "resumed", progress=False)
    resumed = RegressionStage()
    train(resumed, config, out / "resumed", resume=True, progress=False)
    rank = PartialState().process_index
    save_file(initial, str(out / f"initial-{rank}.safetensors"))
    save_file(weights(stage.mlp), str(out / f"final-{rank}.safetensors"))
    save_file(weights(resumed.mlp), str(out / f"resumed-{rank}.safetensors"))
    write_text(out / f"seen-{rank}.json", json.dumps(stage.seen))


if __name__ == "__main__":
    main()

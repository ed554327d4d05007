"""The shared trainer on a small real stage (tests/trainer_stage.py): learning, exact resume after kill -9 and
Ctrl-C, frozen weights, EMA, checkpoint rotation, refusals, and a 2-process DDP run under ``accelerate launch``.

Subprocesses run with ``OMP_NUM_THREADS=1``: the thread count changes CPU float results (so runs compared bit
for bit must share it), and on a busy 2-core machine two spinning OpenMP threads ran this stage ~100x slower than one.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file
from trainer_stage import RegressionStage, settings, weights

from medm2g_core.errors import DeviceError, InputError, OutputExistsError
from medm2g_core.training.trainer import train

HELPER = REPO / "tests" / "trainer_stage.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    return {record["step"]: record["loss"] for record in records(run_dir)}


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(path.name for path in (run_dir / "checkpoints").iterdir())


def assert_same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def start(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HELPER), str(run_dir), *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def stop_after_checkpoint(process: subprocess.Popen, run_dir: Path, sig: int) -> str:
    """Send ``sig`` as soon as the step-40 checkpoint exists (the helper then sleeps 0.2 s per step); stderr."""
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "step-00000040").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
        time.sleep(0.01)
    process.send_signal(sig)
    return process.communicate(timeout=120)[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 60-step run in a subprocess."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    finish(start(run_dir))
    return run_dir


def assert_matches_reference(run_dir: Path, reference: Path) -> None:
    assert [record["step"] for record in records(run_dir)] == list(range(1, 61))
    resumed, uninterrupted = losses(run_dir), losses(reference)
    assert [resumed[step] for step in range(41, 61)] == [uninterrupted[step] for step in range(41, 61)]
    for name in ("mlp", "frozen"):
        assert_same(load_file(run_dir / "model" / f"{name}.safetensors"),
                    load_file(reference / "model" / f"{name}.safetensors"))


def test_loss_goes_down(tmp_path):
    result = train(RegressionStage(), settings(steps=100, checkpoint_every=0), tmp_path / "run", progress=False)
    logged = [record["loss"] for record in records(tmp_path / "run")]
    assert result.steps == 100 and len(logged) == 100
    assert sum(logged[:10]) / 10 > 2 * sum(logged[-10:]) / 10
    assert result.metrics["step"] == 100
    assert {"loss_last", "lr", "steps_per_s", "samples_per_s", "abs_error"} <= result.metrics.keys()


def test_resume_after_kill_9_is_exact(tmp_path, reference):
    run_dir = tmp_path / "run"
    process = start(run_dir, "--slow-after", "40")
    stop_after_checkpoint(process, run_dir, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "model").exists()
    finish(start(run_dir, "--resume"))
    assert_matches_reference(run_dir, reference)


def test_ctrl_c_writes_a_checkpoint_and_resume_is_exact(tmp_path, reference):
    run_dir = tmp_path / "run"
    process = start(run_dir, "--slow-after", "40")
    err = stop_after_checkpoint(process, run_dir, signal.SIGINT)
    assert process.returncode == -signal.SIGINT and "KeyboardInterrupt" in err
    interrupted = [int(name.removeprefix("step-")) for name in checkpoints(run_dir)]
    assert 40 < interrupted[-1] < 60, interrupted
    finish(start(run_dir, "--resume"))
    assert_matches_reference(run_dir, reference)


def test_frozen_parameters_stay_bit_identical(tmp_path):
    stage = RegressionStage()
    frozen, mlp = weights(stage.frozen), weights(stage.mlp)
    train(stage, settings(steps=20, weight_decay=0.1), tmp_path / "run", progress=False)
    assert not any(param.requires_grad for param in stage.frozen.parameters())
    assert_same(weights(stage.frozen), frozen)
    assert_same(load_file(tmp_path / "run" / "checkpoints" / "step-00000020" / "modules" / "frozen.safetensors"),
                frozen)
    assert not torch.equal(weights(stage.mlp)["0.weight"], mlp["0.weight"])


def test_ema_is_exported_and_sampling_restores_training_weights(tmp_path):
    stage = RegressionStage()
    train(stage, settings(steps=20, ema_decay=0.9, sample_every=5), tmp_path / "ema", progress=False)
    checkpoint = tmp_path / "ema" / "checkpoints" / "step-00000020"
    ema = {key.removeprefix("mlp."): value for key, value in load_file(checkpoint / "ema.safetensors").items()}
    raw = load_file(checkpoint / "modules" / "mlp.safetensors")
    exported = load_file(tmp_path / "ema" / "model" / "mlp.safetensors")
    assert_same(exported, ema)
    assert not torch.equal(exported["0.weight"], raw["0.weight"])
    assert len(stage.sampled) == 4 and all(not torch.equal(s["0.weight"], raw["0.weight"]) for s in stage.sampled)
    assert_same(stage.sampled[-1], ema)
    assert_same(weights(stage.mlp), raw)  # training weights are back after sample() and export()
    plain = RegressionStage()
    train(plain, settings(steps=20, ema_decay=0.9), tmp_path / "plain", progress=False)
    assert_same(weights(plain.mlp), raw)  # sampling every 5 steps changed nothing in training
    assert losses(tmp_path / "plain") == losses(tmp_path / "ema")


def test_rotation_finished_runs_and_refusals(tmp_path):
    run_dir = tmp_path / "run"
    train(RegressionStage(), settings(steps=50, checkpoint_every=10), run_dir, progress=False)
    assert checkpoints(run_dir) == ["step-00000040", "step-00000050"]
    (run_dir / "checkpoints" / ".step-00000060.partial-abc").mkdir()  # what a killed writer leaves
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    again = train(RegressionStage(), settings(steps=50, checkpoint_every=10), run_dir, resume=True, progress=False)
    assert again.steps == 50 and again.metrics == records(run_dir)[-1]
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics
    assert checkpoints(run_dir) == ["step-00000040", "step-00000050"]
    with pytest.raises(OutputExistsError, match="ask for resume to continue it") as refused:
        train(RegressionStage(), settings(steps=50), run_dir, progress=False)
    assert refused.value.option == "resume"
    with pytest.raises(InputError, match="seed=0"):
        train(RegressionStage(), settings(steps=60, seed=1), run_dir, resume=True, progress=False)
    renamed = RegressionStage()
    renamed.name = "other"
    with pytest.raises(InputError, match="stage 'test-regression'"):
        train(renamed, settings(steps=60), run_dir, resume=True, progress=False)
    if torch.cuda.device_count() <= 3:
        with pytest.raises(DeviceError):
            train(RegressionStage(), settings(), tmp_path / "gpu", device="cuda:3", progress=False)


def test_runs_in_one_process_may_change_precision(tmp_path):
    for precision in ("bf16", "no"):
        result = train(RegressionStage(), settings(steps=3, mixed_precision=precision), tmp_path / precision,
                       progress=False)
        assert result.steps == 3 and math.isfinite(result.metrics["loss"])


def test_a_finished_run_extends_exactly(tmp_path):
    short, full = tmp_path / "short", tmp_path / "full"
    train(RegressionStage(), settings(steps=30), short, progress=False)
    train(RegressionStage(), settings(steps=50), short, resume=True, progress=False)
    train(RegressionStage(), settings(steps=50), full, progress=False)
    assert losses(short) == losses(full)
    assert_same(load_file(short / "model" / "mlp.safetensors"), load_file(full / "model" / "mlp.safetensors"))


def test_two_processes_stay_in_sync_on_disjoint_data_and_resume_exactly(tmp_path):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               str(REPO / "tests" / "distributed_step.py"), str(tmp_path)]
    # --multi_gpu is accelerate's torchrun launcher; without CUDA it runs MULTI_CPU over gloo. (--cpu with several
    # processes goes through mpirun instead.) HF_HOME keeps a developer's accelerate config file out of the way.
    env = {**ENV, "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    final = [load_file(tmp_path / f"final-{rank}.safetensors") for rank in (0, 1)]
    assert_same(final[0], final[1])
    for rank in (0, 1):
        assert_same(load_file(tmp_path / f"resumed-{rank}.safetensors"), final[rank])
    assert losses(tmp_path / "resumed") == losses(tmp_path / "run")
    assert len(torch.load(tmp_path / "run" / "checkpoints" / "step-00000006" / "rng.pt", weights_only=True)) == 2
    assert not torch.equal(final[0]["0.weight"], load_file(tmp_path / "initial-0.safetensors")["0.weight"])
    seen = [json.loads((tmp_path / f"seen-{rank}.json").read_text()) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 6 * 4
    assert not set(seen[0][:32]) & set(seen[1][:32])  # one epoch is 64 / (4 x 2) = 8 steps: no overlap
    assert [record["step"] for record in records(tmp_path / "run")] == list(range(1, 7))
    assert checkpoints(tmp_path / "run") == ["step-00000003", "step-00000006"]

"""Shared fixtures: a CLI runner that captures stdout and stderr separately, and external-tool guards."""

import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, isolated: bool = False) -> CliResult:
    """Run ``medm2g ARGS`` and capture its exit code, stdout and stderr (neither a terminal, as in a pipeline).

    In this process through ``medm2g_cli.app.run`` (the entry point's own function: same parser, same error
    contract), with ``cwd`` and ``env`` applied for the call; ``isolated=True`` starts a real subprocess instead,
    for what only a fresh interpreter shows (the installed entry point, settings read at import time)."""
    if isolated:
        proc = subprocess.run(
            [sys.executable, "-m", "medm2g_cli", *args],
            capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=600,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)
    from medm2g_cli.app import run

    out, err = io.StringIO(), io.StringIO()
    with _environment(env), contextlib.chdir(cwd or os.getcwd()), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        code = run(list(args))
    return CliResult(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environment(env: dict | None) -> Iterator[None]:
    """``os.environ`` with ``env`` added for the duration, then exactly as before."""
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def cli():
    return run_cli


def require_tool(name: str) -> str:
    """Path of an external tool; in CI (CI=true) a missing tool fails the test instead of skipping it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} must be installed in CI (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture(scope="module")
def default_model():
    """The embedded default model on the CPU, loaded once per module (read it; do not change it)."""
    from medm2g_core.hub import load_model

    return load_model(None, device="cpu")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny models: on a busy 2-core machine two threads ran them ~30x slower.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

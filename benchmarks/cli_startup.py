"""Benchmark: how fast `medm2g` starts, and how long the default test run takes, against a baseline in the same run.

Start-up: median wall time of `medm2g --version`, `medm2g --help` and two command helps over N runs each, next to
`python -c pass` (the interpreter alone) measured interleaved with them, so a busy machine moves both alike.
With `--before REV`, the same commands of an older commit run from a git worktree of it (installed nowhere: it is
put first on PYTHONPATH), so the table shows old and new side by side.

Test run: with `--tests`, the README's default `pytest` on this tree and (with `--before`) on the worktree of REV,
one after the other, each as a fresh process; the ratio is the figure issue 15 asks for.

    python benchmarks/cli_startup.py --runs 9 --before 118e487 --write
    python benchmarks/cli_startup.py --runs 9 --before 118e487 --tests --write   # adds ~50 min on 2 cores
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_report import ROOT, write_section

SECTION = "## CLI start-up and test-run time (cli_startup.py)"
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "medm2g --version": ["-m", "medm2g_cli", "--version"],
    "medm2g --help": ["-m", "medm2g_cli", "--help"],
    "medm2g translate --help": ["-m", "medm2g_cli", "translate", "--help"],
    "medm2g train cross --help": ["-m", "medm2g_cli", "train", "cross", "--help"],
}


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def start_times(trees: dict[str, Path], runs: int) -> dict[str, dict[str, float]]:
    """Median seconds per (tree, command); the runs of every tree and command interleave."""
    samples: dict[str, dict[str, list[float]]] = {tree: {c: [] for c in COMMANDS} for tree in trees}
    for _ in range(runs):
        for tree, folder in trees.items():
            env = {**os.environ, "PYTHONPATH": str(folder), "COLUMNS": "100"}
            for name, argv in COMMANDS.items():
                samples[tree][name].append(timed(argv, folder, env))
    return {tree: {c: statistics.median(v) for c, v in by.items()} for tree, by in samples.items()}


def test_time(folder: Path) -> tuple[float, str]:
    """Wall seconds of the README's default test command in ``folder`` and pytest's closing summary line.

    A failing run is reported with its summary rather than stopping the benchmark: the other tree's time still
    counts, and the table shows that the runs did not pass.
    """
    env = {**os.environ, "PYTHONPATH": str(folder)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=folder, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0:
        print(f"tests failed in {folder}:\n{done.stdout[-3000:]}", file=sys.stderr)
    return seconds, (lines[-1].strip("= ") if lines else f"exit {done.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--before", help="an older commit to compare with (checked out in a temporary worktree)")
    parser.add_argument("--tests", action="store_true", help="also time the default test run (long)")
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"now": ROOT}
        if args.before:
            old = Path(scratch) / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(old), args.before], cwd=ROOT, check=True,
                           capture_output=True)
            trees[args.before] = old
        try:
            times = start_times(trees, args.runs)
            tests = {tree: test_time(folder) for tree, folder in trees.items()} if args.tests else {}
        finally:
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(trees[args.before])], cwd=ROOT,
                               check=True, capture_output=True)
    body = report(times, tests, args.runs)
    print(body)
    if args.write:
        command = "python benchmarks/cli_startup.py --runs {}{}{}".format(
            args.runs, f" --before {args.before}" if args.before else "", " --tests" if args.tests else "")
        write_section(SECTION, body, command)


def report(times: dict[str, dict[str, float]], tests: dict[str, tuple[float, str]], runs: int) -> str:
    trees = list(times)
    head = "| command | " + " | ".join(f"{t} median s | {t} / python -c pass" for t in trees) + " |"
    rows = [head, "|---|" + "---:|---:|" * len(trees)]
    for command in COMMANDS:
        cells = [f"{times[t][command]:.3f} | {times[t][command] / times[t]['python -c pass']:.1f}x" for t in trees]
        rows.append(f"| {command} | " + " | ".join(cells) + " |")
    lines = [f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}; median of {runs} interleaved runs per command.", "", *rows]
    if len(trees) == 2:
        now, before = trees
        lines += ["", f"`medm2g --help`: {times[before]['medm2g --help'] / times[now]['medm2g --help']:.1f}x faster "
                      f"than {before}."]
    if tests:
        lines += ["", "| default test run (`pytest`) | wall time | pytest's summary |", "|---|---:|---|",
                  *[f"| {tree} | {seconds / 60:.1f} min | {summary} |" for tree, (seconds, summary) in tests.items()]]
        if len(tests) == 2:
            now, before = list(tests)
            ratio = tests[now][0] / tests[before][0]
            lines.append(f"\nThe test run takes {ratio:.2f} of the time it took at {before}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

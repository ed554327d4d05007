"""Benchmark: wall time of `medm2g demo` as a new user runs it (a fresh process, the embedded model, offline).

The README's Quickstart quotes this figure.

    python benchmarks/demo_time.py --runs 2 --write
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

import torch
from bench_report import write_section

SECTION = "## `medm2g demo` wall time (demo_time.py)"


def one_run() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "medm2g_cli", "-q", "demo", "--out", str(Path(tmp) / "demo")],
                       check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    times = [one_run() for _ in range(args.runs)]
    body = ("| runs | median s | min s | max s |\n|---|---|---|---|\n"
            f"| {len(times)} | {statistics.median(times):.1f} | {min(times):.1f} | {max(times):.1f} |\n\n"
            "Whole process (imports, model load, two phantom cases, every task at DDIM 50, the HTML page); "
            f"{platform.machine()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads.")
    print(body)
    if args.write:
        write_section(SECTION, body, f"python benchmarks/demo_time.py --runs {args.runs} --write")


if __name__ == "__main__":
    main()

"""Benchmark: how fast `medm2g prepare phantom` makes cases on this machine, and how much disk they take.

Runs the real command (with its workers) into a temporary folder, then times one case of each task in
this process as the single-process baseline. With ``--write`` the table replaces this benchmark's
section of BENCHMARKS.md.

    python benchmarks/phantom_rate.py --cases 200 --workers 2 --write
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_report import write_section

from medm2g_core.phantoms.world import PhantomConfig, make_case

SECTION = "## Phantom world generation (phantom_rate.py)"


def folder_size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def single_case_seconds(task: str, repeats: int = 3) -> float:
    config = PhantomConfig(cases=1, tasks=(task,))
    start = time.perf_counter()
    for seed in range(repeats):
        make_case(task, seed, config)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "phantom"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "medm2g_cli", "--quiet", "prepare", "phantom", "--out", str(out),
                        "--cases", str(args.cases), "--workers", str(args.workers)], check=True)
        wall = time.perf_counter() - start
        size = folder_size_mb(out)
        verify = subprocess.run([sys.executable, "-m", "medm2g_cli", "--quiet", "prepare", "verify", str(out)])
    brain, chest = single_case_seconds("brain"), single_case_seconds("chest")
    body = "\n".join([
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores. Default grid: brain 2 mm with a "
        "24-slice slab (CT + 5 MRI contrasts), chest CT 2.5 mm + 256x256 DRR; NIfTI .nii.gz output.",
        "",
        "| cases | workers | wall s | cases/s | disk MB | verify | one brain case s | one chest case s |",
        "|---|---|---|---|---|---|---|---|",
        f"| {args.cases} | {args.workers} | {wall:.1f} | {args.cases / wall:.2f} | {size:.0f} | "
        f"{'pass' if verify.returncode == 0 else 'FAIL'} | {brain:.2f} | {chest:.2f} |",
    ])
    print(body)
    if args.write:
        write_section(SECTION, body, "python benchmarks/phantom_rate.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

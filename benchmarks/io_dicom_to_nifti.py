"""Benchmark: read a 512x512xN CT DICOM series and write it as NIfTI, medm2g against dcm2niix.

Both tools run as separate processes on the same series in the same run; wall time is the median of
``--repeats`` runs and peak memory is the child's maximum resident set size (``wait4``). The series is made
in a separate process so that this process stays small: Linux carries the parent's peak RSS at fork into
the child's ``ru_maxrss``. Results are
printed as a Markdown table and, with ``--write``, replace this benchmark's section of BENCHMARKS.md.

    python benchmarks/io_dicom_to_nifti.py --slices 300 --repeats 3 --write
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_report import write_section

from medm2g_core.io.dicom_write import write_dicom_series
from medm2g_core.io.volume import Volume

SECTION = "## DICOM series -> NIfTI (io_dicom_to_nifti.py)"


def make_series(folder: Path, slices: int) -> None:
    """A CT-like 512x512xN series in HU: a body ellipse with bone and air, plus noise."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, 512), np.linspace(-1, 1, 512), indexing="ij")
    body = ((x / 0.8) ** 2 + (y / 0.6) ** 2) < 1
    data = np.full((512, 512, slices), -1000.0, np.float32)
    data[body] = 40.0
    data[(x**2 + (y + 0.3) ** 2) < 0.01] = 900.0
    data += rng.normal(0, 15, data.shape).astype(np.float32)
    affine = np.diag([0.7, 0.7, 1.0, 1.0])
    affine[:3, 3] = [-179.0, -179.0, -150.0]
    write_dicom_series(Volume(np.round(data), affine, "CT", "HU"), folder)


def run_measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss / 1024


def measure(series: Path, work: Path, compressed: bool, repeats: int) -> dict[str, tuple[float, float]]:
    suffix = ".nii.gz" if compressed else ".nii"
    results = {}
    for tool in ("medm2g", "dcm2niix"):
        walls, peaks = [], []
        for attempt in range(repeats):
            out = work / f"{tool}-{attempt}"
            out.mkdir()
            if tool == "medm2g":
                target = str(out / f"ct{suffix}")
                command = [sys.executable, "-m", "medm2g_cli", "--quiet", "convert", str(series), target]
            else:
                gzip = "y" if compressed else "n"
                command = ["dcm2niix", "-z", gzip, "-b", "n", "-f", "ct", "-o", str(out), str(series)]
            wall, peak = run_measured(command)
            walls.append(wall)
            peaks.append(peak)
            shutil.rmtree(out)
        results[tool] = (statistics.median(walls), max(peaks))
    return results


def table(rows: list[tuple[str, dict]], slices: int, size_mb: float) -> str:
    lines = [
        f"Series: 512x512x{slices} int16 CT ({size_mb:.0f} MB of DICOM), {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores. Median wall time and peak RSS of the whole process (CLI start included).",
        "",
        "| output | medm2g s | dcm2niix s | time ratio (medm2g/dcm2niix) | medm2g peak MiB | dcm2niix peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    for label, result in rows:
        (m_wall, m_peak), (d_wall, d_peak) = result["medm2g"], result["dcm2niix"]
        lines.append(f"| {label} | {m_wall:.2f} | {d_wall:.2f} | {m_wall / d_wall:.2f} | {m_peak:.0f} | {d_peak:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--make-series", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_series:
        make_series(args.make_series, args.slices)
        return
    if shutil.which("dcm2niix") is None:
        sys.exit("dcm2niix is needed for the baseline: apt-get install dcm2niix")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        series = work / "series"
        maker = [sys.executable, __file__, "--make-series", str(series), "--slices", str(args.slices)]
        subprocess.run(maker, check=True)
        size_mb = sum(f.stat().st_size for f in series.iterdir()) / 1e6
        rows = [(label, measure(series, work, compressed, args.repeats))
                for label, compressed in ((".nii", False), (".nii.gz", True))]
    body = table(rows, args.slices, size_mb)
    print(body)
    if args.write:
        write_section(SECTION, body, "python benchmarks/io_dicom_to_nifti.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

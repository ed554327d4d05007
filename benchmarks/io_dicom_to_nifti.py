"""Benchmark: DICOM series -> NIfTI time and memory, medm2g against dcm2niix on a 512x512xN CT series.

Every tool runs as a separate process on the same series in the same run: ``medm2g CLI`` is
``python -m medm2g_cli convert`` (the whole command line, its start-up included), ``medm2g core`` a
``python -c`` call of ``read_volume`` + ``write_volume`` (Python and the I/O modules only) and ``dcm2niix``
the baseline. Each tool runs once untimed (page cache, memory pages), then ``--repeats`` times; wall time
is the median, peak memory the largest maximum resident set size of the child (``wait4``), also as a ratio
to the volume's float32 size. The series is made in a separate process so that this process stays small:
Linux carries the parent's peak RSS at fork into the child's ``ru_maxrss``. Results are printed as a
Markdown table and, with ``--write``, replace this benchmark's section of BENCHMARKS.md.

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

SECTION = "## DICOM series -> NIfTI: time and memory"
SIZE = 512
CORE = ("import sys; from medm2g_core.io.load import read_volume, write_volume; "
        "write_volume(read_volume(sys.argv[1]), sys.argv[2])")
TOOLS = ("medm2g CLI", "medm2g core", "dcm2niix")
TARGET_TIME_RATIO = 3.0  # issue 15, on .nii
TARGET_PEAK_RATIO = 2.5  # issue 15: peak RSS / float32 volume


def make_series(folder: Path, slices: int) -> None:
    """A CT-like 512x512xN series in HU: a body ellipse with bone and air, plus noise."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, SIZE), np.linspace(-1, 1, SIZE), indexing="ij")
    body = ((x / 0.8) ** 2 + (y / 0.6) ** 2) < 1
    data = np.full((SIZE, SIZE, slices), -1000.0, np.float32)
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


def tool_command(tool: str, series: Path, out: Path, suffix: str) -> list[str]:
    target = str(out / f"ct{suffix}")
    if tool == "medm2g CLI":
        return [sys.executable, "-m", "medm2g_cli", "--quiet", "convert", str(series), target]
    if tool == "medm2g core":
        return [sys.executable, "-c", CORE, str(series), target]
    gzip = "y" if suffix == ".nii.gz" else "n"
    return ["dcm2niix", "-z", gzip, "-b", "n", "-f", "ct", "-o", str(out), str(series)]


def measure(series: Path, work: Path, suffix: str, repeats: int) -> dict[str, tuple[float, float]]:
    """Per tool: (median wall s, peak RSS MiB) over ``repeats`` timed runs after one untimed run."""
    results = {}
    for tool in TOOLS:
        walls, peaks = [], []
        for attempt in range(repeats + 1):
            out = work / "out"
            out.mkdir()
            wall, peak = run_measured(tool_command(tool, series, out, suffix))
            shutil.rmtree(out)
            if attempt:
                walls.append(wall)
                peaks.append(peak)
        results[tool] = (statistics.median(walls), max(peaks))
    return results


def table(rows: list[tuple[str, dict]], slices: int, size_mb: float, import_s: float) -> str:
    volume_mib = SIZE * SIZE * slices * 4 / 2**20
    lines = [
        f"Series: {SIZE}x{SIZE}x{slices} int16 CT ({size_mb:.0f} MB of DICOM; {volume_mib:.0f} MiB as float32), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores. Median wall time and peak RSS of "
        "the whole process after one untimed run of each tool. *medm2g CLI*: `python -m medm2g_cli convert` "
        "(command-line start-up included); *medm2g core*: `python -c` calling "
        "`medm2g_core.io.load.read_volume` + `write_volume` (Python and the I/O modules only). "
        f"Importing `medm2g_core.io.load` alone takes {import_s:.2f} s (median, whole process). "
        f"Targets (issue 15): time ratio <= {TARGET_TIME_RATIO:g} on .nii, peak <= {TARGET_PEAK_RATIO:g}x the "
        "float32 volume.",
        "",
        "| output | tool | wall s | time ratio (tool/dcm2niix) | peak MiB | peak / float32 volume |",
        "|---|---|---|---|---|---|",
    ]
    for label, result in rows:
        baseline = result["dcm2niix"][0]
        for tool in TOOLS:
            wall, peak = result[tool]
            lines.append(f"| {label} | {tool} | {wall:.2f} | {wall / baseline:.2f} | {peak:.0f} | "
                         f"{peak / volume_mib:.2f} |")
    return "\n".join(lines)


def import_time(repeats: int) -> float:
    """Median wall time of a process that only imports the convert path's modules."""
    command = [sys.executable, "-c", "import medm2g_core.io.load"]
    walls = [run_measured(command)[0] for _ in range(repeats + 1)]
    return statistics.median(walls[1:])


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
        rows = [(suffix, measure(series, work, suffix, args.repeats)) for suffix in (".nii", ".nii.gz")]
    body = table(rows, args.slices, size_mb, import_time(args.repeats))
    print(body)
    if args.write:
        write_section(SECTION, body, "python benchmarks/io_dicom_to_nifti.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

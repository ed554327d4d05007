"""Torture benchmark: every DICOM/NIfTI test file of the pydicom, pydicom-data and nibabel wheels, plus seeded
bit-flipped and truncated mutants, through ``medm2g inspect`` and ``medm2g convert`` (in-process, ``app.run``).

Each run is counted as ok (exit 0), refused (exit 2, one ``error:`` line, nothing written) or crash (any other
exit, a traceback, an "internal error", or partial output left behind). The target is zero crashes.
``tests/test_torture.py`` runs a seeded, bounded subset of the same corpus.

    python benchmarks/torture.py --mutants 3 --write
"""

import argparse
import contextlib
import io
import platform
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel
from pydicom.data import get_testdata_files

SECTION = "## Torture: wheels' test files and mutants through inspect/convert (torture.py)"
NIBABEL_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".dcm")


@dataclass(frozen=True)
class Outcome:
    """One CLI run on one input: its verdict and what it printed on stderr."""

    source: str
    command: str
    code: int
    verdict: str  # ok | refused | crash
    stderr: str


def wheel_files() -> list[Path]:
    """The files of the installed pydicom and pydicom-data test stores (DICOM, plus a few JSON/text files that
    must be refused cleanly) and the NIfTI-1/Analyze/DICOM files of nibabel's test data."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(Exception):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dicom = [Path(p) for p in get_testdata_files("*")]  # pydicom's own data and pydicom-data's store
    nibabel_data = Path(nibabel.__file__).parent / "tests" / "data"
    nifti = [p for p in nibabel_data.iterdir() if p.name.endswith(NIBABEL_SUFFIXES)]
    return sorted({p for p in dicom if p.is_file()} | set(nifti))


def mutants(files: list[Path], per_file: int, out: Path, seed: int) -> list[Path]:
    """``per_file`` damaged copies of each file: bytes flipped at random, or cut short. Same seed, same mutants."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for number, path in enumerate(files):
        data = bytearray(path.read_bytes())
        if not data:
            continue
        for copy in range(per_file):
            damaged = bytearray(data)
            if copy % 3 == 2:
                damaged = damaged[: rng.randrange(1, len(damaged))]
            else:
                for _ in range(rng.randint(1, 16)):
                    damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
            target = out / f"m{number:03d}-{copy}-{path.stem.removesuffix('.nii')}{suffix}"
            target.write_bytes(bytes(damaged))
            made.append(target)
    return made


def _verdict(code: int, stderr: str, leftover: bool) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code == 0 and not leftover:
        return "ok"
    if code == 2 and not leftover and "Traceback" not in stderr and "internal error" not in stderr \
            and sum(line.startswith("error:") for line in lines) == 1:
        return "refused"
    return "crash"


def run_one(source: Path, out_dir: Path) -> list[Outcome]:
    """``inspect SOURCE`` and ``convert SOURCE OUT.nii.gz`` in this process; their verdicts."""
    from medm2g_cli.app import run

    outcomes = []
    target = out_dir / f"{source.name.replace('.', '_')}.nii.gz"
    for command, argv in (("inspect", ["inspect", str(source)]),
                          ("convert", ["convert", str(source), str(target), "--overwrite"])):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = run(argv)
            except BaseException as exc:  # anything escaping app.run is itself a crash
                code = -1
                err.write(f"escaped app.run: {type(exc).__name__}: {exc}\n")
        leftover = command == "convert" and code != 0 and (target.exists() or any(out_dir.glob(".*tmp*")))
        outcomes.append(Outcome(str(source), command, code, _verdict(code, err.getvalue(), leftover), err.getvalue()))
        if target.exists() and code == 0:
            target.unlink()
    return outcomes


def torture(sources: list[Path], out_dir: Path, progress: bool = False) -> list[Outcome]:
    """Every source through inspect and convert."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for number, source in enumerate(sources):
        results += run_one(source, out_dir)
        if progress and number % 50 == 0:
            print(f"{number}/{len(sources)}", file=sys.__stderr__, flush=True)
    return results


def main() -> None:
    import tempfile

    from bench_report import write_section

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mutants", type=int, default=3, help="damaged copies of each wheel file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        files = wheel_files()
        damaged = mutants(files, args.mutants, Path(tmp) / "mutants", args.seed)
        results = torture(files, Path(tmp) / "out", progress=True)
        results += torture(damaged, Path(tmp) / "out", progress=True)
    rows = Counter((("original" if "/mutants/" not in o.source else "mutant"), o.command, o.verdict) for o in results)
    lines = ["| inputs | command | ok | refused | crash |", "|---|---|---|---|---|"]
    for kind in ("original", "mutant"):
        for command in ("inspect", "convert"):
            lines.append(f"| {kind} | {command} | {rows[(kind, command, 'ok')]} | {rows[(kind, command, 'refused')]} "
                         f"| {rows[(kind, command, 'crash')]} |")
    crashes = [o for o in results if o.verdict == "crash"]
    for line in lines:
        print(line)
    for outcome in crashes:
        print(f"CRASH {outcome.command} {outcome.source} exit {outcome.code}: {outcome.stderr.strip()[-300:]}")
    body = "\n".join(lines) + (
        f"\n\n{len(files)} wheel files (pydicom + pydicom-data + nibabel test data), {len(damaged)} mutants "
        f"(seed {args.seed}: 1-16 random bytes replaced, or cut short). Crash = exit other than 0/2, a traceback, "
        f"an internal error, more than one error line, or output left behind after a refusal. "
        f"{platform.machine()}, {time.perf_counter() - started:.0f} s."
    )
    if args.write:
        write_section(SECTION, body, f"python benchmarks/torture.py --mutants {args.mutants} --seed {args.seed} "
                                     "--write")
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()

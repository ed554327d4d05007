"""Benchmark: do generated reports contradict themselves or name the other anatomy's findings? (issue 14, item 7)

For held-out films of phantom worlds (chest films and skull films), ``medm2g report`` with and without the
consistency redraw (``--redraws``): the share of reports that state and negate one finding, the share that name
a finding of the other anatomy, the share still failing either check, the draws taken, finding F1 against the
case's own report, and seconds per report. The redraw keeps the model's own outputs (new seeds of the same
guide); it changes what users get, not what the model learned, so both rows are shown.

    python benchmarks/report_consistency.py --data data/phantom60 data/chest160 --cases 12 --write
"""

import argparse
import platform
import time

import numpy as np
import torch
from bench_report import write_section

from medm2g_core.data.labeler import contradictions, foreign_findings
from medm2g_core.data.manifest import read_manifest
from medm2g_core.evaluation.tasks import case_anatomy, held_out
from medm2g_core.hub import load_model
from medm2g_core.io.load import read_volume
from medm2g_core.metrics.text_metrics import finding_scores
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.sampling.report import ReportOptions, write_report

SECTION = "## Report consistency (report_consistency.py)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", required=True, help="phantom world folders (manifest.jsonl)")
    parser.add_argument("--cases", type=int, default=12, help="test films per world")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--redraws", type=int, nargs="+", default=[0, 8])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    model = load_model(None, device="cpu")
    cases = []
    for folder in args.data:
        manifest = read_manifest(folder)
        for record in held_out(manifest, "test", ("xray",), args.cases, report=True):
            cases.append((read_volume(manifest.image_path(record, "xray")), record.report, case_anatomy(record)))
    rows = []
    for redraws in args.redraws:
        made, truth, anatomies, draws, started = [], [], [], [], time.perf_counter()
        for seed in range(args.seeds):
            for film, report, anatomy in cases:
                written = write_report(model, film, ReportOptions(SamplingConfig(steps=args.steps), seed,
                                                                  redraws=redraws))[0]
                made.append(written.text)
                truth.append(report)
                anatomies.append(anatomy)
                draws.append(written.draws)
        seconds = (time.perf_counter() - started) / len(made)
        contradicting = [bool(contradictions(t)) for t in made]
        foreign = [bool(foreign_findings(t, a)) for t, a in zip(made, anatomies, strict=True)]
        failing = np.mean([c or f for c, f in zip(contradicting, foreign, strict=True)])
        findings = finding_scores(made, truth)
        rows.append((redraws, np.mean(contradicting), np.mean(foreign), failing, np.mean(draws), max(draws),
                     findings["f1_micro"], findings["f1_macro"], seconds))
        print(rows[-1], flush=True)
    chest = sum(a == "chest" for _, _, a in cases)
    lines = [
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, fp32; embedded default; {len(cases)} test "
        f"films ({chest} chest, {len(cases) - chest} skull) of {', '.join(args.data)}; {args.seeds} seeds; DDIM "
        f"{args.steps} steps. Anatomy from the film's body part (CHEST / SKULL in its header).", "",
        "| redraws | contradicts itself | names the other anatomy | fails either | mean draws | max draws "
        "| finding F1 micro | F1 macro | s per report |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for redraws, contra, foreign, failing, mean, most, micro, macro, seconds in rows:
        lines.append(f"| {redraws} | {contra:.2f} | {foreign:.2f} | {failing:.2f} | {mean:.2f} | {most} | "
                     f"{micro:.3f} | {macro:.3f} | {seconds:.2f} |")
    body = "\n".join(lines)
    print(body)
    if args.write:
        command = (f"python benchmarks/report_consistency.py --data {' '.join(args.data)} --cases {args.cases} "
                   f"--seeds {args.seeds} --redraws {' '.join(map(str, args.redraws))} --steps {args.steps} --write")
        write_section(SECTION, body, command)


if __name__ == "__main__":
    main()

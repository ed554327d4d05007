"""Benchmark: the project's quality record: every evaluation task on a fixed held-out phantom split with the
default model and the baselines, through ``medm2g evaluate``'s harness (medm2g_core.evaluation.tasks).

Writes each task's results.json, results.md and index.html under ``--out`` and the tables, with the exact
command, to BENCHMARKS.md. Later changes are judged against these numbers.

    python benchmarks/quality.py --data data/c64 --out runs/quality --cases 8 --seeds 3 --write
"""

import argparse
import platform
import time
from pathlib import Path

import torch
from bench_report import write_section

from medm2g_core.data.cache import Cache
from medm2g_core.data.manifest import read_manifest
from medm2g_core.evaluation.results_page import markdown_table, write_results
from medm2g_core.evaluation.tasks import EvalOptions, evaluate
from medm2g_core.hub import load_model
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.vocabulary import EVAL_TASKS

SECTION = "## Quality on the phantom benchmark (quality.py)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the phantom world's cache (prepare cache)")
    parser.add_argument("--out", type=Path, required=True, help="folder for each task's results and page")
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--split", default="test")
    parser.add_argument("--cases", type=int, default=8, help="cases per task (the text tasks take 4x as many)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--tasks", default=",".join(EVAL_TASKS))
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    cache = Cache.open(args.data)
    manifest = read_manifest(cache.index["manifest"])
    tables, timings = [], []
    command = (f"python benchmarks/quality.py --data {args.data} --out {args.out} --split {args.split} --cases "
               f"{args.cases} --seeds {args.seeds} --steps {args.steps} --tasks {args.tasks}" + " --write" * args.write)
    for task in args.tasks.split(","):
        cases = args.cases * (4 if task in ("report", "text-to-image") else 1)
        options = EvalOptions(args.split, cases, args.seeds, SamplingConfig(steps=args.steps))
        started = time.perf_counter()
        result = evaluate(task, model, manifest, cache, options)
        timings.append(f"{task} {time.perf_counter() - started:.0f} s")
        write_results(result, args.out / task, command)
        tables.append(markdown_table(result))
        print(tables[-1], flush=True)
    body = "\n".join(tables) + (
        f"\nModel: {model.info.get('model_id')} (sha256 of its index {model.info.get('model_sha256', '')[:12]}), "
        f"split {args.split}, DDIM {args.steps} steps, eta 1, guidance: each flow's default (2; 7 on X-ray <-> report "
        f"hops of the report round), seeds 0..{args.seeds - 1}; "
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; {', '.join(timings)}. "
        "Pages with sample grids, error maps and per-case plots: `OUT/<task>/index.html`."
    )
    if args.write:
        write_section(SECTION, body, command)


if __name__ == "__main__":
    main()

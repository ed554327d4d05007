"""``medm2g synthesize-dataset``: a paired synthetic corpus, sharded across processes and resumable."""

import time
from pathlib import Path

import typer

from medm2g_cli import console
from medm2g_cli.generation import (
    ETA_OPTION,
    GUIDANCE_OPTION,
    MODEL_OPTION,
    SCHEDULER_OPTION,
    STEPS_OPTION,
    sampling_config,
)
from medm2g_core.atomic import check_folder_writable
from medm2g_core.errors import InputError


def synthesize_dataset(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder: cases/, manifest.jsonl, metadata.jsonl."),
    prompts: str | None = typer.Option(None, "--prompts", help="A file of reports, one per line (- reads stdin)."),
    from_manifest: Path | None = typer.Option(None, "--from-manifest", help="Take the reports of a manifest."),
    split: str | None = typer.Option(None, "--split", help="With --from-manifest: only this split's reports."),
    n: int | None = typer.Option(None, "--n", help="Cases to make (default: one per prompt). Without prompts the "
                                 "reports are drawn from the text model too."),
    modalities: str = typer.Option("xray,ct,mri,text", "--modalities", help="What each case holds: xray, ct, mri, "
                                   "text (the report), comma-separated."),
    contrast: str = typer.Option("T1", "--contrast", help="MRI contrast of the cases."),
    batch_size: int = typer.Option(8, "--batch-size", help="Cases generated at once on the device."),
    model: str | None = MODEL_OPTION,
    steps: int = STEPS_OPTION,
    eta: float = ETA_OPTION,
    guidance: float | None = GUIDANCE_OPTION,
    scheduler: str = SCHEDULER_OPTION,
    seed: int = typer.Option(0, "--seed", help="Base seed: case i uses seed*100003+i, so any case can be remade."),
    resume: bool = typer.Option(False, "--resume", help="Keep the finished cases of an interrupted run."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON line per finished case."),
) -> None:
    """Build a paired synthetic corpus for pre-training; every case is marked synthetic.

    Examples: `medm2g synthesize-dataset --n 100 --out corpus/` (reports drawn too),
    `cat reports.txt | medm2g synthesize-dataset --prompts - --modalities xray,text --out cxr/`,
    `accelerate launch -m medm2g_cli synthesize-dataset --from-manifest data/manifest.jsonl --out corpus/`
    (each process makes its own shard). A run that was killed continues with `--resume`.
    """
    from accelerate import PartialState

    from medm2g_core.apps.corpus import (
        SynthesisOptions,
        finished,
        manifest_prompts,
        plan_cases,
        read_prompts,
        synthesize,
        write_index,
    )
    from medm2g_core.apps.records import run_record, write_run_json
    from medm2g_core.hub import load_model

    started = time.perf_counter()
    if prompts is not None and from_manifest is not None:
        raise InputError("give --prompts or --from-manifest, not both")
    if split is not None and from_manifest is None:
        raise InputError("--split applies to --from-manifest only")
    texts = read_prompts(prompts) if prompts else manifest_prompts(from_manifest, split) if from_manifest else None
    options = SynthesisOptions(tuple(m.strip() for m in modalities.split(",")), contrast,
                               sampling_config(steps, eta, guidance, scheduler), seed, batch_size)
    cases = plan_cases(texts, n)
    state = PartialState(cpu=console.settings.device == "cpu")
    check_folder_writable(out)
    if out.exists() and any(out.iterdir()) and not resume and state.is_main_process:
        raise InputError(f"--out {out} is not empty; pass --resume to continue it")
    state.wait_for_everyone()
    (out / "cases").mkdir(parents=True, exist_ok=True)
    medm2g = load_model(model, device=state.device if console.settings.device == "auto" else console.settings.device)
    already = len(finished(out))
    if already:
        console.say(f"resuming: {already} of {len(cases)} cases are finished")
    emit = (lambda record: console.emit_json_line({"id": record.id, "folder": str(out / "cases" / record.id),
                                              "images": record.images, "report": record.report})) if json_output \
        else None
    with console.progress(f"synthesize (process {state.process_index + 1}/{state.num_processes})") as update:
        made = synthesize(medm2g, out, cases, options, state.process_index, state.num_processes, emit, update)
    state.wait_for_everyone()
    if state.is_main_process:
        manifest = write_index(out)
        write_run_json(out / "run.json", run_record(
            "synthesize-dataset", {"n": len(cases), "modalities": modalities, "contrast": contrast,
                                   "batch_size": batch_size, "steps": steps, "eta": eta, "guidance": guidance,
                                   "scheduler": scheduler, "processes": state.num_processes},
            medm2g, str(state.device), seed, [p for p in (prompts, from_manifest) if p and p != "-"], [manifest],
            time.perf_counter() - started))
        console.say(f"{made} cases made here, {len(finished(out))} in {out}")
        if not json_output:
            typer.echo(str(manifest))

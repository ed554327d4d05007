"""``medm2g demo``: every task on fresh phantom cases with the default model, as files and an HTML page."""

from pathlib import Path

import typer

from medm2g_cli import console
from medm2g_cli.generation import GUIDANCE_OPTION, MODEL_OPTION, STEPS_OPTION, open_model
from medm2g_core.atomic import check_folder_writable
from medm2g_core.errors import InputError


def demo(
    out: Path = typer.Option(Path("medm2g-demo"), "--out", "-o", help="Folder for the outputs and index.html."),
    model: str | None = MODEL_OPTION,
    steps: int = STEPS_OPTION,
    guidance: float | None = GUIDANCE_OPTION,
    seed: int = typer.Option(0, "--seed", help="Random seed of the generation."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing --out."),
) -> None:
    """Make two phantom cases and run translate, report, generate and joint generation on them.

    Writes NIfTI outputs, PNG previews, demo.json and index.html (input, output and ground truth side by side,
    with metrics); prints the path of index.html. Runs offline, in a few minutes on a laptop CPU.
    Example: `medm2g demo && xdg-open medm2g-demo/index.html`
    """
    from medm2g_core.apps.demo import run_demo
    from medm2g_core.models.sampler import SamplingConfig

    check_folder_writable(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out} is not empty; pass --overwrite or choose another folder")
    medm2g = open_model(model)
    page = run_demo(medm2g, out, SamplingConfig(steps=steps, guidance=guidance), seed, console.say)
    typer.echo(str(page))

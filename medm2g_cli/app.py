"""The ``medm2g`` entry point: global options, command groups, and the error-to-exit-code contract.

Exit codes: 0 success, 1 runtime failure, 2 bad input or usage. Without ``--debug`` every error is
one line on stderr; with it, the full traceback.

The engine's errors speak its own words, not flags; one that names the parameter at fault (``Medm2gError.option``,
e.g. ``steps``) gets that parameter's flag appended in parentheses, the one form used for every such error:
``error: denoising steps must be within 1-1000; got 0 (--steps)``. The flag is ``--`` + the name with ``_`` ->
``-`` (``batch_size`` -> ``--batch-size``) unless ``OPTION_FLAGS`` says otherwise, and it is named only when the
command that ran (or its groups, for the global ``--device``) has that flag.
"""

import sys
import traceback
import warnings

import typer
from rich.markup import escape
from typer import _click as click
from typer.core import TyperOption

import medm2g_core
from medm2g_cli import console, demo, doctor, evaluate, generation, imaging, prepare, synthesize, train, weights
from medm2g_cli.console import settings
from medm2g_core.devices import resolve_device, validate_device_spec
from medm2g_core.errors import Medm2gError

_display_type = TyperOption.display_type_rich


def _flag_without_type(self: TyperOption, ctx: click.Context) -> str | None:
    """Help lists a flag (--overwrite, --json) without a "<bool>" type: it takes no value. Typer has no switch for
    this, so its method is wrapped here, for this CLI's help only."""
    return None if self.is_flag else _display_type(self, ctx)


TyperOption.display_type_rich = _flag_without_type

app = typer.Typer(
    name="medm2g",
    help="Medical multi-modal generation (MedM2G): translate MRI to CT, write reports from X-rays, "
    "draw X-rays from reports, synthesize MRI contrasts. Research software, not for diagnosis.\n\n"
    "The options below work before or after the command (`medm2g translate mri.nii.gz --to ct --device cpu`).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("doctor", short_help="Check the installation: versions, devices, folders, optional pieces.")(doctor.doctor)
app.command("info", short_help="List the models and recipes available here.")(doctor.info)
app.command("inspect", short_help="Show modality, shape, spacing, orientation and series of an image.")(imaging.inspect)
app.command("convert", short_help="Convert between DICOM, NIfTI and PNG previews, geometry-exact.")(imaging.convert)
app.command("translate",
            short_help="Translate between imaging modalities: MRI -> CT, CT -> MRI contrast, ... -> X-ray.")(
    generation.translate)
app.command("report",
            short_help="Write an AI-generated (unverified) report for an X-ray, CT or MRI.")(generation.report)
app.command("generate",
            short_help="Draw X-ray, CT or MRI from a report; several modalities jointly.")(generation.generate)
app.command("synthesize-dataset",
            short_help="Build a paired synthetic corpus (images + reports), sharded and resumable.")(
    synthesize.synthesize_dataset)
app.command("evaluate", short_help="Evaluate a model on the paper's tasks with baselines: JSON, Markdown, HTML.")(
    evaluate.evaluate_command)
app.command("demo", short_help="Run every task on a few phantom cases with the default model; writes an HTML page.")(
    demo.demo)
app.add_typer(prepare.app, name="prepare", help="Prepare paired data: phantom world, datasets, verify, cache.")
app.add_typer(train.app, name="train", help="Train the stages of MedM2G from TOML recipes.")
app.add_typer(weights.app, name="weights",
              help="Download, list, verify and import model weights (for sites without internet).")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"medm2g {medm2g_core.__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    device: str = typer.Option(
        "auto", "--device", help="auto, cpu, cuda, cuda:N or mps. A requested device that is missing is an error."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only results, no progress or messages."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    settings.device = validate_device_spec(device)
    settings.debug = debug
    settings.quiet = quiet
    if device != "auto":
        resolve_device(device)  # fail now, before any work, if the device is missing


# The engine's parameter names whose flag is not "--" + the name with "_" -> "-".
OPTION_FLAGS = {"variants": "--variant"}


def _command_flags(args: list[str]) -> set[str]:
    """Every flag of the command ``args`` runs, with those of the groups above it (the global options)."""
    command, flags, rest = typer.main.get_command(app), set(), iter(args)
    while command is not None:
        flags.update(opt for param in command.params for opt in (*param.opts, *param.secondary_opts))
        commands = getattr(command, "commands", {})  # a group's; the first of its names in args runs
        command = next((commands[arg] for arg in rest if arg in commands), None) if commands else None
    return flags


def engine_message(exc: Medm2gError, args: list[str]) -> str:
    """The engine's message with the flag of the parameter it names, when the command that ran has that flag."""
    if exc.option is None:
        return str(exc)
    flag = OPTION_FLAGS.get(exc.option, "--" + exc.option.replace("_", "-"))
    return f"{exc} ({flag})" if flag in _command_flags(args) else str(exc)


def _fail(message: str, code: int) -> int:
    if settings.debug:
        traceback.print_exc()
    console.stderr.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    return code


GLOBAL_FLAGS = frozenset({"--debug", "--quiet", "-q"})


def globals_first(args: list[str]) -> list[str]:
    """The global options moved before the command, wherever they were typed: `medm2g translate x --to ct
    --device cpu` works like `medm2g --device cpu translate x --to ct`. No command has options of these names."""
    front, rest, number = [], [], 0
    while number < len(args):
        arg = args[number]
        if arg == "--":
            rest += args[number:]
            break
        if arg in GLOBAL_FLAGS or arg.startswith("--device="):
            front.append(arg)
        elif arg == "--device" and number + 1 < len(args):
            front += args[number:number + 2]
            number += 1
        else:
            rest.append(arg)
        number += 1
    return front + rest


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return the exit code (never raises for expected failures)."""
    args = globals_first(sys.argv[1:] if argv is None else argv)
    # A fresh start for every run (the tests run many in one process); --debug is known before the parser runs,
    # so parse errors honour it.
    settings.device, settings.debug, settings.quiet, settings.argv = "auto", "--debug" in args, False, tuple(args)
    command = typer.main.get_command(app)
    try:
        with warnings.catch_warnings():
            if not settings.debug:  # the readers' complaints about odd files: our notes and errors say what matters
                warnings.filterwarnings("ignore", module=r"(pydicom|nibabel)(\.|$)")
            result = command.main(args=args, prog_name="medm2g", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "")
        return 0
    except click.exceptions.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        return _fail(f"{exc.format_message()}{hint}", 2)
    except click.exceptions.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except typer.Abort:
        return _fail("aborted", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Medm2gError as exc:
        return _fail(engine_message(exc, args), exc.exit_code)
    except BrokenPipeError:
        return 0
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # also a Rust decoder's PanicException, which is no Exception
        if settings.debug:
            traceback.print_exc()
        console.stderr.print(
            f"[bold red]internal error:[/] {escape(f'{type(exc).__name__}: {exc}')} "
            "(rerun with --debug for the traceback)",
            markup=True, highlight=False, soft_wrap=True,
        )
        return 1
    return result if isinstance(result, int) else 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())

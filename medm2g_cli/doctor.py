"""``medm2g doctor`` and ``medm2g info``: what this installation has."""

import typer
from rich.markup import escape
from rich.table import Table

from medm2g_cli import console
from medm2g_core.vocabulary import MODEL_INDEX


def doctor(json_output: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout.")) -> None:
    """Versions of every dependency, devices, folders, and optional pieces with how to install them."""
    from medm2g_core import environment

    report = environment.doctor_report()
    if json_output:
        console.emit_json(report)
        return
    out = console.stdout
    out.print(f"medm2g {report['medm2g']}  (Python {report['python']}, {report['platform']})")
    deps = Table("dependency", "version", title="Dependencies", title_justify="left")
    for name, version in report["dependencies"].items():
        deps.add_row(name, version or "[red]missing[/]")
    out.print(deps)
    torch_info = report["torch"]
    out.print(f"devices: {', '.join(torch_info['devices'])}  (torch CUDA build: {torch_info['cuda'] or 'none'})")
    for key, value in report["paths"].items():
        out.print(f"{key}: {value}")
    pieces = Table("optional piece", "status", "used for", "install with", title="Optional", title_justify="left")
    for piece in report["optional"]:
        status = f"[green]present[/] ({escape(piece['detail'])})" if piece["present"] else "[yellow]missing[/]"
        install = "" if piece["present"] else escape(piece["install"])
        pieces.add_row(piece["name"], status, escape(piece["purpose"]), install)
    out.print(pieces)


def info(json_output: bool = typer.Option(False, "--json", help="Print the lists as JSON on stdout.")) -> None:
    """The model folders and recipes available to ``--model`` and ``--recipe``."""
    from medm2g_core import environment
    from medm2g_core.hub import DEFAULT_MODEL_DIR

    data = {
        "default_model": str(DEFAULT_MODEL_DIR) if (DEFAULT_MODEL_DIR / MODEL_INDEX).is_file() else None,
        "models": environment.available_models(),
        "models_dir": str(environment.models_dir()),
        "recipes": environment.available_recipes(),
    }
    if json_output:
        console.emit_json(data)
        return
    default = "built in (used when --model is not given)" if data["default_model"] else "missing: reinstall medm2g"
    console.stdout.print(f"default model: {default}", markup=False)
    console.stdout.print(f"models ({data['models_dir']}): {', '.join(data['models']) or 'none imported or downloaded'}",
                         markup=False)
    console.stdout.print(f"recipes: {', '.join(data['recipes']) or 'none yet'}", markup=False)

"""``medm2g weights``: download, list, verify and import model weights (for sites without internet)."""

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from medm2g_cli import console
from medm2g_core.atomic import check_folder_writable

app = typer.Typer(help="Download, list, verify and import model weights (for sites without internet).",
                  no_args_is_help=True)

MODEL_HELP = ("A folder, a name from `medm2g weights import`, or a Hub id org/name or org/name@revision (offline: "
              "from the Hugging Face cache); default: the embedded model.")
JSON_HELP = "Print the result as JSON on stdout."


@app.command("download")
def download(
    repo: str = typer.Argument(..., help="Hub id org/name or org/name@revision (a branch, tag or commit)."),
) -> None:
    """Download a model from the Hugging Face Hub into its cache, verify it, and print its local folder.

    Later runs find it in the cache, also offline (HF_HUB_OFFLINE=1). For a site without internet, copy the
    printed folder there and `medm2g weights import` it.

    Example: `medm2g weights download org/medm2g-phantom@v1`
    """
    console.say(f"downloading {repo} from the Hugging Face Hub")
    from medm2g_core import hub

    typer.echo(str(hub.download_model(repo)))


@app.command("list")
def list_(json_output: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """The models usable here without network: the embedded default, imported models, and MedM2G repos in the
    Hugging Face cache.

    Example: `medm2g weights list --json`
    """
    from medm2g_core import hub

    models = hub.list_models()
    if json_output:
        console.emit_json(models)
        return
    if not models:
        console.say("no models yet: add one with `medm2g weights download org/name` or `medm2g weights import FOLDER`")
        return
    table = Table("name", "source", "revision", "components", "MB", "path", title="Models", title_justify="left")
    for model in models:
        table.add_row(escape(model["name"]), model["source"], model.get("revision", "")[:12],
                      ", ".join(model["components"]), f"{model['size_mb']:.1f}", escape(model["path"]))
    console.stdout.print(table)


@app.command("verify")
def verify(
    model: str | None = typer.Argument(None, help=MODEL_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Check the sha256 of every file of a model against its model_index.json; exits 1 naming the first bad file.

    Example: `medm2g weights verify org/medm2g-phantom`
    """
    from medm2g_core import hub

    report = hub.verify_model(model)
    if json_output:
        console.emit_json(report)
        return
    console.say(f"{report['path']}: {', '.join(report['components'])}")
    typer.echo(f"ok: {report['files']} files")


@app.command("import")
def import_(
    folder: Path = typer.Argument(..., help="A MedM2G model folder (model_index.json and one folder per component)."),
    name: str | None = typer.Option(
        None, "--name", help="The name to give --model (lower-case letters, digits, - and _); default: the folder's "
        "name, lower-cased."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an imported model of the same name."),
) -> None:
    """Verify a model folder and copy it into medm2g's models folder ($MEDM2G_HOME/models) under a name.

    This is how a site without internet gets weights: download on a connected machine, carry the folder over,
    import it, then use `--model NAME`.

    Example: `medm2g weights import /media/usb/medm2g-phantom --name phantom`
    """
    from medm2g_core import hub

    typer.echo(str(hub.import_model(folder, name or folder.resolve().name.lower(), overwrite)))


@app.command("pack")
def pack(
    out: Path = typer.Argument(..., help="Folder to write the packed model into."),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    half: bool = typer.Option(True, "--fp16/--fp32", help="Store the weights in float16 (half the size)."),
    card: Path | None = typer.Option(None, "--card", help="A model card (Markdown) to ship as README.md."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Write a verified, smaller copy of a model for shipping (e.g. the embedded default); loading it computes in
    float32 again.

    Example: `medm2g weights pack packed/ --model runs/cross/model --card MODEL_CARD.md`
    """
    from medm2g_core import hub

    check_folder_writable(out)
    typer.echo(str(hub.pack_model(model, out, half, card, overwrite)))

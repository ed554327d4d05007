"""``medm2g inspect`` and ``medm2g convert``: look at and convert DICOM, NIfTI and PNG images."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from medm2g_cli import console

if TYPE_CHECKING:  # the readers are imported when a command runs, so `--help` starts fast
    from medm2g_core.io.volume import Volume

SERIES_HELP = "DICOM folder: the SeriesInstanceUID or 0-based index of the series (see `medm2g inspect FOLDER`)."
FRAME_HELP = "4D NIfTI: the 0-based frame (volume) to use."
MODALITY_HELP = "What a NIfTI or PNG holds (CT, MR, XRAY, OT); DICOM says it itself."


def describe(volume: Volume) -> dict:
    """The facts ``inspect`` reports about a volume, as plain data."""
    data = volume.data
    meta = asdict(volume.meta)
    meta.pop("sop_instance_uids")
    return {
        "path": volume.meta.path,
        "format": volume.meta.format,
        "modality": volume.modality,
        "contrast": volume.contrast,
        "units": volume.units,
        "shape": list(volume.shape),
        "spacing_mm": [round(s, 6) for s in volume.spacing],
        "orientation": volume.orientation,
        "affine": volume.affine.round(6).tolist(),
        "value_range": [float(data.min()), float(data.max())],
        "mean": float(data.mean()),
        "synthetic": volume.synthetic,
        "provenance": volume.provenance,
        "notes": volume.meta.notes,
        "source": meta,
    }


def _series_table(series: list) -> Table:
    table = Table("index", "series UID", "modality", "description", "files", title="Series", title_justify="left")
    for item in series:
        table.add_row(str(item.index), item.series_instance_uid, escape(item.modality or ""),
                      escape(item.description or ""), str(item.n_files))
    return table


def _print_volume(facts: dict) -> None:
    out = console.stdout
    shape = " x ".join(str(n) for n in facts["shape"])
    spacing = " x ".join(f"{s:.4g}" for s in facts["spacing_mm"])
    low, high = facts["value_range"]
    modality = facts["modality"] + (f" ({facts['contrast']})" if facts["contrast"] else "")
    rows = [
        ("path", facts["path"]),
        ("format", facts["format"]),
        ("modality", f"{modality}, units {facts['units']}"),
        ("shape", shape),
        ("spacing", f"{spacing} mm"),
        ("orientation", facts["orientation"]),
        ("origin", " ".join(f"{row[3]:.4g}" for row in facts["affine"][:3]) + " mm (RAS)"),
        ("values", f"{low:.6g} .. {high:.6g} (mean {facts['mean']:.6g})"),
        ("synthetic", "YES" + (f" ({facts['provenance'].get('model', '')})" if facts["provenance"] else "")
         if facts["synthetic"] else "no"),
    ]
    for key, value in rows:
        out.print(f"{key:>12}: {escape(str(value))}")
    for note in facts["notes"]:
        out.print(f"{'note':>12}: {escape(note)}")


def inspect(
    path: Path = typer.Argument(..., help="A NIfTI file, a DICOM file or folder, or a PNG/JPEG."),
    series: str | None = typer.Option(None, "--series", help=SERIES_HELP),
    frame: int | None = typer.Option(None, "--frame", help=FRAME_HELP),
    modality: str | None = typer.Option(None, "--modality", help=MODALITY_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the facts as JSON on stdout."),
) -> None:
    """Show modality, shape, spacing, orientation, value range and, for folders, the series found.

    A DICOM folder with several series lists them; choose one with --series to see its geometry.
    """
    from medm2g_core.io import load
    from medm2g_core.io.dicom_read import list_series

    kind = load.input_format(path)
    found = list_series(path) if kind == "dicom" and path.is_dir() else []
    if len([item for item in found if item.n_slices > 0]) > 1 and series is None:
        if json_output:
            console.emit_json({"path": str(path), "series": [asdict(item) for item in found]})
        else:
            console.stdout.print(_series_table(found))
            console.say("several series: choose one with --series INDEX|UID")
        return
    facts = describe(load.read_volume(path, series=series, frame=frame, modality=modality))
    facts["series"] = [asdict(item) for item in found]
    if json_output:
        console.emit_json(facts)
        return
    _print_volume(facts)
    if found:
        console.stdout.print(_series_table(found))


def convert(
    source: Path = typer.Argument(..., help="Input: NIfTI, DICOM file or folder, PNG/JPEG."),
    target: Path = typer.Argument(..., help="Output: .nii/.nii.gz, .png (preview), or a folder for a DICOM series."),
    to: str | None = typer.Option(None, "--to", help="Output format when the name does not say: nifti, dicom, png."),
    series: str | None = typer.Option(None, "--series", help=SERIES_HELP),
    frame: int | None = typer.Option(None, "--frame", help=FRAME_HELP),
    modality: str | None = typer.Option(None, "--modality", help=MODALITY_HELP),
    preset: str | None = typer.Option(
        None, "--preset", help="PNG preview window: CT presets brain, subdural, bone, lung, soft-tissue, abdomen."
    ),
    series_description: str | None = typer.Option(
        None, "--series-description", help="DICOM output: the SeriesDescription to write."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """Convert between DICOM, NIfTI and PNG previews, keeping geometry and units exactly.

    Examples: `medm2g convert dicom_folder/ ct.nii.gz`, `medm2g convert ct.nii.gz ct_series/`,
    `medm2g convert ct.nii.gz ct.png --preset lung`.
    """
    from medm2g_core.io import load

    fmt = load.check_output(target, to, overwrite)  # fail before reading a large input
    volume = load.read_volume(source, series=series, frame=frame, modality=modality)
    written = load.write_volume(volume, target, to=fmt, overwrite=overwrite, preset=preset,
                                series_description=series_description)
    console.say(f"converted {source} -> {fmt} ({' x '.join(map(str, volume.shape))}, {volume.modality})")
    typer.echo(str(written))

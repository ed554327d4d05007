"""Where evaluation results go: ``results.json``, a Markdown table shaped like the paper's, and an HTML page with
sample grids (input, output, ground truth, error map; for a volume translation also its first case's sagittal
and coronal reformats) and per-case metric distributions, all written atomically.

Figures are drawn with Pillow (no plotting dependency): a grid is one PNG per sample row; a distribution is a
strip plot per method (every case a dot, the mean a bar).
"""

import html
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medm2g_core.atomic import atomic_path, write_text
from medm2g_core.evaluation.tasks import PAPER_TABLE, Sample, TaskResult

TILE = 128
PLOT_SIZE = (420, 60)
COLOURS = [(90, 170, 255), (255, 150, 80), (120, 220, 120), (230, 100, 160), (240, 220, 90), (170, 140, 255)]


def _headers(result: TaskResult) -> tuple[list[str], list[str]]:
    """(fixed columns, metrics), each in the order the task wrote them."""
    fixed = list(dict.fromkeys(c for row in result.columns.values() for c in row))
    return fixed, list(dict.fromkeys(m for row in result.seeds.values() for m in row))


def markdown_table(result: TaskResult) -> str:
    """Methods as rows, metrics as columns, mean +/- std over seeds (as the paper's tables)."""
    summary = result.summary()
    fixed, metrics = _headers(result)
    lines = [f"**{result.task}** ({PAPER_TABLE[result.task]}-shaped; {result.cases} cases, "
             f"{len(next(iter(result.seeds.values()))[metrics[0]])} seeds, mean +/- std over seeds)", "",
             "| method | " + " | ".join(fixed + metrics) + " |", "|---" * (len(fixed) + len(metrics) + 1) + "|"]
    for method, row in summary.items():
        cells = [result.columns.get(method, {}).get(c, "") for c in fixed]
        cells += [f"{row[m][0]:.4g} +/- {row[m][1]:.2g}" if m in row else "" for m in metrics]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += _paired_table(result)
    lines += [""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def _paired_cell(test: dict) -> str:
    return f"{test['difference']:+.3g} +/- {test['std']:.2g} (p {test['p']:.2g}, {test['verdict']})"


def _paired_table(result: TaskResult) -> list[str]:
    """Each compared row against the reference, cell by cell: paired difference over seeds, p, verdict."""
    if not result.paired:
        return []
    metrics = list(dict.fromkeys(m for row in result.paired.values() for m in row))
    lines = ["", "Paired difference to the first row over seeds (mean +/- std, paired t-test p, verdict at p < 0.05):",
             "", "| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for method, tests in result.paired.items():
        lines.append(f"| {method} | " + " | ".join(_paired_cell(tests[m]) if m in tests else "" for m in metrics)
                     + " |")
    return lines


def _tile(image: np.ndarray, label: str) -> Image.Image:
    pixels = ((np.clip(image, -1, 1) + 1) * 127.5).astype(np.uint8)
    tile = Image.fromarray(pixels).resize((TILE, TILE), Image.Resampling.NEAREST).convert("RGB")
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, TILE, 12), fill=(0, 0, 0))
    draw.text((2, 0), label, fill=(255, 255, 255), font=ImageFont.load_default())
    return tile


def sample_row(sample: Sample) -> Image.Image:
    """One sample's images side by side, with |output - truth| as an error map when both are there."""
    images = dict(sample.images)
    if "output" in images and "truth" in images:
        images["error"] = np.abs(images["output"] - images["truth"]) * 2 - 1  # |diff| in [0, 2] shown in [-1, 1]
    row = Image.new("RGB", (TILE * len(images), TILE))
    for column, (name, image) in enumerate(images.items()):
        row.paste(_tile(image, name), (column * TILE, 0))
    return row


def strip_plot(values: dict[str, list[float]]) -> Image.Image:
    """Every case as a dot on one axis per method, the mean as a bar; the axis spans all values."""
    lows, highs = [min(v) for v in values.values()], [max(v) for v in values.values()]
    low, high = min(lows), max(highs)
    span = (high - low) or 1.0
    width, row_height = PLOT_SIZE
    plot = Image.new("RGB", (width, row_height * len(values) + 16), (20, 20, 20))
    draw = ImageDraw.Draw(plot)
    rng = np.random.default_rng(0)
    for number, (method, points) in enumerate(values.items()):
        top, colour = number * row_height, COLOURS[number % len(COLOURS)]
        draw.text((4, top + 2), f"{method} (mean {np.mean(points):.4g})", fill=colour)
        for value in points:
            x = 10 + (value - low) / span * (width - 20)
            y = top + 28 + rng.uniform(-8, 8)
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        mean_x = 10 + (np.mean(points) - low) / span * (width - 20)
        draw.line((mean_x, top + 16, mean_x, top + row_height - 6), fill=(255, 255, 255), width=2)
    draw.text((4, plot.height - 14), f"{low:.4g}", fill=(200, 200, 200))
    draw.text((width - 60, plot.height - 14), f"{high:.4g}", fill=(200, 200, 200))
    return plot


def _save_png(image: Image.Image, path: Path) -> str:
    with atomic_path(path, overwrite=True) as tmp:
        image.save(tmp, format="PNG")
    return path.name


def write_results(result: TaskResult, out: Path, command: str) -> Path:
    """results.json, results.md and index.html (with its PNGs) in ``out``; the path of index.html."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(result.as_json() | {"command": command}, indent=1) + "\n",
               overwrite=True)
    table = markdown_table(result)
    write_text(out / "results.md", f"# {result.task}\n\nCommand: `{command}`\n\n{table}", overwrite=True)
    grids = [_save_png(sample_row(s), out / f"sample-{n}.png") for n, s in enumerate(result.samples)]
    metrics = list(dict.fromkeys(m for values in result.per_case.values() for m in values))
    plots = [(m, _save_png(strip_plot({method: v[m] for method, v in result.per_case.items() if m in v}),
                           out / f"per-case-{m}.png")) for m in metrics]
    return write_text(out / "index.html", _page(result, table, grids, plots, command), overwrite=True)


def _paired_html(result: TaskResult) -> str:
    if not result.paired:
        return ""
    metrics = list(dict.fromkeys(m for row in result.paired.values() for m in row))
    rows = "".join("<tr><th>" + html.escape(method) + "</th>" + "".join(
        f"<td>{html.escape(_paired_cell(tests[m]))}</td>" if m in tests else "<td></td>" for m in metrics) + "</tr>"
        for method, tests in result.paired.items())
    header = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    return (f"<h2>Paired difference to {html.escape(next(iter(result.seeds)))} over seeds</h2>"
            f"<table><tr><th>method</th>{header}</tr>{rows}</table>")


def _page(result: TaskResult, table: str, grids: list[str], plots: list[tuple[str, str]], command: str) -> str:
    summary = result.summary()
    fixed, metrics = _headers(result)
    header = "".join(f"<th>{html.escape(m)}</th>" for m in fixed + metrics)
    rows = "".join("<tr><th>" + html.escape(method) + "</th>" + "".join(
        f"<td>{html.escape(result.columns.get(method, {}).get(c, ''))}</td>" for c in fixed) + "".join(
        f"<td>{row[m][0]:.4g} &plusmn; {row[m][1]:.2g}</td>" if m in row else "<td></td>" for m in metrics)
        + "</tr>" for method, row in summary.items())
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>medm2g evaluate "
        f"{html.escape(result.task)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}th,td{border:1px solid #999;padding:.2em .6em}img{margin:.3em}"
        "</style></head><body>",
        f"<h1>{html.escape(result.task)} ({PAPER_TABLE[result.task]})</h1>",
        f"<p>{result.cases} cases; command <code>{html.escape(command)}</code>. Generated images are synthetic.</p>",
        f"<table><tr><th>method</th>{header}</tr>{rows}</table>", _paired_html(result),
        "<h2>Samples</h2>", *(f"<div><p>{html.escape(s.title)}</p><img src='{g}' alt='sample {n}'></div>"
                            for n, (s, g) in enumerate(zip(result.samples, grids, strict=True))),
        "<h2>Per-case distributions (first seed)</h2>",
        *(f"<h3>{html.escape(m)}</h3><img src='{p}' alt='{html.escape(m)} per case'>" for m, p in plots),
        "<h2>Notes</h2><ul>", *(f"<li>{html.escape(n)}</li>" for n in result.notes), "</ul>",
        f"<details><summary>Markdown</summary><pre>{html.escape(table)}</pre></details></body></html>\n",
    ]
    return "".join(parts)

"""Report an image file: the steps behind ``medm2g report``: read it, write ``n`` reports, and save them (text or
JSON) with a ``run.json`` beside them. Every report carries the AI-generated header."""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medm2g_core.apps.records import run_json_beside, run_record, write_run_json
from medm2g_core.apps.translate import read_source, screen
from medm2g_core.atomic import check_writable, write_text
from medm2g_core.errors import InputError
from medm2g_core.io.volume import Volume
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.sampling.report import Report, ReportOptions, write_report

REPORT_SUFFIXES = (".txt", ".json")


def read_image(image: Path, modality: str | None, out: Path | None, overwrite: bool) -> Volume:
    """The image to report on, with ``out`` (if any) checked first: a .txt or .json file that may be written."""
    if out is not None:
        if out.suffix.lower() not in REPORT_SUFFIXES:
            raise InputError(f"{out}: a report is saved as a .txt or .json file")
        check_writable(out, overwrite)
    return read_source(image, modality)


def report_file(model: MedM2G, image: Path, volume: Volume, options: ReportOptions, out: Path | None,
                overwrite: bool, device: str, arguments: dict[str, Any], strict: bool = False,
                warn: Callable[[str], None] | None = None) -> list[Report]:
    """``options.n`` reports of ``volume`` after the out-of-distribution screen (``translate.screen``); saved to
    ``out`` (.txt: as read, .json: text, labels, model, seed) with its ``run.json`` when given."""
    started = time.perf_counter()
    check = screen(model, volume, strict, warn)
    reports = write_report(model, volume, options)
    if out is not None:
        text = (json.dumps([r.as_json() for r in reports], indent=1) + "\n" if out.suffix.lower() == ".json"
                else "\n".join(r.as_text() for r in reports))
        write_text(out, text, overwrite)
        write_run_json(run_json_beside(out), run_record("report", arguments, model, device, options.seed, [image],
                                                        [out], time.perf_counter() - started)
                       | {"ood": check and check.as_json()})
    return reports

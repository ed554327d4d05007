"""The demo: every task on fresh phantom cases with a model, written as files, previews and one HTML page.

Two phantom cases are made from a seed the default model never saw (a brain: CT + five MRI contrasts + skull
film; a chest: CT + X-ray, each with its report). The demo then runs MRI T1 -> CT (with PSNR/SSIM against the
phantom's CT), X-ray -> report (with the findings the labeler reads in both reports), report -> X-ray, and joint
report -> X-ray + CT + MRI, and writes ``index.html`` showing input, output and ground truth side by side.
"""

import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import medm2g_core
from medm2g_core.atomic import write_text
from medm2g_core.data.labeler import binary_labels
from medm2g_core.io.nifti import write_nifti
from medm2g_core.io.preview import write_preview
from medm2g_core.io.volume import Volume
from medm2g_core.metrics.image_metrics import volume_psnr_ssim
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig
from medm2g_core.phantoms.world import PhantomConfig, make_case
from medm2g_core.sampling.generate import GenerateOptions, as_volume, generate_images
from medm2g_core.sampling.report import HEADER, ReportOptions, write_report
from medm2g_core.sampling.translate import TranslateOptions, provenance, translate_volume

DEMO_SEED = 20_261_128  # far from the seeds of the training world (0 .. 399)


@dataclass
class Panel:
    title: str
    images: list[tuple[str, str]] = field(default_factory=list)  # (caption, relative PNG path)
    text: list[tuple[str, str]] = field(default_factory=list)  # (caption, text)
    metrics: dict[str, float | str] = field(default_factory=dict)


def _save(volume: Volume, out: Path, name: str) -> str:
    write_nifti(volume, out / f"{name}.nii.gz", overwrite=True)
    write_preview(volume, out / f"{name}.png", overwrite=True, n_slices=4 if not volume.is_2d else 1)
    return f"{name}.png"


def _findings(text: str) -> str:
    return ", ".join(k for k, v in binary_labels(text).items() if v) or "none"


def run_demo(model: MedM2G, out: Path, sampling: SamplingConfig, seed: int = 0,
             progress: Callable[[str], None] | None = None) -> Path:
    """Run the demo into ``out`` (created); the path of ``index.html``."""
    say = progress or (lambda message: None)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    config = PhantomConfig(cases=2, seed=DEMO_SEED, brain_slices=24)
    brain, brain_report, _, _ = make_case("brain", DEMO_SEED, config)
    chest, chest_report, _, _ = make_case("chest", DEMO_SEED + 1, config)
    origin = provenance(model, sampling, seed)
    panels = []

    say("MRI T1 -> CT")
    tick = time.perf_counter()
    synthetic_ct = translate_volume(model, [brain["mr_t1"]], TranslateOptions("ct", sampling=sampling, seed=seed))
    scores = volume_psnr_ssim(synthetic_ct, brain["ct"])
    panels.append(Panel("Translate: brain MRI T1 -> CT", [
        ("input: T1 (phantom)", _save(brain["mr_t1"], out, "brain_t1")),
        ("output: synthetic CT", _save(synthetic_ct, out, "brain_ct_synthetic")),
        ("ground truth: phantom CT", _save(brain["ct"], out, "brain_ct")),
    ], metrics={"PSNR (dB)": round(scores["psnr"], 2), "SSIM": round(scores["ssim"], 4),
                "time (s)": round(time.perf_counter() - tick, 1)}))

    say("chest CT -> X-ray")
    tick = time.perf_counter()
    film = translate_volume(model, [chest["ct"]], TranslateOptions("xray", sampling=sampling, seed=seed))
    panels.append(Panel("Translate: chest CT -> X-ray (from the CT's projection)", [
        ("input: chest CT (phantom)", _save(chest["ct"], out, "chest_ct")),
        ("output: synthetic X-ray", _save(film, out, "chest_xray_from_ct")),
        ("ground truth: phantom X-ray", _save(chest["xray"], out, "chest_xray")),
    ], metrics={"time (s)": round(time.perf_counter() - tick, 1)}))

    say("X-ray -> report")
    tick = time.perf_counter()
    written = write_report(model, chest["xray"], ReportOptions(sampling=sampling, seed=seed))[0]
    write_text(out / "chest_report_synthetic.txt", written.as_text(), overwrite=True)
    panels.append(Panel("Report: chest X-ray -> text", [("input: X-ray (phantom)", "chest_xray.png")],
                        [("output (AI-generated, unverified)", written.text), ("ground truth", chest_report)],
                        {"findings in output": _findings(written.text), "findings in truth": _findings(chest_report),
                         "time (s)": round(time.perf_counter() - tick, 1)}))

    say("report -> X-ray, and report -> X-ray + CT + MRI jointly")
    tick = time.perf_counter()
    single = generate_images(model, [chest_report], GenerateOptions(("xray",), sampling=sampling, seed=seed), [seed])
    drawn = as_volume(single["xray"][0], "xray", "T1", origin, chest_report)
    panels.append(Panel("Generate: report -> X-ray", [
        ("output: synthetic X-ray", _save(drawn, out, "chest_xray_synthetic")),
        ("ground truth: phantom X-ray", "chest_xray.png")], [("input report", chest_report)],
        {"time (s)": round(time.perf_counter() - tick, 1)}))
    tick = time.perf_counter()
    joint = generate_images(model, [brain_report], GenerateOptions(("xray", "ct", "mri"), sampling=sampling,
                                                                    seed=seed), [seed])
    images = [(f"output: synthetic {m}", _save(as_volume(joint[m][0], m, "T1", origin, brain_report), out,
                                              f"joint_{m}_synthetic")) for m in ("xray", "ct", "mri")]
    panels.append(Panel("Joint generation: report -> X-ray + CT + MRI (T1)", images, [("input report", brain_report)],
                        {"time (s)": round(time.perf_counter() - tick, 1)}))

    summary = {"medm2g": medm2g_core.__version__, "model": model.info.get("model_id"), "seed": seed,
               "sampling": sampling.__dict__, "wall_s": round(time.perf_counter() - started, 1),
               "panels": [{"title": p.title, "metrics": p.metrics} for p in panels]}
    write_text(out / "demo.json", json.dumps(summary, indent=1) + "\n", overwrite=True)
    return write_text(out / "index.html", _page(panels, summary), overwrite=True)


def _page(panels: list[Panel], summary: dict) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>medm2g demo</title><style>{_STYLE}</style>"
             "</head><body>",
             f"<h1>medm2g demo</h1><p class='warn'>Every image and report below is SYNTHETIC, made by a research "
             f"model from phantom data. {html.escape(HEADER)}.</p>",
             f"<p>medm2g {summary['medm2g']}, model <code>{html.escape(str(summary['model']))}</code>, seed "
             f"{summary['seed']}, {summary['sampling']['scheduler']} {summary['sampling']['steps']} steps, guidance "
             f"{summary['sampling']['guidance']}; {summary['wall_s']} s in all.</p>"]
    for panel in panels:
        parts.append(f"<section><h2>{html.escape(panel.title)}</h2><div class='row'>")
        for caption, src in panel.images:
            parts.append(f"<figure><img src='{html.escape(src)}' alt='{html.escape(caption)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        for caption, text in panel.text:
            parts.append(f"<figure class='text'><pre>{html.escape(text)}</pre>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</div>")
        if panel.metrics:
            rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                           for k, v in panel.metrics.items())
            parts.append(f"<table>{rows}</table>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


_STYLE = ("body{font-family:sans-serif;margin:2em;background:#111;color:#eee}.warn{color:#f96;font-weight:bold}"
          ".row{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}img{width:256px;image-rendering:pixelated}"
          "figure.text pre{width:420px;white-space:pre-wrap;background:#222;padding:.5em}"
          "table{border-collapse:collapse;margin-top:.5em}th,td{border:1px solid #555;padding:.2em .6em}")

"""Table 8: does a synthetic corpus help downstream models? (``medm2g evaluate downstream``)

The paper adds generated image-report pairs to MGCA's pre-training and reports the change in CheXpert AUC, SIIM
Dice and RSNA mAP with 1 % and 100 % of the labels. This harness does the same on a phantom world, where every
label is known (:mod:`.downstream_data`):

1. Pre-training (per row and seed, the same steps and batch size in every row): a :class:`FilmEncoder` and a
   :class:`ReportEncoder` trained with the symmetric InfoNCE of ConVIRT / CLIP (MGCA's instance-level term) on the
   real training films and reports alone ("real only") or pooled with one corpus's chest films and reports.
2. Fine-tuning on the real training split with the encoder frozen (MGCA's protocol for all three tasks), on a
   labelled subset of 1 % (at least ``min_labelled`` films) or 100 % of it, the same subset for every row of a
   seed: a linear classifier of the chest findings (per-finding AUC on the real test split, macro mean), a
   :class:`SegmentationDecoder` of one finding's projected mask (SIIM's Dice: per film, an empty prediction on a
   film without the finding counts 1), a :class:`DetectionHead` of nodule and mass boxes (mAP at IoU 0.25).
3. The generation half: the supervised MRI (T1) -> CT UNet of :mod:`.baselines` trained on the real brain
   training slices alone or with a corpus's synthetic MRI/CT pairs (same steps); PSNR/SSIM on the real test slices.

Each synthetic row is compared with "real only" cell by cell with a paired t-test over seeds (the same seed means
the same initialisation, batches and labelled subset): the difference, its spread over seeds, p, and a verdict
(helps / hurts at p < 0.05, else no clear change).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torchmetrics.functional.classification import binary_auroc

from medm2g_core.data.cache import Cache
from medm2g_core.data.manifest import Manifest
from medm2g_core.errors import InputError
from medm2g_core.evaluation.baselines import RegressionConfig, fit_regression, paired_slices, regress
from medm2g_core.evaluation.downstream_data import MRI_SOURCE, Corpus, Films, real_films
from medm2g_core.evaluation.tasks import Sample, TaskResult
from medm2g_core.metrics.detection_metrics import average_precision
from medm2g_core.metrics.image_metrics import psnr, ssim
from medm2g_core.models.detection_head import DetectionHead, DetectionHeadConfig, cell_targets, decode
from medm2g_core.models.film_encoder import FilmEncoder, FilmEncoderConfig
from medm2g_core.models.report_encoder import ReportEncoder, ReportEncoderConfig
from medm2g_core.models.segmentation_decoder import SegmentationDecoder, SegmentationDecoderConfig
from medm2g_core.vocabulary import CHEST_LABELS

REAL = "real only"
DETECTION_STAGE = 1  # the encoder stage the detection head reads: R/4
DETECTION_IOU = 0.25  # boxes of 1-4 pixel lesions on a 4-pixel grid: IoU 0.5 would score localisation noise
TOP_BOXES = 10  # boxes kept per film for mAP
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class DownstreamOptions:
    seeds: int = 3
    pretrain_steps: int = 120
    head_steps: int = 100
    batch_size: int = 64
    fractions: tuple[float, ...] = (0.01, 1.0)  # shares of the training labels the heads see
    min_labelled: int = 8  # a 1 % subset of a few hundred films would be two films: at least this many
    segment: str = "pneumothorax"  # SIIM's finding
    baseline_steps: int = 30  # the MRI -> CT UNet's steps in every row (1-4 s a step on a busy 2-core CPU)
    temperature: float = 0.1
    lr: float = 1e-3

    def __post_init__(self) -> None:
        from medm2g_core.evaluation.downstream_data import MASKED

        for name in ("seeds", "pretrain_steps", "head_steps", "baseline_steps", "min_labelled"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', ' ')} must be at least 1; got {getattr(self, name)}",
                                 option=name)
        if self.segment not in MASKED:
            raise InputError(f"the segmented finding must be one of {', '.join(MASKED)}; got {self.segment!r}",
                             option="segment")


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def augment(films: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random view of each film [B, 1, R, R]: scale 0.9-1.1, shift up to 6 %, contrast and brightness jitter."""
    batch = len(films)
    scale = 0.9 + 0.2 * torch.rand(batch, generator=generator)
    shift = (torch.rand(batch, 2, generator=generator) - 0.5) * 0.12
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale, scale, shift
    grid = F.affine_grid(theta, list(films.shape), align_corners=False)
    moved = F.grid_sample(films, grid, padding_mode="border", align_corners=False)
    gain = 0.85 + 0.3 * torch.rand(batch, 1, 1, 1, generator=generator)
    offset = (torch.rand(batch, 1, 1, 1, generator=generator) - 0.5) * 0.2
    return (moved * gain + offset).clamp(-1, 1)


def pretrain(films: np.ndarray, reports: list[str], options: DownstreamOptions, seed: int) -> FilmEncoder:
    """Contrastive image-report pre-training (symmetric InfoNCE) of a film encoder on the given pairs."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    encoder, reader = FilmEncoder(FilmEncoderConfig()), ReportEncoder(ReportEncoderConfig())
    optimiser = torch.optim.AdamW([*encoder.parameters(), *reader.parameters()], lr=options.lr, weight_decay=1e-4)
    images = torch.from_numpy(films)[:, None]  # [N, 1, R, R]
    batch = min(options.batch_size, len(films))
    targets = torch.arange(batch)
    for _ in range(options.pretrain_steps):
        rows = torch.randperm(len(films), generator=generator)[:batch]
        image = F.normalize(encoder.embed(augment(images[rows], generator)), dim=-1)  # [B, E]
        text = F.normalize(reader(*reader.tokenize([reports[int(r)] for r in rows])), dim=-1)  # [B, E]
        logits = image @ text.T / options.temperature  # [B, B]
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return encoder.eval()


@torch.no_grad()
def encode(encoder: FilmEncoder, films: np.ndarray) -> list[torch.Tensor]:
    """The frozen encoder's feature maps of every film (finest first), computed once for the heads."""
    parts = [encoder(torch.from_numpy(films[i:i + 64])[:, None]) for i in range(0, len(films), 64)]
    return [torch.cat(level) for level in zip(*parts, strict=True)]


def labelled_subset(count: int, fraction: float, seed: int, minimum: int) -> np.ndarray:
    """The training films whose labels the heads see: the same for every row of a seed."""
    size = min(count, max(math.ceil(fraction * count), minimum))
    rng = np.random.default_rng([seed, round(fraction * 10_000)])
    return np.sort(rng.choice(count, size=size, replace=False))


def classification_auc(train: torch.Tensor, labels: np.ndarray, test: torch.Tensor, truth: np.ndarray,
                       steps: int, seed: int) -> float:
    """Macro AUC over the findings with both classes in the test films of a linear probe [B, C] -> findings."""
    torch.manual_seed(seed)
    mean, std = train.mean(0), train.std(0) + 1e-6
    probe = torch.nn.Linear(train.shape[1], labels.shape[1])
    optimiser = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-3)
    x, y = (train - mean) / std, torch.from_numpy(labels).float()
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(probe(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        scores = probe((test - mean) / std).sigmoid()
    target = torch.from_numpy(truth)
    shown = [k for k in range(truth.shape[1]) if 0 < truth[:, k].sum() < len(truth)]
    return float(np.mean([binary_auroc(scores[:, k], target[:, k]).item() for k in shown]))


def siim_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-film Dice [N, R, R] with an empty prediction on an empty truth counting 1 (the SIIM challenge's
    metric; torchmetrics' dice scores that pair as 0, which would reward predicting on healthy films)."""
    scores = []
    for p, t in zip(predicted, truth, strict=True):
        total = p.sum() + t.sum()
        scores.append(1.0 if total == 0 else 2.0 * np.logical_and(p, t).sum() / total)
    return float(np.mean(scores))


def segmentation_dice(train: list[torch.Tensor], masks: np.ndarray, test: list[torch.Tensor], truth: np.ndarray,
                      steps: int, seed: int) -> tuple[float, np.ndarray]:
    """SIIM Dice of a decoder trained on frozen features (BCE + soft Dice), and its test masks [N, R, R]."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    decoder = SegmentationDecoder(SegmentationDecoderConfig(encoder_channels=tuple(f.shape[1] for f in train)))
    optimiser = torch.optim.Adam(decoder.parameters(), lr=2e-3)
    target = torch.from_numpy(masks).float()
    for _ in range(steps):
        rows = torch.randint(0, len(target), (min(16, len(target)),), generator=generator)
        logits = decoder([f[rows] for f in train])
        probs = logits.sigmoid()
        soft_dice = 1 - (2 * (probs * target[rows]).sum() + 1) / (probs.sum() + target[rows].sum() + 1)
        loss = F.binary_cross_entropy_with_logits(logits, target[rows]) + soft_dice
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        predicted = (decoder(test) > 0).numpy()
    return siim_dice(predicted, truth), predicted


def detection_map(train: torch.Tensor, boxes: list[np.ndarray], test: torch.Tensor, truth: list[np.ndarray],
                  resolution: int, steps: int, seed: int) -> float:
    """AP of nodule/mass boxes at IoU 0.25 (COCO's way) of a head trained on one frozen feature map."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    stride = resolution // train.shape[-1]
    head = DetectionHead(DetectionHeadConfig(in_channels=train.shape[1]))
    optimiser = torch.optim.Adam(head.parameters(), lr=2e-3)
    objectness, regression = cell_targets([torch.from_numpy(b) for b in boxes], train.shape[-1], stride)
    weight = (objectness.numel() - objectness.sum()) / objectness.sum().clamp(min=1.0)  # positives are rare cells
    for _ in range(steps):
        rows = torch.randint(0, len(train), (min(16, len(train)),), generator=generator)
        out = head(train[rows])  # [B, 5, G, G]
        positive = objectness[rows].bool()
        loss = F.binary_cross_entropy_with_logits(out[:, 0], objectness[rows], pos_weight=weight)
        if positive.any():
            predicted = torch.cat([out[:, 1:3].sigmoid(), out[:, 3:]], dim=1).permute(0, 2, 3, 1)[positive]
            loss = loss + F.l1_loss(predicted, regression[rows].permute(0, 2, 3, 1)[positive])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        found = decode(head(test), stride, TOP_BOXES)
    return average_precision([(b.numpy(), s.numpy()) for b, s in found], truth, DETECTION_IOU)


def chest_scores(encoder: FilmEncoder, train: Films, test: Films, options: DownstreamOptions, seed: int,
                 tasks: tuple[str, ...]) -> tuple[dict[str, float], dict[float, np.ndarray]]:
    """Every chest cell of one pre-trained encoder; also the test masks predicted per label fraction."""
    resolution = train.images.shape[-1]
    train_features, test_features = encode(encoder, train.images), encode(encoder, test.images)
    scores, masks = {}, {}
    for fraction in options.fractions:
        rows = labelled_subset(len(train), fraction, seed, options.min_labelled)
        share = _percent(fraction)
        scores[f"AUC {share}"] = classification_auc(FilmEncoder.pooled(train_features)[rows], train.labels[rows],
                                                    FilmEncoder.pooled(test_features), test.labels,
                                                    options.head_steps, seed)
        if "segmentation" in tasks:
            scores[f"Dice {share}"], masks[fraction] = segmentation_dice(
                [f[rows] for f in train_features], train.masks[rows], test_features, test.masks, options.head_steps,
                seed)
        if "detection" in tasks:
            scores[f"mAP {share}"] = detection_map(
                train_features[DETECTION_STAGE][rows], [train.boxes[r] for r in rows],
                test_features[DETECTION_STAGE], test.boxes, resolution, options.head_steps, seed)
    order = [f"{metric} {_percent(f)}" for metric in ("AUC", "Dice", "mAP") for f in options.fractions]
    return {cell: scores[cell] for cell in order if cell in scores}, masks  # Table 8's column order


def generation_scores(real: tuple[np.ndarray, np.ndarray], extra: tuple[np.ndarray, np.ndarray] | None,
                      test: tuple[np.ndarray, np.ndarray], options: DownstreamOptions, seed: int) -> dict[str, float]:
    """PSNR/SSIM on the real test slices of the MRI -> CT UNet trained on the real pairs (plus ``extra``)."""
    x, y = real if extra is None else (np.concatenate([real[0], extra[0]]), np.concatenate([real[1], extra[1]]))
    net = fit_regression(x, y, RegressionConfig(steps=options.baseline_steps, seed=seed))
    made = regress(net, test[0])
    return {"MRI->CT PSNR": psnr(made, test[1], 2.0), "MRI->CT SSIM": ssim(made, test[1], 2.0)}


def paired_test(reference: list[float], row: list[float]) -> dict[str, float | str]:
    """The paired difference ``row - reference`` over seeds: mean, std, t-test p, and a verdict."""
    differences = np.asarray(row) - np.asarray(reference)
    mean, spread = float(differences.mean()), float(differences.std())
    if len(differences) < 2 or spread == 0:
        p = 1.0 if mean == 0 or len(differences) < 2 else 0.0
    else:
        p = float(stats.ttest_rel(row, reference).pvalue)
    verdict = "no clear change" if p >= SIGNIFICANCE else "helps" if mean > 0 else "hurts"
    return {"difference": mean, "std": spread, "p": p, "verdict": verdict}


def _tasks(train: Films, test: Films, segment: str, notes: list[str]) -> tuple[str, ...]:
    both = (test.labels.sum(0) > 0) & (test.labels.sum(0) < len(test))
    if not both.any():
        raise InputError("--data: no chest finding is both present and absent among the test films; AUC needs both")
    tasks = ["classification"]
    if test.masks is not None and test.masks.any() and train.masks is not None and train.masks.any():
        tasks.append("segmentation")
    else:
        notes.append(f"segmentation left out: no {segment} in the real training or test films")
    if any(len(b) for b in test.boxes or []) and any(len(b) for b in train.boxes or []):
        tasks.append("detection")
    else:
        notes.append("detection left out: no nodule or mass in the real training or test films")
    return tuple(tasks)


def _brain_pairs(cache: Cache, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        return paired_slices(cache, split, (MRI_SOURCE,), "ct")
    except InputError:
        return None


def downstream(cache: Cache, manifest: Manifest, corpora: list[Corpus], options: DownstreamOptions,
               progress: Callable[..., None] | None = None) -> TaskResult:
    """Table 8 on the cache's real train/test chest films and brain slices, one row per corpus plus real only.
    ``progress(done, total, description)`` hears of the ground truth's regeneration and of every row and seed."""
    def phase(description: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: progress(done, total, description)) if progress else None

    train = real_films(cache, manifest, "train", options.segment, phase("regenerate training ground truth"))
    test = real_films(cache, manifest, "test", options.segment, phase("regenerate test ground truth"))
    result = TaskResult("downstream", len(test))
    tasks = _tasks(train, test, options.segment, result.notes)
    brain = {split: _brain_pairs(cache, split) for split in ("train", "test")}
    if brain["train"] is None or brain["test"] is None:
        result.notes.append("generation half left out: the data has no brain MRI T1 / CT slices in train and test")
    rows: dict[str, Corpus | None] = {REAL: None} | {f"+ {c.name}": c for c in corpora}
    total, done = options.seeds * len(rows), 0
    for seed in range(options.seeds):
        for row, corpus in rows.items():
            films = train.images if corpus is None else np.concatenate([train.images, corpus.films.images])
            reports = train.reports if corpus is None else train.reports + corpus.films.reports
            encoder = pretrain(films, reports, options, seed)
            scores, masks = chest_scores(encoder, train, test, options, seed, tasks)
            generation = brain["train"] is not None and brain["test"] is not None
            if generation and (corpus is None or corpus.pairs is not None):
                scores |= generation_scores(brain["train"], corpus.pairs if corpus else None, brain["test"],
                                            options, seed)
            result.add(row, scores)
            if seed == 0 and "segmentation" in tasks:
                result.samples.append(_sample(row, test, masks[max(options.fractions)]))
            done += 1
            if progress:
                progress(done, total, "pre-train and fine-tune (rows x seeds)")
    for row, corpus in rows.items():
        if corpus is not None:
            result.columns[row] = {"pairs added": f"{len(corpus.films)} films"
                                   + (f", {len(corpus.pairs[1])} MRI/CT slices" if corpus.pairs else "")}
            if corpus.pairs is None and brain["train"] is not None:
                result.notes.append(f"{row}: no brain MRI T1 / CT pairs in the corpus, so no generation-half cells")
            result.paired[row] = {metric: paired_test(result.seeds[REAL][metric], values)
                                  for metric, values in result.seeds[row].items() if metric in result.seeds[REAL]}
    result.columns[REAL] = {"pairs added": "none"}
    result.notes += _protocol_notes(train, test, options)
    return result


def _sample(row: str, test: Films, predicted: np.ndarray) -> Sample:
    """The first test film with the segmented finding: film, its mask, the row's predicted mask."""
    shown = int(np.argmax(test.masks.reshape(len(test), -1).any(axis=1)))
    return Sample(f"{row}: {test.ids[shown]}", {"input": test.images[shown], "truth": test.masks[shown] * 2.0 - 1.0,
                                                "output": predicted[shown] * 2.0 - 1.0})


def _protocol_notes(train: Films, test: Films, options: DownstreamOptions) -> list[str]:
    subsets = ", ".join(f"{_percent(f)} = {len(labelled_subset(len(train), f, 0, options.min_labelled))}"
                        for f in options.fractions)
    return [
        f"real films: {len(train)} training, {len(test)} test chest films; labelled films per fraction: {subsets}",
        f"pre-training: {options.pretrain_steps} steps of {options.batch_size} pairs in every row (symmetric InfoNCE,"
        f" temperature {options.temperature}); heads: {options.head_steps} steps on the frozen encoder",
        f"AUC: macro over the findings with both classes among the test films ({', '.join(CHEST_LABELS)}); Dice: "
        f"SIIM's per-film Dice of {options.segment}; mAP: nodule and mass boxes at IoU {DETECTION_IOU}",
        f"MRI->CT: supervised UNet ({options.baseline_steps} steps), PSNR/SSIM on real test slices in [-1, 1]",
        "each + row is compared with real only by a paired t-test over seeds (verdict at p < 0.05)",
    ]

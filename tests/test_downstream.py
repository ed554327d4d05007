"""``medm2g evaluate downstream`` (Table 8) on a micro phantom world and micro corpora made by synthesize-dataset."""

import json

import numpy as np
import pytest

from medm2g_core.data.cache import CacheConfig, build_cache
from medm2g_core.data.manifest import read_manifest, write_manifest
from medm2g_core.errors import InputError
from medm2g_core.evaluation.downstream import DownstreamOptions, labelled_subset, paired_test, siim_dice
from medm2g_core.evaluation.downstream_data import chest_truth, parse_synthetic

pytestmark = pytest.mark.usefixtures("one_thread")
ENV = {"OMP_NUM_THREADS": "1"}
TINY = ("--seeds", "2", "--pretrain-steps", "4", "--head-steps", "4", "--baseline-steps", "1")
CELLS = [f"{metric} {share}" for metric in ("AUC", "Dice", "mAP") for share in ("1%", "100%")]
TEST_CHEST = (2, 4, 5)  # seed 2's chest cases: 0 and 4 hold a pneumothorax, 0-3 a nodule or mass


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """12 cases (6 chest, 6 brain) with chosen splits, so both splits hold the segmented and detected findings."""
    from medm2g_core.phantoms.world import PhantomConfig, prepare_phantom

    root = tmp_path_factory.mktemp("downstream")
    manifest_path = prepare_phantom(root / "world", PhantomConfig(cases=12, seed=2, brain_slices=6, xray_pixels=64))
    manifest = read_manifest(manifest_path)
    chest = [r for r in manifest.records if r.meta["task"] == "chest"]
    brain = [r for r in manifest.records if r.meta["task"] == "brain"]
    for number, record in enumerate(chest):
        record.split = "test" if number in TEST_CHEST else "train"
    for number, record in enumerate(brain):
        record.split = "test" if number < 2 else "train"
    write_manifest(manifest_path, manifest.records, overwrite=True)
    build_cache(manifest_path, root / "cache", CacheConfig(resolution=64))
    return root


def _corpus(cli, world, out, *extra: str) -> None:
    result = cli("--quiet", "synthesize-dataset", "--from-manifest", str(world / "world" / "manifest.jsonl"),
                 "--split", "train", "--n", "4", "--batch-size", "4", "--steps", "2", "--out", str(out), *extra,
                 env=ENV)
    assert result.exit_code == 0, result.stderr


@pytest.fixture(scope="module")
def corpora(world):
    """A corpus of the default model and one of the same model without guidance (the weaker generator's row)."""
    from conftest import run_cli

    _corpus(run_cli, world, world / "medm2g", "--modalities", "xray,ct,mri,text")
    _corpus(run_cli, world, world / "unguided", "--modalities", "xray,ct,mri,text", "--guidance", "0")
    return world


@pytest.mark.slow  # two micro corpora and three pre-trainings x 2 seeds (~1.5 min): CI runs it with -m slow
def test_every_row_and_cell_with_a_paired_test_and_seeds_that_matter(corpora, cli, tmp_path):
    out = tmp_path / "t8"
    result = cli("--quiet", "evaluate", "downstream", "--data", str(corpora / "cache"), "--synthetic",
                 str(corpora / "medm2g"), "--synthetic", f"weak={corpora / 'unguided'}", "--out", str(out), *TINY,
                 env=ENV)
    assert result.exit_code == 0, result.stderr
    saved = json.loads((out / "results.json").read_text())
    assert saved["paper_table"] == "Table 8" and saved["cases"] == len(TEST_CHEST)
    assert list(saved["seeds"]) == ["real only", "+ medm2g", "+ weak"]
    for row in saved["seeds"].values():
        assert set(row) == {*CELLS, "MRI->CT PSNR", "MRI->CT SSIM"}
        assert all(len(values) == 2 and np.isfinite(values).all() for values in row.values())
        assert all(0 <= v <= 1 for cell in CELLS for v in row[cell])
        assert all(5 < v < 60 for v in row["MRI->CT PSNR"])
    real = saved["seeds"]["real only"]
    assert real["MRI->CT PSNR"][0] != real["MRI->CT PSNR"][1]  # another seed trains another network
    assert any(real[cell][0] != real[cell][1] for cell in CELLS)
    for row in ("+ medm2g", "+ weak"):
        tests = saved["paired"][row]
        assert set(tests) == set(saved["seeds"][row])
        for metric, test in tests.items():
            differences = np.subtract(saved["seeds"][row][metric], real[metric])
            assert test["difference"] == pytest.approx(differences.mean())
            assert test["verdict"] in ("helps", "hurts", "no clear change") and 0 <= test["p"] <= 1
    assert "films" in saved["columns"]["+ medm2g"]["pairs added"]
    assert "| + weak |" in result.stdout and "Paired difference" in result.stdout
    assert (out / "index.html").is_file() and (out / "sample-0.png").is_file()


@pytest.mark.slow  # shares the corpora of the test above
def test_a_corpus_that_is_unmarked_of_another_anatomy_or_empty_is_refused(corpora, cli, tmp_path):
    unmarked = corpora / "medm2g" / "unmarked.jsonl"
    records = read_manifest(corpora / "medm2g" / "manifest.jsonl").records
    records[1].meta["synthetic"] = False
    write_manifest(unmarked, records, overwrite=True)
    brain = tmp_path / "brain"
    brain_report = next(r.report for r in read_manifest(corpora / "world" / "manifest.jsonl").records
                        if r.meta["task"] == "brain")
    (tmp_path / "brain.txt").write_text(brain_report + "\n")
    made = cli("--quiet", "synthesize-dataset", "--prompts", str(tmp_path / "brain.txt"), "--modalities", "xray,text",
               "--steps", "2", "--out", str(brain), env=ENV)
    assert made.exit_code == 0, made.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "manifest.jsonl").write_text("")
    refusals = {
        str(corpora / "world" / "manifest.jsonl"): "of 12 cases are not marked synthetic",  # a real world
        str(unmarked): "1 of 4 cases are not marked synthetic",
        str(brain): "no chest X-ray case with a report (the corpus holds brain cases)",
        str(tmp_path / "empty"): "the corpus is empty",
        str(tmp_path / "nowhere"): "no such corpus",
    }
    for corpus, message in refusals.items():
        out = tmp_path / "out"
        result = cli("evaluate", "downstream", "--data", str(corpora / "cache"), "--synthetic", corpus, "--out",
                     str(out), *TINY, env=ENV)
        assert result.exit_code == 2 and message in result.stderr, (corpus, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
    missing = cli("evaluate", "downstream", "--data", str(corpora / "cache"), "--out", str(tmp_path / "o"))
    assert missing.exit_code == 2 and "at least one --synthetic" in missing.stderr


def test_the_paired_test_says_helps_hurts_or_nothing():
    assert paired_test([0.5, 0.6, 0.7], [0.6, 0.71, 0.79]) | {"p": 0} == {
        "difference": pytest.approx(0.1), "std": pytest.approx(0.0082, abs=1e-4), "p": 0, "verdict": "helps"}
    assert paired_test([0.5, 0.6, 0.7], [0.4, 0.49, 0.61])["verdict"] == "hurts"
    noisy = paired_test([0.5, 0.6, 0.7], [0.7, 0.5, 0.65])
    assert noisy["verdict"] == "no clear change" and noisy["p"] > 0.5
    assert paired_test([0.5, 0.5], [0.5, 0.5]) == {"difference": 0.0, "std": 0.0, "p": 1.0,
                                                   "verdict": "no clear change"}


def test_siim_dice_and_labelled_subsets():
    empty, full = np.zeros((1, 4, 4), bool), np.ones((1, 4, 4), bool)
    half = full.copy()
    half[:, :2] = False
    assert siim_dice(empty, empty) == 1.0 and siim_dice(full, empty) == 0.0
    assert siim_dice(np.concatenate([half, empty]), np.concatenate([full, empty])) == pytest.approx((2 / 3 + 1) / 2)
    assert len(labelled_subset(164, 0.01, 0, 8)) == 8 and len(labelled_subset(164, 1.0, 0, 8)) == 164
    assert len(labelled_subset(1000, 0.01, 0, 8)) == 10 and len(labelled_subset(5, 0.01, 0, 8)) == 5
    assert (labelled_subset(164, 0.01, 1, 8) == labelled_subset(164, 0.01, 1, 8)).all()
    assert (labelled_subset(164, 0.01, 1, 8) != labelled_subset(164, 0.01, 2, 8)).any()


def test_ground_truth_is_regenerated_and_checked_against_the_film(world):
    from medm2g_core.data.cache import Cache

    cache = Cache.open(world / "cache")
    manifest = read_manifest(world / "world" / "manifest.jsonl")
    stream = cache.stream("train", "xray")
    first = next(n for n, c in enumerate(stream["case"]) if cache.index["cases"][c]["id"].startswith("chest"))
    record = next(r for r in manifest.records if r.id == cache.index["cases"][stream["case"][first]]["id"])
    film = stream["images"][first]
    mask, boxes = chest_truth(manifest, record, 64, "pneumothorax", film)
    assert mask.shape == (64, 64) and mask.sum() > 20  # seed 2's first chest case holds a pneumothorax and a mass
    assert len(boxes) >= 1 and (boxes[:, 2:] - boxes[:, :2] >= 3).all() and (boxes >= 0).all() and (boxes <= 64).all()
    with pytest.raises(InputError, match="does not regenerate from its seed"):
        chest_truth(manifest, record, 64, "pneumothorax", film[::-1])
    with pytest.raises(InputError, match="NAME=CORPUS"):
        parse_synthetic(["=corpus"])
    with pytest.raises(InputError, match="given twice"):
        parse_synthetic(["a=x", "a=y"])
    with pytest.raises(InputError, match="segmented finding must be one of"):
        DownstreamOptions(segment="cardiomegaly")


def test_average_precision_matches_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from medm2g_core.metrics.detection_metrics import average_precision

    rng = np.random.default_rng(0)
    truth, detections, images, annotations, results = [], [], [], [], []
    for film in range(12):
        corners = rng.uniform(0, 50, (int(rng.integers(0, 4)), 2))
        boxes = np.concatenate([corners, corners + rng.uniform(3, 14, corners.shape)], axis=1)
        strays = np.tile(rng.uniform(0, 50, (3, 2)), 2) + np.array([0, 0, 6, 6])  # false positives
        jitter = np.concatenate([boxes + np.tile(rng.normal(0, 2, (len(boxes), 2)), 2), strays])  # boxes moved
        scores = rng.uniform(0, 1, len(jitter))
        truth.append(boxes)
        detections.append((jitter, scores))
        images.append({"id": film, "width": 64, "height": 64})
        annotations += [{"id": len(annotations) + k + 1, "image_id": film, "category_id": 1, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])}
                        for k, b in enumerate(boxes)]
        results += [{"image_id": film, "category_id": 1, "score": s, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                    for b, s in zip(jitter, scores, strict=True)]
    reference = COCO()
    reference.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1}]}
    reference.createIndex()
    for threshold in (0.25, 0.5):
        evaluation = COCOeval(reference, reference.loadRes(results), "bbox")
        evaluation.params.iouThrs = np.array([threshold])
        evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0, 1e10]], ["all"]
        evaluation.evaluate()
        evaluation.accumulate()
        expected = float(evaluation.eval["precision"][0, :, 0, 0, -1].mean())
        assert 0.05 < expected < 0.95
        assert average_precision(detections, truth, threshold) == pytest.approx(expected, abs=1e-9)

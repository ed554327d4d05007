"""Phantom reports and the rule-based labeler: the labeler recovers each case's findings from its report."""

import re
from collections import Counter

import numpy as np
import pytest

from medm2g_core.data.labeler import (
    CHEXPERT_LABELS,
    PHANTOM_LABELS,
    binary_labels,
    chexpert_labels,
    label_report,
    mention_values,
)
from medm2g_core.errors import InputError
from medm2g_core.phantoms.findings import BrainFindings, ChestFindings
from medm2g_core.phantoms.reports import brain_report, chest_report
from medm2g_core.phantoms.world import PhantomConfig, case_plan, case_report, make_case, report_corpus
from medm2g_core.vocabulary import BRAIN_LABELS, CHEST_LABELS

N_CASES = 1000
REPORT_FORMAT = re.compile(r"FINDINGS: \S[^\n]*\nIMPRESSION: \S[^\n]*")


def _chest_cases(seed: int = 0) -> list[tuple[ChestFindings, str]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(N_CASES):
        findings = ChestFindings.sample(rng)
        cases.append((findings, chest_report(findings, rng)))
    return cases


def _brain_cases(seed: int = 0) -> list[tuple[BrainFindings, str]]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(N_CASES):
        findings = BrainFindings.sample(rng)
        cases.append((findings, brain_report(findings, rng, "MR" if i % 2 else "CT")))
    return cases


@pytest.fixture(scope="module")
def chest_cases():
    return _chest_cases()


@pytest.fixture(scope="module")
def brain_cases():
    return _brain_cases()


def f1_score(truth: list[int], predicted: list[int]) -> float:
    """Binary F1 of the positive class; 1.0 when neither list has a positive."""
    tp = sum(t and p for t, p in zip(truth, predicted, strict=True))
    wrong = sum(t != p for t, p in zip(truth, predicted, strict=True))
    return 1.0 if tp + wrong == 0 else 2 * tp / (2 * tp + wrong)


def per_label_f1(cases, labels) -> dict[str, float]:
    truth = [findings.labels() for findings, _ in cases]
    predicted = [binary_labels(report) for _, report in cases]
    return {label: f1_score([t[label] for t in truth], [p[label] for p in predicted]) for label in labels}


# ---------------------------------------------------------------------------------------------- recovery


def test_labeler_recovers_chest_findings(chest_cases):
    scores = per_label_f1(chest_cases, CHEST_LABELS)
    assert min(scores.values()) >= 0.98, scores


def test_labeler_recovers_brain_findings(brain_cases):
    scores = per_label_f1(brain_cases, BRAIN_LABELS)
    assert min(scores.values()) >= 0.98, scores


def test_f1_matches_scikit_learn(chest_cases, brain_cases):
    metrics = pytest.importorskip("sklearn.metrics")
    for cases, labels in ((chest_cases, CHEST_LABELS), (brain_cases, BRAIN_LABELS)):
        truth = [findings.labels() for findings, _ in cases]
        predicted = [binary_labels(report) for _, report in cases]
        ours = per_label_f1(cases, labels)
        for label in labels:
            theirs = metrics.f1_score([t[label] for t in truth], [p[label] for p in predicted], zero_division=1.0)
            assert ours[label] == pytest.approx(theirs)


def test_f1_helper_on_a_known_case():
    assert f1_score([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert f1_score([0, 0], [0, 0]) == 1.0


def test_chexpert_categories_of_chest_reports_follow_the_findings(chest_cases):
    mapped = {
        "Cardiomegaly": "cardiomegaly", "Pleural Effusion": "pleural_effusion", "Pneumothorax": "pneumothorax",
        "Consolidation": "consolidation", "Atelectasis": "atelectasis", "Support Devices": "support_device",
    }
    for findings, report in chest_cases:
        labels, chexpert = findings.labels(), chexpert_labels(report)
        found = {name: int(value in (1, -1)) for name, value in chexpert.items()}
        assert {name: found[name] for name in mapped} == {name: labels[label] for name, label in mapped.items()}
        assert found["Lung Lesion"] == (labels["nodule"] or labels["mass"])
        abnormal = any(value for label, value in labels.items() if label != "support_device")
        assert chexpert["No Finding"] == (None if abnormal else 1), report


# ---------------------------------------------------------------------------------------------- reports


def test_reports_have_both_sections_and_mention_every_positive(chest_cases, brain_cases):
    for findings, report in chest_cases + brain_cases:
        assert REPORT_FORMAT.fullmatch(report), report
        mentions = mention_values(report)
        for label, value in findings.labels().items():
            if value:
                assert any(v in (1, -1) for v in mentions.get(label, [])), (label, report)
                assert 0 not in mentions[label], (label, report)


def test_reports_quote_rounded_measurements(chest_cases, brain_cases):
    for findings, report in chest_cases:
        for nodule in findings.nodules:
            assert re.search(rf"\b{round(nodule.size_mm)}( and \d+)? mm\b", report) and nodule.lobe in report.lower()
        if findings.mass is not None:
            cm = f"{findings.mass.size_mm / 10:.1f}".removesuffix(".0")
            assert re.search(rf"\b{re.escape(cm)}( x [\d.]+)? cm\b", report)
        if findings.device == "endotracheal tube":
            assert re.search(r"\d(\.5)? cm above the carina", report)
    for findings, report in brain_cases:
        if findings.tumor is not None:
            assert f"{findings.tumor.hemisphere} {findings.tumor.lobe}" in report.lower()
            assert f"{round(findings.tumor.edema_mm)} mm" in report


def test_reports_vary(chest_cases, brain_cases):
    for cases in (chest_cases, brain_cases):
        sentences = {s for _, report in cases for s in re.split(r"(?<=\.)\s+|\n", report)}
        assert len(sentences) >= 200
        abnormal = Counter(report for findings, report in cases if any(findings.labels().values()))
        assert abnormal.most_common(1)[0][1] <= 3


def test_normal_studies_are_phrased_in_several_ways(chest_cases):
    impressions = {report.split("IMPRESSION: ")[1] for findings, report in chest_cases
                   if not any(findings.labels().values())}
    assert len(impressions) >= 4


def test_reports_are_deterministic():
    assert _chest_cases(7)[:50] == _chest_cases(7)[:50]
    assert _brain_cases(7)[:50] == _brain_cases(7)[:50]
    assert [r for _, r in _chest_cases(7)[:50]] != [r for _, r in _chest_cases(8)[:50]]


def test_reports_reject_what_they_cannot_describe():
    with pytest.raises(InputError, match="MR, CT"):
        brain_report(BrainFindings(), np.random.default_rng(0), modality="PET")
    with pytest.raises(InputError, match="support device"):
        chest_report(ChestFindings(device="chest tube"), np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------- hand cases

HAND_CASES = [
    # negation, coordination, post-negation
    ("No pleural effusion or pneumothorax.", {"pleural_effusion": 0, "pneumothorax": 0}),
    ("No pleural effusion, pneumothorax, or focal consolidation.",
     {"pleural_effusion": 0, "pneumothorax": 0, "consolidation": 0}),
    ("There is no evidence of pneumothorax.", {"pneumothorax": 0}),
    ("Pneumothorax is not seen.", {"pneumothorax": 0}),
    ("Pleural effusions and pneumothorax are absent.", {"pleural_effusion": 0, "pneumothorax": 0}),
    ("The previously seen left pleural effusion has resolved.", {"pleural_effusion": 0}),
    ("Interval removal of the endotracheal tube.", {"support_device": 0}),
    ("The lungs are clear.", {"consolidation": 0, "atelectasis": 0, "nodule": None}),
    ("Heart size is normal.", {"cardiomegaly": 0}),
    ("Normal heart size.", {"cardiomegaly": 0}),
    ("The heart is not enlarged.", {"cardiomegaly": 0}),
    ("The costophrenic angles are sharp.", {"pleural_effusion": 0}),
    ("Ventricles are normal in size.", {"atrophy": 0}),
    ("No white matter signal abnormality.", {"wm_lesions": 0}),
    ("No intracranial mass, hemorrhage, or midline shift.", {"tumor": 0, "mass": None}),
    # scope ends at a new clause
    ("No pneumothorax, but there is a small left pleural effusion.", {"pneumothorax": 0, "pleural_effusion": 1}),
    ("No pneumothorax; small left pleural effusion.", {"pneumothorax": 0, "pleural_effusion": 1}),
    ("Small left pleural effusion and heart size is normal.", {"pleural_effusion": 1, "cardiomegaly": 0}),
    ("No pneumothorax, possible small left effusion.", {"pneumothorax": 0, "pleural_effusion": -1}),
    # pseudo-negation and uncertainty
    ("No change in the moderate right pleural effusion.", {"pleural_effusion": 1}),
    ("Pneumothorax cannot be excluded.", {"pneumothorax": -1}),
    ("Cannot exclude a small left pleural effusion.", {"pleural_effusion": -1}),
    ("No new consolidation.", {"consolidation": -1}),
    ("Questionable nodule in the right upper lobe.", {"nodule": -1}),
    ("Atelectasis versus consolidation in the left lower lobe.", {"atelectasis": -1, "consolidation": -1}),
    ("Findings may represent a small pneumothorax.", {"pneumothorax": -1}),
    ("Blunting of the left costophrenic angle.", {"pleural_effusion": -1}),
    ("Right lower lobe consolidation, likely pneumonia.", {"consolidation": 1}),
    ("No suspicious pulmonary nodules.", {"nodule": 0}),
    # synonyms, plurals, measurements
    ("Enlarged cardiac silhouette (cardiothoracic ratio 0.62).", {"cardiomegaly": 1}),
    ("The cardiothoracic ratio is 0.44.", {"cardiomegaly": 0}),
    ("An 8 mm nodule in the right upper lobe.", {"nodule": 1, "mass": None}),
    ("Bilateral pulmonary nodules.", {"nodule": 1}),
    ("A large 4.2 cm opacity in the left upper lobe.", {"mass": 1}),
    ("Right middle lobe airspace disease.", {"consolidation": 1}),
    ("Volume loss in the right lower lobe.", {"atelectasis": 1, "atrophy": None}),
    ("Mild generalized cerebral volume loss.", {"atrophy": 1, "atelectasis": None}),
    ("Moderate prominence of the sulci and ventricles.", {"atrophy": 1}),
    ("Endotracheal tube terminates 4.5 cm above the carina.", {"support_device": 1}),
    ("Left chest wall pacemaker with lead in the right ventricle.", {"support_device": 1, "atrophy": None}),
    ("A 3.2 cm rim-enhancing mass in the left frontal lobe with vasogenic edema and mass effect.",
     {"tumor": 1, "mass": None}),
    ("There are 7 FLAIR hyperintense foci in the periventricular white matter.", {"wm_lesions": 1}),
    ("Periventricular white matter hypodensities.", {"wm_lesions": 1}),
    # whole-study statements set no label
    ("No acute intracranial abnormality.", dict.fromkeys(BRAIN_LABELS)),
    ("No acute cardiopulmonary process.", dict.fromkeys(CHEST_LABELS)),
    # sections that hold questions, not findings, are not read
    ("INDICATION: Evaluate for pneumothorax.\nFINDINGS: Small left pleural effusion.",
     {"pneumothorax": None, "pleural_effusion": 1}),
]


@pytest.mark.parametrize(("text", "expected"), HAND_CASES, ids=[text[:48] for text, _ in HAND_CASES])
def test_label_report_on_hand_written_sentences(text, expected):
    labels = label_report(text)
    assert list(labels) == list(PHANTOM_LABELS)
    assert {name: labels[name] for name in expected} == expected


CHEXPERT_CASES = [
    ("Possible right lower lobe pneumonia.", {"Pneumonia": -1, "Lung Opacity": -1, "No Finding": None}),
    ("Support devices unchanged, otherwise no acute findings", {"Support Devices": 1, "No Finding": 1}),
    ("No acute cardiopulmonary process.", {"No Finding": 1, "Pneumothorax": None}),
    ("8 mm nodule in the right upper lobe.", {"Lung Lesion": 1, "Lung Opacity": 1, "No Finding": None}),
    ("Cardiomegaly.", {"Cardiomegaly": 1, "Enlarged Cardiomediastinum": 1}),
    ("Heart size is normal.", {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": None}),
    ("Widened mediastinum.", {"Enlarged Cardiomediastinum": 1, "Cardiomegaly": None}),
    ("Stable cardiomediastinal silhouette.", {"Enlarged Cardiomediastinum": -1}),
    ("The lungs are clear.", {"Lung Opacity": 0, "Consolidation": 0, "No Finding": 1}),
    ("Mild pulmonary edema.", {"Edema": 1, "Lung Opacity": 1}),
    ("Left basilar opacity, atelectasis or pneumonia.",
     {"Lung Opacity": 1, "Atelectasis": -1, "Pneumonia": -1}),
    ("Left pleural thickening. Old right rib fracture.", {"Pleural Other": 1, "Fracture": 1}),
    ("Emphysema. No pleural effusion.", {"No Finding": None, "Pleural Effusion": 0}),
]


@pytest.mark.parametrize(("text", "expected"), CHEXPERT_CASES, ids=[text[:48] for text, _ in CHEXPERT_CASES])
def test_chexpert_labels_on_hand_written_sentences(text, expected):
    labels = chexpert_labels(text)
    assert list(labels) == list(CHEXPERT_LABELS)
    assert {name: labels[name] for name in expected} == expected


def test_binary_labels_maps_uncertain_as_asked():
    text = "Pneumothorax cannot be excluded. Small left pleural effusion. No consolidation."
    assert binary_labels(text)["pneumothorax"] == 1
    strict = binary_labels(text, uncertain_as=0)
    assert (strict["pneumothorax"], strict["pleural_effusion"], strict["consolidation"]) == (0, 1, 0)
    with pytest.raises(InputError, match="uncertain_as"):
        binary_labels(text, uncertain_as=-1)


def test_case_report_is_the_report_the_world_writes():
    config = PhantomConfig(cases=4, seed=3, brain_slices=4, xray_pixels=32)
    for _, task, seed in case_plan(config):
        assert case_report(task, seed) == make_case(task, seed, config)[1]


def test_report_corpus_covers_every_finding_of_both_anatomies_and_is_reproducible():
    corpus = report_corpus(600, seed=1000)
    assert corpus == report_corpus(600, seed=1000) and len(set(corpus)) > 550
    world = [case_report(task, seed) for _, task, seed in case_plan(PhantomConfig(cases=600, seed=0))]
    assert not set(corpus) & {report for report in world if re.search(r"\d", report)}  # measured cases differ
    positives = Counter(label for report in corpus for label, value in binary_labels(report).items() if value)
    assert all(positives[label] >= 10 for label in (*CHEST_LABELS, *BRAIN_LABELS)), positives

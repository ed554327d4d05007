"""The labeler on real report phrasing: hand-written radiology sentences (tests/labeler_sentences*.tsv), scored."""

import re
from pathlib import Path

import pytest

from medm2g_core.data.labeler import CONCEPTS, PHANTOM_LABELS, chexpert_labels, concept_labels, label_report
from medm2g_core.errors import InputError
from medm2g_core.metrics.labeler_metrics import LabeledSentence, labeler_scores, read_sentences
from medm2g_core.phantoms.world import report_corpus

HERE = Path(__file__).resolve().parent
DEVELOPMENT, HELD_OUT = HERE / "labeler_sentences.tsv", HERE / "labeler_sentences_holdout.tsv"


@pytest.fixture(scope="module")
def sentences() -> dict[str, list[LabeledSentence]]:
    return {"development": read_sentences(DEVELOPMENT), "held-out": read_sentences(HELD_OUT)}


def test_the_set_is_large_and_covers_every_concept(sentences):
    everything = sentences["development"] + sentences["held-out"]
    assert len(everything) >= 500 and len(sentences["held-out"]) >= 100
    assert len({s.text for s in everything}) == len(everything)  # no sentence twice
    for value in (1, 0, -1):
        covered = {concept for s in everything for concept, v in s.expected.items() if v == value}
        wanted = set(CONCEPTS) if value == 1 else {"pleural_effusion", "pneumothorax", "atelectasis", "pneumonia",
                                                   "edema", "fracture", "emphysema", "hernia", "infarct"}
        assert wanted <= covered, (value, sorted(wanted - covered))
    positives = {concept: sum(s.expected.get(concept) == 1 for s in everything) for concept in CONCEPTS}
    assert min(positives.values()) >= 2, positives
    normals = [s for s in everything if not s.expected]
    assert len(normals) >= 15


def test_the_sentences_are_not_the_phantom_writers():
    """Stock phrases ("No acute cardiopulmonary process.") are written by both; nothing more is shared."""
    corpus = report_corpus(3000, seed=5)
    phantom = {part.strip().lower() for report in corpus for part in re.split(r"(?<=\.)\s+|\n|: ", report)}
    ours = {s.text.lower() for path in (DEVELOPMENT, HELD_OUT) for s in read_sentences(path)}
    shared = ours & phantom
    assert len(shared) <= 0.04 * len(ours), sorted(shared)
    assert all(len(sentence.split()) <= 8 for sentence in shared), sorted(shared)


def test_macro_f1_negation_and_uncertainty_on_real_phrasing(sentences):
    everything = labeler_scores(sentences["development"] + sentences["held-out"])
    held_out = labeler_scores(sentences["held-out"])
    misses = [(s.line, s.text, wrong) for s, wrong in everything.misses]
    assert everything.macro_f1 >= 0.90, misses
    assert held_out.macro_f1 >= 0.90, misses
    assert everything.negation_accuracy >= 0.95, misses
    assert everything.uncertainty_f1 >= 0.90, misses
    assert everything.exact >= 0.95, misses


def test_scores_on_a_known_case():
    sentences = [
        LabeledSentence("Small left pleural effusion.", {"pleural_effusion": 1}, 1),
        LabeledSentence("No pneumothorax.", {"pneumothorax": 0}, 2),
        LabeledSentence("Possible small pneumothorax.", {"pneumothorax": 1}, 3),  # read as uncertain: a miss
        LabeledSentence("Mild cardiomegaly.", {}, 4),  # read as positive: a false positive
    ]
    scores = labeler_scores(sentences)
    assert scores.concepts["pleural_effusion"].f1 == 1.0
    assert (scores.concepts["pneumothorax"].recall, scores.concepts["pneumothorax"].f1) == (0.0, 0.0)
    assert (scores.concepts["cardiomegaly"].precision, scores.concepts["cardiomegaly"].support) == (0.0, 0)
    assert scores.macro_f1 == pytest.approx(1 / 3)  # effusion 1, pneumothorax 0, cardiomegaly 0
    assert scores.negation_accuracy == 1.0 and scores.uncertainty_f1 == 0.0
    assert scores.exact == 0.5 and [s.line for s, _ in scores.misses] == [3, 4]


def test_a_malformed_sentence_file_names_the_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("# comment\nSmall effusion.\tpleural_effusion=1\nNo effusion.\tpleural_effusion=no\n")
    with pytest.raises(InputError, match=r"bad.tsv:3"):
        read_sentences(path)
    path.write_text("Emphysema.\tcopd=1\n")
    with pytest.raises(InputError, match="unknown concept copd"):
        read_sentences(path)


# ---------------------------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize(("text", "expected"), [
    ("No effusion or pneumothorax, but left basilar atelectasis.",
     {"pleural_effusion": 0, "pneumothorax": 0, "atelectasis": 1}),
    ("No pneumothorax, and the small left effusion is unchanged.", {"pneumothorax": 0, "pleural_effusion": 1}),
    ("Apart from mild bibasilar atelectasis, the lungs are clear.", {"atelectasis": 1}),
    ("Neither effusion nor pneumothorax is present.", {"pleural_effusion": 0, "pneumothorax": 0}),
    ("There is no consolidation to suggest pneumonia.", {"consolidation": 0, "pneumonia": 0}),
    ("Subcutaneous emphysema along the right chest wall.", {"subcutaneous_emphysema": 1, "emphysema": None}),
    ("The lungs are hyperinflated, consistent with emphysema.", {"emphysema": 1, "subcutaneous_emphysema": None}),
    ("Calcified granuloma in the right upper lobe.", {"granuloma": 1, "calcification": 1, "nodule": None}),
    ("Findings are compatible with usual interstitial pneumonia.", {"fibrosis": 1, "pneumonia": None}),
    ("Left apical pneumothorax is unlikely.", {"pneumothorax": -1}),
    ("Superimposed pneumonia cannot be entirely excluded.", {"pneumonia": -1}),
    ("Findings are favored to represent atelectasis rather than pneumonia.", {"atelectasis": -1, "pneumonia": 0}),
    ("Right lower lobe airspace disease most likely reflecting pneumonia.", {"consolidation": 1, "pneumonia": 1}),
    ("Stable appearance of the hila and aorta.", {"hilar_enlargement": None, "tortuous_aorta": None}),
])
def test_concept_labels_on_real_phrasing(text, expected):
    labels = concept_labels(text)
    assert list(labels) == list(CONCEPTS)
    assert {name: labels[name] for name in expected} == expected


def test_concepts_extend_the_phantom_labels():
    assert CONCEPTS[:len(PHANTOM_LABELS)] == PHANTOM_LABELS and len(set(CONCEPTS)) == len(CONCEPTS)
    text = "Small left pleural effusion. Mild dextroscoliosis. No pneumothorax."
    assert {k: v for k, v in concept_labels(text).items() if k in PHANTOM_LABELS} == label_report(text)


@pytest.mark.parametrize("text", ["Mild degenerative changes of the thoracic spine.", "Moderate hiatal hernia.",
                                  "Possible mild emphysema."])
def test_an_abnormality_outside_chexpert_keeps_no_finding_empty(text):
    assert chexpert_labels(text)["No Finding"] is None
    assert chexpert_labels("No acute cardiopulmonary process.")["No Finding"] == 1

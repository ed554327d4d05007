"""The labeler scored on hand-labelled report sentences (``tests/labeler_sentences*.tsv``).

A sentence file holds one sentence (or a short report) a line, a tab, then the expected labels:
``concept=value`` pairs joined by ``;`` (values 1 positive, 0 negated, -1 uncertain; ``-`` for none); blank
lines and lines starting with ``#`` are skipped. A concept that is not listed must come out as not mentioned or
negated (``None`` or 0), never positive or uncertain.

Scores (:func:`labeler_scores`), over every (sentence, concept of ``CONCEPTS``) pair:

* **per concept**: precision, recall and F1 of the positive class, 1 against anything else (an unlisted concept
  counts as not positive); **macro-F1** is their mean over the concepts with at least one expected or predicted
  positive;
* **negation accuracy**: the share of listed 0 labels read as 0;
* **uncertainty F1**: F1 of the uncertain class pooled over all pairs (a concept read as uncertain where the
  sentence does not list it as uncertain is a false positive);
* **exact**: the share of sentences whose every check passes (listed values equal, unlisted not 1 or -1).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medm2g_core.data.labeler import CONCEPTS, NEGATIVE, POSITIVE, UNCERTAIN, concept_labels
from medm2g_core.errors import InputError

_VALUES = {"1": POSITIVE, "0": NEGATIVE, "-1": UNCERTAIN}


@dataclass(frozen=True)
class LabeledSentence:
    text: str
    expected: dict[str, int]  # the listed concepts; the others must not be positive or uncertain
    line: int  # where it stands in its file


@dataclass(frozen=True)
class ConceptScore:
    precision: float
    recall: float
    f1: float
    support: int  # expected positives


@dataclass(frozen=True)
class LabelerScores:
    concepts: dict[str, ConceptScore]
    macro_f1: float
    negation_accuracy: float
    uncertainty_f1: float
    exact: float
    sentences: int
    misses: list[tuple[LabeledSentence, dict[str, tuple[int | None, int | None]]]]  # (expected, read) per concept


def read_sentences(path: str | Path) -> list[LabeledSentence]:
    """The labelled sentences of a file in the format above; a malformed line is an ``InputError`` naming it."""
    sentences = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        text, _, labels = line.partition("\t")
        try:
            pairs = [] if labels.strip() == "-" else [pair.split("=") for pair in labels.strip().split(";")]
            expected = {concept: _VALUES[value] for concept, value in pairs}
        except (KeyError, ValueError):
            raise InputError(f"{path}:{number}: labels must be concept=1|0|-1 joined by ';' or '-', not "
                             f"{labels!r}") from None
        unknown = sorted(set(expected) - set(CONCEPTS))
        if not text.strip() or unknown:
            raise InputError(f"{path}:{number}: unknown concept {', '.join(unknown)}" if unknown
                             else f"{path}:{number}: no sentence before the tab")
        sentences.append(LabeledSentence(text.strip(), expected, number))
    return sentences


def labeler_scores(sentences: Iterable[LabeledSentence]) -> LabelerScores:
    """Runs ``concept_labels`` over the sentences and scores it as the module docstring says."""
    counts = {concept: [0, 0, 0] for concept in CONCEPTS}  # tp, fp, fn of the positive class
    negated = [0, 0]  # listed 0 read as 0, listed 0
    uncertain = [0, 0, 0]  # tp, fp, fn of the uncertain class
    misses, total = [], 0
    for sentence in sentences:
        total += 1
        read = concept_labels(sentence.text)
        wrong = {}
        for concept in CONCEPTS:
            expected, got = sentence.expected.get(concept), read[concept]
            counts[concept][0] += expected == POSITIVE and got == POSITIVE
            counts[concept][1] += expected != POSITIVE and got == POSITIVE
            counts[concept][2] += expected == POSITIVE and got != POSITIVE
            uncertain[0] += expected == UNCERTAIN and got == UNCERTAIN
            uncertain[1] += expected != UNCERTAIN and got == UNCERTAIN
            uncertain[2] += expected == UNCERTAIN and got != UNCERTAIN
            if expected == NEGATIVE:
                negated[0] += got == NEGATIVE
                negated[1] += 1
            if got != expected and (concept in sentence.expected or got in (POSITIVE, UNCERTAIN)):
                wrong[concept] = (expected, got)
        if wrong:
            misses.append((sentence, wrong))
    if not total:
        raise InputError("no labelled sentences to score")
    scores = {concept: ConceptScore(*_prf(*c), support=c[0] + c[2]) for concept, c in counts.items()}
    scored = [scores[concept].f1 for concept, c in counts.items() if any(c)]
    return LabelerScores(
        concepts=scores, macro_f1=sum(scored) / len(scored) if scored else 1.0,
        negation_accuracy=negated[0] / negated[1] if negated[1] else 1.0, uncertainty_f1=_prf(*uncertain)[2],
        exact=1 - len(misses) / total, sentences=total, misses=misses,
    )


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1; each 1.0 where it has nothing to count (no prediction, no positive)."""
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return precision, recall, f1

"""Report metrics: ROUGE-L as the report-generation literature computes it, and clinical efficacy of findings.

ROUGE-L follows pycocoevalcap's ``Rouge`` scorer (what R2Gen reports): per report, the longest common subsequence
of the hypothesis and reference word sequences gives precision and recall, combined as F with beta = 1.2, and
the corpus score is their mean. Words are the normalised tokens BLEU uses here. Clinical efficacy: the project's
labeler reads the findings of both reports (uncertain counts as present) and precision, recall and F1 are
computed over all (report, finding) decisions (micro) and per finding, then averaged (macro).
"""

import math
import re
from collections import Counter

from medm2g_core.errors import InputError
from medm2g_core.evaluation.labeler import binary_labels
from medm2g_core.models.tokenizer import normalise_report

ROUGE_BETA = 1.2
_TOKEN = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """The tokens BLEU and ROUGE count: words and punctuation of the normalised report."""
    return _TOKEN.findall(normalise_report(text))


def corpus_bleu(hypotheses: list[str], references: list[str], max_n: int = 4) -> float:
    """Corpus BLEU (Papineni et al. 2002), one reference per hypothesis, on normalised words and punctuation.

    Clipped n-gram counts are summed over the corpus; the score is the geometric mean of the n-gram
    precisions for n = 1..max_n times the brevity penalty exp(1 - r / c) when the hypotheses are shorter (c)
    than the references (r). Zero when any precision is zero (no smoothing).
    """
    matches, totals = [0] * max_n, [0] * max_n
    hyp_length = ref_length = 0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = words(hypothesis), words(reference)
        hyp_length, ref_length = hyp_length + len(hyp), ref_length + len(ref)
        for n in range(1, max_n + 1):
            hyp_grams, ref_grams = _ngrams(hyp, n), _ngrams(ref, n)
            matches[n - 1] += sum((hyp_grams & ref_grams).values())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / max_n
    brevity = min(0.0, 1.0 - ref_length / hyp_length)
    return math.exp(log_precision + brevity)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _check(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise InputError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise InputError("no report to score")


def rouge_l(hypotheses: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F (beta 1.2) of each hypothesis against its reference."""
    _check(hypotheses, references)
    scores = []
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = words(hypothesis), words(reference)
        common = _lcs(hyp, ref)
        if not common:
            scores.append(0.0)
            continue
        precision, recall = common / len(hyp), common / len(ref)
        scores.append((1 + ROUGE_BETA**2) * precision * recall / (recall + ROUGE_BETA**2 * precision))
    return sum(scores) / len(scores)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def finding_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Micro and macro precision, recall and F1 of the findings the labeler reads in hypotheses vs references."""
    _check(hypotheses, references)
    predicted = [binary_labels(h) for h in hypotheses]
    truth = [binary_labels(r) for r in references]
    counts = {name: [0, 0, 0] for name in truth[0]}  # tp, fp, fn
    for p, t in zip(predicted, truth, strict=True):
        for name in counts:
            counts[name][0] += p[name] and t[name]
            counts[name][1] += p[name] and not t[name]
            counts[name][2] += t[name] and not p[name]
    micro = _prf(*(sum(c[k] for c in counts.values()) for k in range(3)))
    per_finding = [_prf(*c) for c in counts.values() if c[0] + c[2]]  # findings present in some reference
    macro = [sum(values) / len(per_finding) for values in zip(*per_finding, strict=True)] if per_finding else [0.0] * 3
    return {"precision_micro": micro[0], "recall_micro": micro[1], "f1_micro": micro[2],
            "precision_macro": macro[0], "recall_macro": macro[1], "f1_macro": macro[2]}

"""Report metrics: BLEU and ROUGE-L as the report-generation literature computes them, and clinical efficacy.

:func:`coco_scores` reproduces pycocoevalcap's ``Bleu(4)`` and ``Rouge`` scorers, which R2Gen and most
report-generation papers report: R2Gen calls them directly on ``{i: [reference]}`` and ``{i: [hypothesis]}``
(no PTB tokenizer) with lower-cased reports whose punctuation is split off; here the words are :func:`words`
of the normalised report, joined by single spaces. BLEU-1..4 are corpus-level: clipped n-gram counts summed
over the corpus, each precision guarded by pycocoevalcap's constants (``tiny`` 1e-15 added to the matches,
``small`` 1e-9 to the totals), the brevity penalty taken on the summed reference lengths, each reference chosen
as the one closest in length to its hypothesis (``option="closest"``). ROUGE-L: per report, the longest common
subsequence of the hypothesis and each reference gives precision and recall, the best over the references
combined as F with beta = 1.2; the corpus score is their mean. CIDEr-D (pycocoevalcap's ``Cider``, the
coco-caption variant) is added when pycocoevalcap is installed, and METEOR 1.5 (pycocoevalcap's ``Meteor``,
which starts a Java process, a few seconds) when ``java`` is on PATH as well; otherwise those keys are absent.

:func:`corpus_bleu` is plain corpus BLEU without smoothing, as training logs it. Clinical efficacy: the
project's labeler reads the findings of both reports (uncertain counts as present) and precision, recall and
F1 are computed over all (report, finding) decisions (micro) and per finding, then averaged (macro).
"""

import math
import re
import shutil
from collections import Counter
from collections.abc import Sequence

from medm2g_core.data.labeler import binary_labels
from medm2g_core.errors import InputError
from medm2g_core.models.tokenizer import normalise_report

ROUGE_BETA = 1.2
COCO_TINY, COCO_SMALL = 1e-15, 1e-9  # pycocoevalcap's BLEU guards against empty n-gram totals
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


def _check_strings(texts: Sequence, what: str) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{what} {i} is a {type(text).__name__}, not a string")


def _check(hypotheses: Sequence, references: Sequence) -> None:
    if len(hypotheses) != len(references):
        raise InputError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise InputError("no report to score")
    _check_strings(hypotheses, "hypothesis")


def _reference_lists(hypotheses: list[str], references: list[str] | list[list[str]]) -> list[list[str]]:
    _check(hypotheses, references)
    lists = [[r] if isinstance(r, str) else r for r in references]
    for i, refs in enumerate(lists):
        if not isinstance(refs, list | tuple) or not refs:
            raise InputError(f"reference {i} must be a string or a non-empty list of strings")
        _check_strings(refs, f"reference {i},")
    return lists


def _rouge_l_one(hypothesis: list[str], references: list[list[str]]) -> float:
    """pycocoevalcap's ``Rouge.calc_score``; it splits on " ", so an empty report is one empty token."""
    hyp = hypothesis or [""]
    common = [(_lcs(ref or [""], hyp), len(ref or [""])) for ref in references]
    precision = max(lcs / len(hyp) for lcs, _ in common)
    recall = max(lcs / length for lcs, length in common)
    if not precision or not recall:
        return 0.0
    return (1 + ROUGE_BETA**2) * precision * recall / (recall + ROUGE_BETA**2 * precision)


def rouge_l(hypotheses: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F (beta 1.2) of each hypothesis against its reference, as pycocoevalcap's ``Rouge``."""
    _check(hypotheses, references)
    _check_strings(references, "reference")
    scores = [_rouge_l_one(words(h), [words(r)]) for h, r in zip(hypotheses, references, strict=True)]
    return sum(scores) / len(scores)


def _coco_bleu(hypotheses: list[list[str]], references: list[list[list[str]]], max_n: int = 4) -> list[float]:
    """pycocoevalcap's ``BleuScorer.compute_score(option="closest")``: corpus BLEU-1..max_n."""
    correct, guess = [0] * max_n, [0] * max_n
    hyp_length = ref_length = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        hyp_length += len(hyp)
        ref_length += min((abs(len(ref) - len(hyp)), len(ref)) for ref in refs)[1]
        for n in range(1, max_n + 1):
            clip = Counter()
            for ref in refs:
                clip |= _ngrams(ref, n)
            correct[n - 1] += sum((_ngrams(hyp, n) & clip).values())
            guess[n - 1] += max(len(hyp) - n + 1, 0)
    scores, product = [], 1.0
    for n in range(max_n):
        product *= (correct[n] + COCO_TINY) / (guess[n] + COCO_SMALL)
        scores.append(product ** (1.0 / (n + 1)))
    ratio = (hyp_length + COCO_TINY) / (ref_length + COCO_SMALL)
    return [s * math.exp(1 - 1 / ratio) for s in scores] if ratio < 1 else scores


def _pycocoevalcap_scores(hypotheses: list[list[str]], references: list[list[list[str]]]) -> dict[str, float]:
    """CIDEr-D when pycocoevalcap is installed, METEOR when ``java`` is on PATH too; else nothing."""
    try:
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError:
        return {}
    res = {i: [" ".join(hyp)] for i, hyp in enumerate(hypotheses)}
    gts = {i: [" ".join(ref) for ref in refs] for i, refs in enumerate(references)}
    scores = {"cider": float(Cider().compute_score(gts, res)[0])}
    if shutil.which("java"):
        scores["meteor"] = float(Meteor().compute_score(gts, res)[0])
    return scores


def coco_scores(hypotheses: list[str], references: list[str] | list[list[str]]) -> dict[str, float]:
    """{"bleu_1".."bleu_4", "rouge_l"} as pycocoevalcap computes them, plus "cider" and "meteor" when available.

    ``references`` holds one string or a list of strings per hypothesis.
    """
    reference_lists = _reference_lists(hypotheses, references)
    hyps = [words(h) for h in hypotheses]
    refs = [[words(r) for r in rs] for rs in reference_lists]
    scores = {f"bleu_{n}": value for n, value in enumerate(_coco_bleu(hyps, refs), start=1)}
    scores["rouge_l"] = sum(_rouge_l_one(h, rs) for h, rs in zip(hyps, refs, strict=True)) / len(hyps)
    return scores | _pycocoevalcap_scores(hyps, refs)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def finding_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Micro and macro precision, recall and F1 of the findings the labeler reads in hypotheses vs references."""
    _check(hypotheses, references)
    _check_strings(references, "reference")
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

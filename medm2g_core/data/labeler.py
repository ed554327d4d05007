"""Rule-based finding labels for radiology reports: the phantom vocabulary, real-report concepts and CheXpert-14.

Used to score generated reports clinically (precision / recall / F1 of findings), to label phantom reports and
to read real chest and head reports (``concept_labels``; scored on hand-written radiology sentences in
``tests/labeler_sentences*.tsv`` by ``benchmarks/labeler_real.py``).
The rules follow the CheXpert labeler (Irvin et al., AAAI 2019) with regular expressions in place of its
dependency parse, NegEx style:

* **Sections and sentences.** Only FINDINGS / IMPRESSION / CONCLUSION text and unheaded text are read;
  INDICATION, HISTORY, COMPARISON and TECHNIQUE sections are dropped (they hold questions, not findings).
  Sentences end at ``.``, ``!`` or ``?`` followed by white space, or at a line break ("4.2 cm" stays whole).
* **Concepts** (``CONCEPTS``, read by ``concept_labels``): the phantom labels (``label_report``), the rest of
  CheXpert's categories (``enlarged_cardiomediastinum``, ``opacity``, ``edema``, ``pneumonia``,
  ``pleural_other``, ``fracture``) and what real reports name besides: ``emphysema`` (also hyperinflation,
  hyperexpansion, COPD, bullae; not subcutaneous, surgical or mediastinal emphysema), ``subcutaneous_emphysema``
  (subcutaneous or soft tissue air, gas, emphysema), ``pneumomediastinum``, ``fibrosis`` (interstitial lung
  disease or fibrosis, chronic or coarse interstitial changes, honeycombing, scarring, usual interstitial
  pneumonia), ``bronchiectasis``, ``granuloma``, ``calcification`` (any calcification named, vascular,
  valvular, nodal, of a granuloma or plaque, and atherosclerosis; the calcified structure's own concept is read
  as well), ``hilar_enlargement`` (enlarged, prominent or full hila, hilar or mediastinal lymphadenopathy),
  ``hernia`` (hiatal and other diaphragmatic hernias), ``elevated_hemidiaphragm`` (also eventration),
  ``scoliosis``, ``kyphosis``, ``degenerative_change`` (degenerative change or disc disease, spondylosis,
  osteophytes, osteoarthritis), ``tortuous_aorta`` (tortuous, unfolded, ectatic or prominent aorta),
  ``metastasis``, and on the head ``hemorrhage`` (also hematoma), ``infarct`` and ``hydrocephalus``.
* **Mentions.** Each concept has patterns with synonyms and plurals ("enlarged cardiac silhouette",
  "airspace opacity", "blunting of the costophrenic angle", "FLAIR hyperintense foci"...). Words that mean
  different things in the chest and the head ("mass", "volume loss", "edema", "tumor") are read in the
  sentence's context (lung lobes, pleura, heart versus brain lobes, ventricles, white matter), falling back on
  the whole report's context. Neutral mentions ("heart size", "cardiomediastinal silhouette", "ventricles",
  "costophrenic angle") count as positive only next to an abnormal qualifier in their clause ("enlarged",
  "prominent", "blunting"); "stable"/"unchanged" alone makes the heart, mediastinum, costophrenic angle and
  ventricles uncertain (CheXpert), otherwise nothing.
* **Negation (0).** Pre-negation cues ("no", "not", "without", "negative for", "free of", "clear of",
  "absence of", "resolution of", "removal of", "rather than", "neither", "nor", a leading "resolved", and
  "normal"/"unremarkable" before a noun within five words) reach forward to the end of the clause, so "No
  pleural effusion or pneumothorax." negates both, and over "to suggest": "No consolidation to suggest
  pneumonia" negates both.
  Post-negation cues ("is not seen", "are absent", "has resolved", "is normal in size", "are sharp",
  "within normal limits", "upper limits of normal", "is no longer elevated") reach back over at most four
  words to the nearest mention,
  and over a coordinated list ("effusion and pneumothorax are absent") unless the verb is singular
  ("is", "has"). A clause ends at "but", "however", "although", "though", "except", "apart from",
  "aside from", "other than", "whereas", "while", "yet", "with", "there is/are", ";" or ":", and at "and" or a
  comma that opens a new subject ("and the", "and a", ", the", ", there"): "No effusion or pneumothorax, but
  left basilar atelectasis", "No pneumothorax, and the left effusion is unchanged" and "Apart from mild
  atelectasis, the lungs are clear" affirm the last finding. A pre-negation scope also ends at an uncertainty
  cue that follows a mention ("No pneumothorax, possible effusion").
  Pseudo-negations ("no change", "no interval change", "not only") negate nothing.
* **Uncertainty (-1)**, after CheXpert's rules. "possible", "probable", "presumed", "questionable", "question
  of", "suspected", "suspicious for", "concerning for", "worrisome for", "suggestive of", "suggests", "may",
  "might", "could", "would" (so "may represent", "could reflect", "may be due to"), "equivocal", "possibility
  of", "favored", "differential includes" reach forward over the clause; "is possible", "is suspected" reach
  back; "borderline", "unlikely" and "less likely" reach both ways. "X or Y", "X and/or Y" and "X versus Y"
  make both uncertain. "cannot exclude", "cannot rule out", "difficult to exclude", "cannot be (entirely)
  excluded", "is not excluded" and "no new" are uncertain and are checked before negation (CheXpert's
  pre-negation uncertainty); otherwise negation wins over uncertainty ("No definite effusion" is 0). As in
  CheXpert, "likely", "most likely", "consistent with", "compatible with", "represents" and "reflects" affirm;
  "blunting of the costophrenic angle" is an uncertain effusion, and "pulmonary vascular congestion" and
  "cephalization" an uncertain edema.
* **Aggregation over mentions (CheXpert):** positive if any mention is positive, else uncertain if any is
  uncertain, else negative if any is negative, else ``None`` (not mentioned).
* **Implied statements.** "The lungs are clear" negates consolidation, atelectasis, lung opacity, edema and
  pneumonia (not nodules or masses). A quoted cardiothoracic ratio (0.62, 62%) sets cardiomegaly by the 0.5
  threshold. Whole-study statements ("No acute cardiopulmonary process", "No acute intracranial abnormality",
  "Normal study") set no label: chronic findings such as atrophy may coexist with them.
* **CheXpert mapping** (``chexpert_labels``): Lung Lesion from nodules and masses; Lung Opacity and Enlarged
  Cardiomediastinum are parents in CheXpert's hierarchy and take the positive or uncertain values of their
  children (Lung Lesion, Edema, Consolidation, Pneumonia, Atelectasis; Cardiomegaly) besides their own
  mentions (opacity, infiltrate; mediastinal widening); a child's negation does not negate the parent.
  No Finding is 1 when no concept other than support devices is positive or uncertain (brain findings and
  the concepts outside CheXpert's categories, such as emphysema, granuloma or degenerative change, included)
  and ``None`` otherwise, as CheXpert does. Fibrosis, which CheXpert files under Pleural Other, is kept apart.
* **Consistency** (``contradictions``, ``foreign_findings``): to score generated reports, a finding both affirmed
  and negated (mention by mention, so the side named with a mention and "no other ..." count), and positive
  findings of the other anatomy (a pleural effusion in a brain report).
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from medm2g_core.errors import InputError
from medm2g_core.vocabulary import ANATOMIES, BRAIN_LABELS, CHEST_LABELS

PHANTOM_LABELS = CHEST_LABELS + BRAIN_LABELS
CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
CONCEPTS = (
    *PHANTOM_LABELS,
    "enlarged_cardiomediastinum", "opacity", "edema", "pneumonia", "pleural_other", "fracture",
    "emphysema", "subcutaneous_emphysema", "pneumomediastinum", "fibrosis", "bronchiectasis", "granuloma",
    "calcification", "hilar_enlargement", "hernia", "elevated_hemidiaphragm", "scoliosis", "kyphosis",
    "degenerative_change", "tortuous_aorta", "metastasis", "hemorrhage", "infarct", "hydrocephalus",
)
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1


def label_report(text: str) -> dict[str, int | None]:
    """Each phantom label (chest then brain): 1 positive, 0 negated, -1 uncertain, ``None`` not mentioned."""
    concepts = _concept_values(text)
    return {label: concepts.get(label) for label in PHANTOM_LABELS}


def concept_labels(text: str) -> dict[str, int | None]:
    """Every concept of ``CONCEPTS`` (the phantom labels, then the rest): 1, 0, -1 or ``None`` (not mentioned)."""
    concepts = _concept_values(text)
    return {concept: concepts.get(concept) for concept in CONCEPTS}


def binary_labels(text: str, uncertain_as: int = 1) -> dict[str, int]:
    """Phantom labels as 0/1 for F1 scoring: positive is 1, uncertain is ``uncertain_as``, the rest 0."""
    if uncertain_as not in (0, 1):
        raise InputError(f"uncertain_as must be 0 or 1, not {uncertain_as!r}")
    mapping = {POSITIVE: 1, UNCERTAIN: uncertain_as}
    return {label: mapping.get(value, 0) for label, value in label_report(text).items()}


def chexpert_labels(text: str) -> dict[str, int | None]:
    """The 14 CheXpert categories (1, 0, -1 or ``None``), with the hierarchy and No Finding rules above."""
    concepts = _concept_values(text)
    labels = {name: _strongest(concepts.get(c) for c in sources) for name, sources in _CHEXPERT_SOURCES.items()}
    for parent, children in _CHEXPERT_PARENTS.items():
        inherited = [labels[child] for child in children if labels[child] in (POSITIVE, UNCERTAIN)]
        labels[parent] = _strongest([labels[parent], *inherited])
    found = any(value in (POSITIVE, UNCERTAIN) for concept, value in concepts.items() if concept != "support_device")
    labels["No Finding"] = None if found else POSITIVE
    return {name: labels[name] for name in CHEXPERT_LABELS}


_CHEXPERT_SOURCES = {
    "Enlarged Cardiomediastinum": ("enlarged_cardiomediastinum",), "Cardiomegaly": ("cardiomegaly",),
    "Lung Opacity": ("opacity",), "Lung Lesion": ("nodule", "mass"), "Edema": ("edema",),
    "Consolidation": ("consolidation",), "Pneumonia": ("pneumonia",), "Atelectasis": ("atelectasis",),
    "Pneumothorax": ("pneumothorax",), "Pleural Effusion": ("pleural_effusion",),
    "Pleural Other": ("pleural_other",), "Fracture": ("fracture",), "Support Devices": ("support_device",),
}
_CHEXPERT_PARENTS = {
    "Enlarged Cardiomediastinum": ("Cardiomegaly",),
    "Lung Opacity": ("Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis"),
}
_PRIORITY = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}


def _strongest(values: Iterable[int | None]) -> int | None:
    """CheXpert's aggregation: positive over uncertain over negative over not mentioned."""
    present = [value for value in values if value is not None]
    return max(present, key=_PRIORITY.__getitem__) if present else None


# ---------------------------------------------------------------------------------------------- mentions


@dataclass(frozen=True)
class _MentionRule:
    concept: str
    pattern: re.Pattern[str]
    domain: str | None = None  # "chest" / "brain": only in a sentence read in that context
    qualifier: re.Pattern[str] | None = None  # a neutral mention is positive only with this in its clause
    hedged: bool = False  # an affirmed mention is uncertain
    stable: bool = True  # a neutral mention called "stable" or "unchanged" without a qualifier is uncertain


def _mention(concept: str, pattern: str, domain: str | None = None, qualifier: str | None = None,
             hedged: bool = False, stable: bool = True) -> _MentionRule:
    return _MentionRule(concept, re.compile(pattern), domain, re.compile(qualifier) if qualifier else None, hedged,
                        stable)


_ENLARGED = r"\b(?:enlarg\w*|prominen\w*|large|increased|widen\w*|dilat\w*|cardiomegaly|ex vacuo)\b"
_MASS = r"\bmass(?:es)?\b(?! effect)|\b(?:tumou?rs?|neoplasms?)\b"
_MENTIONS = (
    _mention("cardiomegaly", r"\bcardiomegaly\b|\bcardiac enlargement\b|\benlarged heart\b"),
    _mention("cardiomegaly", r"\b(?:heart|cardiac) size\b|\bsize of the heart\b|\bcardiac (?:silhouette|shadow)\b"
             r"|\bheart(?= (?:is|appears|remains)\b)|\bcardiothoracic ratio\b"
             r"|\bcardiac(?= and mediastinal (?:silhouettes|contours)\b)", qualifier=_ENLARGED),
    _mention("enlarged_cardiomediastinum", r"\bcardiomediastinal (?:silhouettes?|contours?|shadow)\b"
             r"|\bcardiomediastinum\b|\bmediastinum\b|\bmediastinal (?:silhouettes?|contours?|configuration|widening)\b"
             r"|\bmediastinal(?= and hilar (?:contours|silhouettes)\b)|\bcardiomediastinal(?= and hilar\b)",
             qualifier=_ENLARGED),
    _mention("pleural_effusion", r"\b(?<!pericardial )effusions?\b|\bpleural fluid\b|\bhydro(?:pneumo)?thorax\b"),
    _mention("pleural_effusion", r"\bcostophrenic (?:angles?|sulc[iu]s?|recess(?:es)?)\b", qualifier=r"\bblunt\w*",
             hedged=True),
    _mention("nodule", r"\bnodul(?:e|es|ar)\b"),
    _mention("mass", _MASS, domain="chest"),
    _mention("mass", r"\blarge\b(?:\s+[\w.-]+){0,3}?\s+opacit(?:y|ies)\b"),
    _mention("consolidation", r"\bconsolidat(?:ion|ions|ive|ed)\b|\bair-?space (?:opacit(?:y|ies)|opacification"
             r"|disease|process)\b"),
    _mention("opacity", r"\bopacit(?:y|ies)\b|\bopacification\b|\binfiltrat(?:e|es|ion)\b|\bhaziness\b"),
    _mention("opacity", r"\bdensit(?:y|ies)\b", domain="chest"),
    _mention("pneumonia", r"\b(?:broncho)?pneumonias?\b(?<!interstitial pneumonia)|\binfection\b"
             r"|\binfectious process\b|\baspiration\b", domain="chest"),
    _mention("edema", r"\bo?edema\b|\bcongestive heart failure\b|\bchf\b|\bfluid overload\b", domain="chest"),
    _mention("edema", r"\b(?:pulmonary )?(?:vascular|venous) congestion\b|\bpulmonary congestion\b"
             r"|\bcephalization\b", hedged=True),
    _mention("pneumothorax", r"\b(?:hydro)?pneumothora(?:x|ces)\b|\bptx\b"),
    _mention("atelectasis", r"\batelecta(?:sis|ses|tic)\b"),
    _mention("atelectasis", r"\bvolume loss\b|\b(?:lobar )?collapse\b", domain="chest"),
    _mention("support_device", r"\b(?:endotracheal|tracheostomy|nasogastric|enteric|feeding|et|ng) tubes?\b"
             r"|\bett\b|\bcatheters?\b|\b(?:central(?: venous)?|picc|arterial|midline) lines?\b"
             r"|\blines (?:and|or) tubes\b|\bpiccs?\b|\bpacemakers?\b|\bpacers?\b|\ba?icds?\b|\bdefibrillators?\b"
             r"|\bdevices?\b|\bmediport\b|\bsternotomy wires\b|\bloop recorder\b"),
    _mention("support_device", r"\btubes?\b|\bdrains?\b|\bhardware\b|\bports?\b", domain="chest"),
    _mention("pleural_other", r"\bpleural (?:thickening|scar(?:ring)?|plaques?|caps?)\b|\bfibrothorax\b"
             r"|\bpleur(?:o|al)-?[ -]?parenchymal scar(?:ring)?\b|\bapical caps?\b"),
    _mention("fracture", r"\bfractur(?:e|es|ed)\b|\bcompression deformit(?:y|ies)\b"),
    _mention("emphysema", r"\b(?<!subcutaneous )(?<!soft tissue )(?<!surgical )(?<!mediastinal )(?<!interstitial )"
             r"emphysema\b|\bemphysematous\b|\bhyper-?(?:inflat|expan)\w*|\bcopd\b"
             r"|\bchronic obstructive (?:pulmonary|lung) disease\b|\bbull(?:ae|a|ous)\b"),
    _mention("subcutaneous_emphysema", r"\b(?:subcutaneous|soft tissue|surgical) (?:emphysema|air|gas)\b"),
    _mention("pneumomediastinum", r"\bpneumomediastinum\b|\bmediastinal emphysema\b"),
    _mention("fibrosis", r"\bfibro(?:sis|tic)\b"
             r"|\binterstitial (?:lung disease|fibrosis|pneumonia|abnormalit(?:y|ies))\b"
             r"|\b(?:coarse(?:ned)?|chronic) interstitial (?:markings|changes|opacities|prominence)\b|\bild\b"
             r"|\bhoneycomb\w*|\b(?<!pleural )(?<!parenchymal )scar(?:s|ring)?\b"),
    _mention("bronchiectasis", r"\bbronchiectas(?:is|es)\b|\bbronchiectatic\b"),
    _mention("granuloma", r"\bgranulom(?:a|as|ata|atous)\b"),
    _mention("calcification", r"\bcalcifi(?:c|ed|cation|cations)\b|\batherosclero(?:sis|tic)\b"),
    _mention("hilar_enlargement", r"\bhilar (?:enlargement|prominence|fullness|masses)\b"
             r"|\b(?:lymph)?adenopath(?:y|ies)\b|\benlarged (?:hilar|mediastinal) (?:lymph )?nodes\b"),
    _mention("hilar_enlargement", r"\bhil(?:a|um)\b|\bhilar (?:contours?|silhouettes?|(?:lymph )?nodes|structures)\b"
             r"|(?<=mediastinal and )hilar\b|(?<=cardiomediastinal and )hilar\b", qualifier=_ENLARGED,
             stable=False),
    _mention("hernia", r"\bhernias?\b|\bherniation\b"),
    _mention("elevated_hemidiaphragm", r"\bhemi-?diaphragms?\b|\bdiaphragms?\b",
             qualifier=r"\belevat\w*|\beventration\b", stable=False),
    _mention("elevated_hemidiaphragm", r"\beventration\b"),
    _mention("scoliosis", r"\b(?:dextro|levo|kypho)?scolio(?:sis|tic)\b|\b(?:dextro|levo)convex\b"),
    _mention("kyphosis", r"\bkypho(?:sis|tic|scoliosis)\b"),
    _mention("degenerative_change", r"\bdegenerat(?:ive|ion)\b|\bspondylo(?:sis|tic)\b|\bosteophyt\w*"
             r"|\b(?:osteo)?arthritis\b|\barthropathy\b|\bdjd\b"),
    _mention("tortuous_aorta", r"\btortu(?:ous|osity)\b(?=[\w\s]{0,30}\baort)|\baortic (?:tortuosity|ectasia)\b"),
    _mention("tortuous_aorta", r"\baort(?:a|ic arch|ic knob|ic contour|ic knuckle)\b", qualifier=r"\btortu\w*"
             r"|\bunfold\w*|\bectatic\b|\bectasia\b|\bdilat\w*|\benlarg\w*|\bprominen\w*|\bwiden\w*|\belongat\w*",
             stable=False),
    _mention("hemorrhage", r"\b(?:hemorrhag\w*|haemorrhag\w*|hematomas?|haematomas?|bleed)\b"),
    _mention("infarct", r"\binfarct(?:s|ion)?\b|\bstroke\b"),
    _mention("hydrocephalus", r"\bhydrocephalus\b"),
    _mention("metastasis", r"\bmetasta(?:sis|ses|tic)\b"),
    _mention("tumor", _MASS, domain="brain"),
    _mention("tumor", r"\bglio(?:mas?|blastomas?)\b|\bgbm\b"),
    _mention("tumor", r"\b(?:enhancing|intra-axial|space-occupying|mass) lesions?\b", domain="brain"),
    _mention("wm_lesions", r"\bwhite matter (?:hyperintens\w+|hypodens\w+|lesions?|signal abnormalit(?:y|ies)"
             r"|disease|changes?|foci)\b|\b(?:t2/flair|flair|t2)[ -]hyperintense (?:foci|lesions?)\b"
             r"|\b(?:t2/flair|flair|t2) hyperintensities\b"
             r"|\bperiventricular (?:[\w-]+ ){0,3}?(?:hyperintensit(?:y|ies)|hypodensit(?:y|ies)|foci|lesions?)\b"
             r"|\bleukoaraiosis\b|\bsmall vessel (?:ischemic )?(?:disease|changes?)\b"
             r"|\bmicro(?:vascular|angiopathic) (?:ischemic )?(?:disease|changes?)\b"),
    _mention("atrophy", r"\batroph(?:y|ic)\b"),
    _mention("atrophy", r"\bvolume loss\b", domain="brain"),
    _mention("atrophy", r"\b(?:sulci and (?:the )?ventricles|ventricles and (?:the )?sulci)\b|\bventricles\b"
             r"|\bsulci\b|\bventricular (?:size|system)\b", qualifier=_ENLARGED),
)
_STABLE = re.compile(r"\b(?:stable|unchanged|similar)\b")

_BRAIN_CONTEXT = re.compile(
    r"\b(?:intracranial|cerebral|cerebellar|brain|frontal|parietal|temporal|occipital|hemispher\w*|ventricles"
    r"|lateral ventricle|ventricular system|sulci|white matter|gr[ae]y matter|flair|midline shift|mass effect"
    r"|extra-axial|intra-axial|glio\w*|periventricular|vasogenic|supratentorial|infratentorial|falx|gray-white"
    r"|basal ganglia|thalam\w*|pons|subdural|epidural|subarachnoid|intraparenchymal|intracerebral|convexity"
    r"|sylvian|mca|calvari\w*|encephalomalacia)\b"
)
_CHEST_CONTEXT = re.compile(
    r"\b(?:lungs?|pulmonary|pleura\w*|hemithorax|thorax|thoracic|chest|cardiac|heart|cardiomediastinal"
    r"|mediastin\w*|costophrenic|hil(?:ar|um|a)|carina|lingula|apical|bibasilar|airspace|ribs?|diaphragm\w*"
    r"|pneumothorax|effusions?|nodul\w*|(?:upper|middle|lower) lobes?)\b"
)


def report_anatomy(text: str) -> str | None:
    """"brain" or "chest" by which anatomy's words a text mentions more often; None on a tie."""
    brain, chest = len(_BRAIN_CONTEXT.findall(text)), len(_CHEST_CONTEXT.findall(text))
    return "brain" if brain > chest else "chest" if chest > brain else None


@dataclass(frozen=True)
class _Hit:
    rule: _MentionRule
    start: int
    end: int


def _find_hits(sentence: str, domain: str) -> list[_Hit]:
    """Mentions in the sentence; of overlapping mentions of one concept only the longest is kept."""
    found = [
        _Hit(rule, *match.span())
        for rule in _MENTIONS if rule.domain in (None, domain)
        for match in rule.pattern.finditer(sentence)
    ]
    found.sort(key=lambda hit: hit.start - hit.end)
    kept: list[_Hit] = []
    for hit in found:
        if not any(k.rule.concept == hit.rule.concept and k.start < hit.end and hit.start < k.end for k in kept):
            kept.append(hit)
    return sorted(kept, key=lambda hit: hit.start)


# ---------------------------------------------------------------------------------------------- cues

_NO_REACH, _CLAUSE = -1, 1000  # a cue's reach in words: none, or to the end of its clause


@dataclass(frozen=True)
class _CueRule:
    polarity: str  # pseudo, negunc, neg, unc, alt (X or Y), stop (ends a clause)
    pattern: re.Pattern[str]
    ahead: int = _NO_REACH  # words allowed between the cue and a mention after it
    behind: int = _NO_REACH  # words allowed between a mention before it and the cue


def _cue(polarity: str, pattern: str, ahead: int = _NO_REACH, behind: int = _NO_REACH) -> _CueRule:
    return _CueRule(polarity, re.compile(pattern), ahead, behind)


_COPULA = r"\b(?:is|are|was|were|has been|have been|appears?|appear to be|remains?)\s+(?:(?:now|otherwise|again)\s+)?"
_CUES = (  # in priority order: a cue overlapping an earlier one is dropped
    _cue("pseudo", r"\bno (?:significant |interval |further )?(?:change|increase|decrease)\b|\bnot only\b"
         r"|\bwithout (?:significant |interval )?change\b|\bgram[- ]negative\b|\bto (?:suggest|indicate|explain)\b"),
    _cue("negunc", r"\b(?:can ?not|can't|could not|not possible to|difficult to|unable to) (?:exclude|rule out)\b"
         r"|\bno new\b|\bno evidence to (?:exclude|rule out)\b", ahead=_CLAUSE),
    _cue("negunc", r"\b(?:(?:can ?not|can't|could not) be|(?:is|are|was|were) not|not) (?:entirely |completely "
         r"|fully |definitely )?(?:excluded|ruled out)\b", behind=4),
    _cue("neg", r"^(?:interval(?:ly)? )?resolved\b", ahead=_CLAUSE),
    _cue("unc", r"\bborderline\b|\bunlikely\b|\bless likely\b", ahead=_CLAUSE, behind=4),
    _cue("neg", _COPULA + r"(?:normal(?: in (?:size|caliber|configuration|size and configuration))?|unremarkable"
         r"|within normal limits|sharp|clear\b(?! of)|appropriate for (?:the patient's )?age"
         r"|not (?:enlarged|dilated|widened))\b", behind=4),
    _cue("neg", r"\b(?:(?:is|are|was|were|has been|have been)\s+)?(?:not (?:seen|identified|present|visualized"
         r"|demonstrated|appreciated|evident)|no longer (?:seen|visualized|present|identified|evident|elevated"
         r"|enlarged|widened|dilated|prominent)|absent|removed|(?:at )?(?:the )?upper limits? of normal"
         r"|(?:top|high|upper)[- ]normal)\b"
         r"|\b(?:(?:has|have)(?: since)? )?(?:resolved|cleared)\b", behind=4),
    _cue("unc", r"\b(?:is|are|was|were) (?:possible|suspected|questioned|not well (?:seen|visualized|evaluated))\b"
         r"|\b(?:could|may|might) be present\b", behind=4),
    _cue("neg", r"\bno\b|\bnot\b|\bwithout\b|\bnegative for\b|\bfree of\b|\bclear of\b|\babsence of\b"
         r"|\bresolution of\b|\bremoval of\b|\brather than\b|\bneither\b|\bnor\b", ahead=_CLAUSE),
    _cue("neg", r"\bnormal\b|\bunremarkable\b|\bwithin normal limits\b", ahead=5, behind=3),
    _cue("unc", r"\bpossibl[ey]\b|\bprobabl[ey]\b|\bpresumabl[ey]\b|\bpresumed\b|\bquestionabl[ey]\b"
         r"|\bquestion of\b|\bsuspect(?:ed)?\b|\bsuspicio(?:us|n) (?:for|of)\b|\bconcern(?:ing)? for\b"
         r"|\bworrisome for\b|\bsuggestive of\b|\bsuggest(?:s|ing)?\b|\bsuggestion of\b|\bmay\b|\bmight\b"
         r"|\bcould\b|\bwould\b|\bequivocal\b|\bpossibility\b|\bfavou?r(?:s|ed)?\b"
         r"|\bdifferential (?:diagnosis |considerations? )?includes?\b",
         ahead=_CLAUSE),
    _cue("alt", r"\bor\b|\bversus\b|\bvs\b\.?|\band/or\b", ahead=3, behind=3),
    _cue("stop", r"\b(?:but|however|although|though|except|apart from|aside from|other than|whereas|while|yet"
         r"|with|there (?:is|are|was|were|has been|have been)|and (?=(?:the|a|an|this|these|it)\b))\b|[;:]"
         r"|,(?= (?:the|there|this|these|it)\b)"),
)
_SINGULAR = re.compile(r"(?:is|was|has|appears|remains)\b")
_COORDINATION = re.compile(r"^\s*$|^\s*(?:,|,?\s*(?:and|or|nor|and/or|as well as))\s+(?:[\w-]+\s+){0,3}$")
_WORD = re.compile(r"[\w./%-]+")


@dataclass(frozen=True)
class _Cue:
    rule: _CueRule
    start: int
    end: int
    singular: bool  # "is normal" and "or" reach back to the nearest mention only, "are normal" to a list


def _find_cues(sentence: str) -> list[_Cue]:
    cues: list[_Cue] = []
    for rule in _CUES:
        for match in rule.pattern.finditer(sentence):
            start, end = match.span()
            if not any(c.start < end and start < c.end for c in cues):
                singular = rule.polarity == "alt" or bool(_SINGULAR.match(match.group()))
                cues.append(_Cue(rule, start, end, singular))
    return sorted((c for c in cues if c.rule.polarity != "pseudo"), key=lambda cue: cue.start)


def _words(text: str) -> int:
    return len(_WORD.findall(text))


# ---------------------------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class _Sentence:
    text: str
    hits: list[_Hit]
    cues: list[_Cue]

    def stops(self) -> list[_Cue]:
        return [c for c in self.cues if c.rule.polarity == "stop"]

    def bounds(self, hit: _Hit) -> tuple[int, int]:
        """Where the clause of ``hit`` starts and ends."""
        start = max((c.end for c in self.stops() if c.end <= hit.start), default=0)
        end = min((c.start for c in self.stops() if c.start >= hit.end), default=len(self.text))
        return start, end

    def clause(self, hit: _Hit) -> str:
        start, end = self.bounds(hit)
        return self.text[start:end]

    def lead(self, hit: _Hit) -> str:
        """The clause before ``hit`` back to the previous mention: the words that modify this mention alone."""
        start = max([self.bounds(hit)[0], *(h.end for h in self.hits if h.end <= hit.start)])
        return self.text[start:hit.start]

    def tail(self, hit: _Hit) -> str:
        """The clause after ``hit``."""
        return self.text[hit.end:self.bounds(hit)[1]]


def _classify(sentence: _Sentence, hit: _Hit) -> int | None:
    """The value of one mention: CheXpert's order, uncertainty-before-negation cues first."""
    if _in_scope(sentence, hit, "negunc"):
        return UNCERTAIN
    if _in_scope(sentence, hit, "neg"):
        return NEGATIVE
    if _in_scope(sentence, hit, "unc") or _in_scope(sentence, hit, "alt"):
        return UNCERTAIN
    if hit.rule.qualifier is not None:
        clause = sentence.clause(hit)
        if not hit.rule.qualifier.search(clause):
            return UNCERTAIN if hit.rule.stable and _STABLE.search(clause) else None
    return UNCERTAIN if hit.rule.hedged else POSITIVE


def _in_scope(sentence: _Sentence, hit: _Hit, polarity: str) -> bool:
    return any(_reaches(sentence, cue, hit) for cue in sentence.cues if cue.rule.polarity == polarity)


def _reaches(sentence: _Sentence, cue: _Cue, hit: _Hit) -> bool:
    left, right = min(cue.end, hit.end), max(cue.start, hit.start)
    if any(left <= stop.start and stop.end <= right for stop in sentence.stops()):
        return False
    if cue.end <= hit.start and cue.rule.ahead != _NO_REACH:
        within = _words(sentence.text[cue.end:hit.start]) <= cue.rule.ahead
        return within and not _interrupted(sentence, cue, hit)
    if cue.start >= hit.end and cue.rule.behind != _NO_REACH:
        return _reaches_back(sentence, cue, hit)
    return False


def _interrupted(sentence: _Sentence, cue: _Cue, hit: _Hit) -> bool:
    """A cue of another polarity after a mention ends a forward scope: "No pneumothorax, possible effusion"."""
    for other in sentence.cues:
        if other.rule.polarity in ("neg", "unc", "negunc") and other.rule.polarity != cue.rule.polarity \
                and cue.end <= other.start and other.end <= hit.start \
                and any(cue.end <= h.start and h.end <= other.start for h in sentence.hits):
            return True
    return False


def _reaches_back(sentence: _Sentence, cue: _Cue, hit: _Hit) -> bool:
    """A post cue reaches its nearest mention, and a coordinated list before it when its verb is not singular."""
    spans = sorted({(h.start, h.end) for h in sentence.hits if h.start >= hit.end and h.end <= cue.start})
    last_end = spans[-1][1] if spans else hit.end
    if _words(sentence.text[last_end:cue.start]) > cue.rule.behind:
        return False
    if not spans:
        return True
    if cue.singular:
        return False
    previous = hit.end
    for start, end in spans:
        if start < previous:
            continue
        if not _COORDINATION.match(sentence.text[previous:start]):
            return False
        previous = end
    return True


# ---------------------------------------------------------------------------------------------- reports

_SECTION = re.compile(
    r"\b(findings|impression|conclusions?|opinion|recommendations?|indications?|history|clinical history"
    r"|comparisons?|technique|reason for (?:exam|examination|study)|examination|exam|procedure)\s*:",
    re.IGNORECASE,
)
_SKIPPED_SECTION = re.compile(r"indication|history|comparison|technique|reason|exam|procedure", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CLEAR_LUNGS = re.compile(r"\blungs?\b(?:\s+[\w-]+){0,4}?\s+clear\b|\bclear lungs\b")
_CLEAR_LUNG_CONCEPTS = ("consolidation", "atelectasis", "opacity", "edema", "pneumonia")
_RATIO = re.compile(r"\bcardiothoracic ratio\b[^.;\d]{0,30}?(\d*\.\d+|\d{2}(?:\.\d+)?\s*%)")
_SIDE = re.compile(r"\b(left|right|bilateral|bilaterally|both|bibasilar)\b")
_SIDE_WORDS = {word: ("left", "right") for word in ("bilateral", "bilaterally", "both", "bibasilar")}
_SIDE_AFTER = re.compile(r"^[\w\s.-]{0,40}?\b(?:(?:on|at|in|of|along|over) the (?:left|right)|bilaterally)\b")
_BESIDES = re.compile(r"\b(?:other|otherwise|additional|further|another|remaining)\b")


@dataclass(frozen=True)
class _Mention:
    concept: str
    value: int
    sides: frozenset[str] = frozenset()  # "left", "right": the sides named with the mention; empty when none is
    besides: bool = False  # "no other nodule", "lungs are otherwise clear": beyond the instances already described


def mention_values(text: str) -> dict[str, list[int]]:
    """The value of every mention, per concept, in report order, before aggregation (to inspect the labeler).

    Concepts are those of ``CONCEPTS``; a concept that is never mentioned is absent.
    """
    collected: dict[str, list[int]] = {}
    for mention in _mentions(text):
        collected.setdefault(mention.concept, []).append(mention.value)
    return collected


def _mentions(text: str) -> list[_Mention]:
    body = _report_body(text).lower()
    report_domain = report_anatomy(body) or "chest"
    return [mention for sentence in _SENTENCE_END.split(body)
            for mention in _sentence_mentions(sentence.strip(), report_domain)]


def _concept_values(text: str) -> dict[str, int]:
    return {concept: _strongest(values) for concept, values in mention_values(text).items()}


def _report_body(text: str) -> str:
    """The text outside INDICATION, HISTORY, COMPARISON, TECHNIQUE (and similar) sections."""
    parts = _SECTION.split(text)
    kept = [parts[0]]
    for header, content in zip(parts[1::2], parts[2::2], strict=True):
        if not _SKIPPED_SECTION.search(header):
            kept.append(content)
    return "\n".join(kept)


def _sentence_mentions(text: str, report_domain: str) -> list[_Mention]:
    sentence = _Sentence(text, _find_hits(text, report_anatomy(text) or report_domain), _find_cues(text))
    mentions = [_qualified(sentence, hit, value) for hit in sentence.hits
                if (value := _classify(sentence, hit)) is not None]
    mentions += [_Mention(concept, NEGATIVE, besides=bool(_BESIDES.search(match.group())))
                 for match in _CLEAR_LUNGS.finditer(text) for concept in _CLEAR_LUNG_CONCEPTS]
    mentions += [_Mention("cardiomegaly", _ratio_value(match.group(1))) for match in _RATIO.finditer(text)]
    return mentions


def _qualified(sentence: _Sentence, hit: _Hit, value: int) -> _Mention:
    """A mention with the sides named before it ("small left effusion") or right after it ("... on the right")."""
    lead, after = sentence.lead(hit), _SIDE_AFTER.match(sentence.tail(hit))
    sides = frozenset(side for word in _SIDE.findall(f"{lead} {after.group() if after else ''}")
                      for side in _SIDE_WORDS.get(word, (word,)))
    return _Mention(hit.rule.concept, value, sides, bool(_BESIDES.search(lead)))


def _ratio_value(number: str) -> int:
    ratio = float(number.rstrip("% ")) / 100 if number.endswith("%") else float(number)
    return POSITIVE if ratio > 0.5 else NEGATIVE


# ---------------------------------------------------------------------------------------------- consistency


def contradictions(text: str) -> list[str]:
    """The phantom labels (chest then brain) that the report both affirms and negates.

    A generated report must not state a finding and deny it ("There is no pneumothorax. IMPRESSION: Right
    pneumothorax."). Compared mention by mention, since aggregation lets the positive win and hides the
    negation. Not contradictions: uncertain mentions, a finding restated (findings and impression), a negation
    of further instances ("no other nodules", "the lungs are otherwise clear") and a negation of the other side
    only ("right pneumothorax; no left pneumothorax"). A side-less statement meets every side.
    """
    mentions = _mentions(text)
    return [label for label in PHANTOM_LABELS if _contradicted([m for m in mentions if m.concept == label])]


def _contradicted(mentions: list[_Mention]) -> bool:
    affirmed = [m for m in mentions if m.value == POSITIVE]
    negated = [m for m in mentions if m.value == NEGATIVE and not m.besides]
    return any(not (a.sides and n.sides) or bool(a.sides & n.sides) for a in affirmed for n in negated)


def foreign_findings(text: str, anatomy: str) -> list[str]:
    """The positive phantom labels of the other anatomy in a report of ``anatomy`` ("chest" or "brain").

    A brain report that states a pleural effusion, or a chest report that states white matter lesions, has
    drawn on the wrong half of the vocabulary. Uncertain mentions do not count; words shared by both anatomies
    ("mass", "volume loss") are read in their context, as everywhere in the labeler.
    """
    if anatomy not in ANATOMIES:
        raise InputError(f"anatomy must be one of {', '.join(ANATOMIES)}, not {anatomy!r}")
    labels = label_report(text)
    return [label for label in (BRAIN_LABELS if anatomy == "chest" else CHEST_LABELS) if labels[label] == POSITIVE]

"""Radiology-style reports written from a phantom case's findings.

Each report has two sections, ``FINDINGS:`` and ``IMPRESSION:``, on their own lines. Positive findings are
described with varied synonyms and realistically rounded measurements (millimetres for nodules, centimetres for
masses, a cardiothoracic ratio to two decimals); a random subset of the absent findings is stated as negations
("No pleural effusion or pneumothorax.", "The lungs are clear."); the sentences come in a random order. The
impression lists the positives, or states a normal study in one of several phrasings. Text models therefore
have to learn the findings, not one template. The same generator state always gives the same text.

Every phrase used here is recognised by ``medm2g_core.data.labeler``, so that the labels recovered from a
report equal ``findings.labels()``; the test suite checks it on thousands of reports.
"""

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from medm2g_core.errors import InputError
from medm2g_core.phantoms.findings import DEVICES, BrainFindings, ChestFindings, Lesion, Tumor

BRAIN_MODALITIES = ("MR", "CT")

_Sentence = tuple[str, str]  # (findings sentence, impression phrase)
_T = TypeVar("_T")


def chest_report(findings: ChestFindings, rng: np.random.Generator) -> str:
    """A chest radiograph report for ``findings``; deterministic given the state of ``rng``."""
    positives = _chest_positives(findings, rng)
    negatives = _sample_negatives(_chest_negatives(findings), rng)
    closings = _pleural_negatives(_absent(findings))[:3]
    impression = _impression(positives, _CHEST_NORMAL_IMPRESSIONS, closings, findings.device is not None, rng)
    return _assemble([sentence for sentence, _ in positives] + negatives, impression, rng)


def brain_report(findings: BrainFindings, rng: np.random.Generator, modality: str = "MR") -> str:
    """A brain MRI (``modality="MR"``) or CT (``"CT"``) report for ``findings``; deterministic given ``rng``."""
    if modality not in BRAIN_MODALITIES:
        raise InputError(f"brain report modality must be one of {', '.join(BRAIN_MODALITIES)}, not {modality!r}")
    positives = _brain_positives(findings, rng, modality)
    negatives = _sample_negatives(_brain_negatives(findings, modality), rng)
    normals = _BRAIN_NORMAL_IMPRESSIONS + (_MR_NORMAL_IMPRESSIONS if modality == "MR" else _CT_NORMAL_IMPRESSIONS)
    closings = [] if findings.tumor else ["No acute intracranial abnormality.", "No acute intracranial process."]
    impression = _impression(positives, normals, closings, False, rng)
    return _assemble([sentence for sentence, _ in positives] + negatives, impression, rng)


# ---------------------------------------------------------------------------------------------- assembly


def _assemble(sentences: list[str], impression: str, rng: np.random.Generator) -> str:
    order = rng.permutation(len(sentences))
    return "FINDINGS: " + " ".join(sentences[i] for i in order) + "\nIMPRESSION: " + impression


def _impression(
    positives: list[_Sentence], normals: Sequence[str], closings: Sequence[str], device: bool,
    rng: np.random.Generator,
) -> str:
    """Positives in random order, sometimes closed by a negative; a normal statement when only a device was found."""
    phrases = [phrase for _, phrase in positives if phrase]
    order = [phrases[i] for i in rng.permutation(len(phrases))]
    if len(positives) == int(device):
        order.append(_pick(rng, normals))
    elif closings and rng.random() < 0.3:
        order.append(_pick(rng, closings))
    return " ".join(order)


def _sample_negatives(groups: list[list[str]], rng: np.random.Generator) -> list[str]:
    """One phrasing from each group of true negative statements, keeping each group with probability 0.6."""
    chosen = [_pick(rng, group) for group in groups if group and rng.random() < 0.6]
    if not chosen:
        nonempty = [group for group in groups if group]
        chosen = [_pick(rng, _pick(rng, nonempty))]
    return chosen


def _pick(rng: np.random.Generator, options: Sequence[_T]) -> _T:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _an(next_word: str) -> str:
    """The indefinite article before ``next_word``, spoken numbers included ("an 8 mm", "an 11 mm")."""
    first = next_word.split()[0].split(".")[0]
    spoken_vowel = first[:1] in "aeiou8" or first in ("11", "18")
    return "an" if spoken_vowel else "a"


def _num(value: float) -> str:
    """A measurement to one decimal, without a trailing ".0" (4.5 -> "4.5", 4.0 -> "4")."""
    return f"{value:.1f}".removesuffix(".0")


def _maybe(rng: np.random.Generator, probability: float, text: str) -> str:
    return text if rng.random() < probability else ""


# ---------------------------------------------------------------------------------------------- chest


def _chest_positives(findings: ChestFindings, rng: np.random.Generator) -> list[_Sentence]:
    writers: list[tuple[bool, Callable[[], _Sentence]]] = [
        (findings.cardiothoracic_ratio > 0.5, lambda: _cardiomegaly(findings.cardiothoracic_ratio, rng)),
        (bool(findings.effusion), lambda: _effusion(findings.effusion, rng)),
        (bool(findings.nodules), lambda: _nodules(findings.nodules, rng)),
        (findings.mass is not None, lambda: _mass(findings.mass, rng)),
        (findings.consolidation is not None, lambda: _consolidation(findings.consolidation, rng)),
        (findings.pneumothorax is not None, lambda: _pneumothorax(*findings.pneumothorax, rng)),
        (findings.atelectasis is not None, lambda: _atelectasis(findings.atelectasis, rng)),
        (findings.device is not None, lambda: _device(findings.device, rng)),
    ]
    return [write() for present, write in writers if present]


def _severity(value: float, limits: tuple[float, float]) -> str:
    return "mild" if value < limits[0] else "moderate" if value < limits[1] else "marked"


def _adverb(severity: str) -> str:
    return {"mild": "mildly", "moderate": "moderately", "marked": "markedly"}[severity]


def _cardiomegaly(ratio: float, rng: np.random.Generator) -> _Sentence:
    sev = _severity(ratio, (0.58, 0.63))
    adv = _adverb(sev)
    sentence = _pick(rng, [
        f"The cardiac silhouette is {adv} enlarged", f"There is {sev} cardiomegaly", f"{_cap(sev)} cardiomegaly",
        "The heart is enlarged", f"The heart is {adv} enlarged", "Enlarged cardiac silhouette",
        f"Heart size is {adv} enlarged", f"{_cap(sev)} enlargement of the cardiac silhouette",
    ])
    ratio_text = _pick(rng, [
        "", "", f" (cardiothoracic ratio {ratio:.2f})", f", with a cardiothoracic ratio of approximately {ratio:.2f}",
        f"; the cardiothoracic ratio measures {ratio:.2f}",
    ])
    impression = _pick(rng, [
        "Cardiomegaly.", f"{_cap(sev)} cardiomegaly.", "Enlarged cardiac silhouette.",
        "Cardiomegaly without evidence of pulmonary edema.", f"{_cap(sev)} cardiomegaly, no pulmonary edema.",
    ])
    return sentence + ratio_text + ".", impression


def _effusion_size(fraction: float) -> str:
    return "small" if fraction < 0.22 else "small-to-moderate" if fraction < 0.28 else "moderate"


def _effusion(effusion: dict[str, float], rng: np.random.Generator) -> _Sentence:
    if len(effusion) == 2:
        return _bilateral_effusion(_effusion_size(effusion["left"]), _effusion_size(effusion["right"]), rng)
    side, fraction = next(iter(effusion.items()))
    size = _effusion_size(fraction)
    sentence = _pick(rng, [
        f"{_cap(size)} {side} pleural effusion.", f"There is {_an(size)} {size} {side}-sided pleural effusion.",
        f"{_cap(_an(size))} {size} {side} pleural effusion is present.",
        f"Blunting of the {side} costophrenic angle, consistent with {_an(size)} {size} pleural effusion.",
        f"{_cap(size)} {side}-sided effusion.", f"Blunting of the {side} costophrenic angle.",
        f"There is {_an(size)} {size} pleural effusion on the {side}.",
    ])
    impression = _pick(rng, [
        f"{_cap(size)} {side} pleural effusion.", f"{_cap(side)}-sided pleural effusion.",
        f"{_cap(size)} {side} effusion.",
    ])
    return sentence, impression


def _bilateral_effusion(left: str, right: str, rng: np.random.Generator) -> _Sentence:
    if left == right:
        sentence = _pick(rng, [
            f"{_cap(left)} bilateral pleural effusions.", f"There are {left} bilateral pleural effusions.",
            f"Bilateral {left} effusions with blunting of both costophrenic angles.",
        ])
    else:
        sentence = _pick(rng, [
            f"Bilateral pleural effusions, {left} on the left and {right} on the right.",
            f"There is {_an(left)} {left} left and {_an(right)} {right} right pleural effusion.",
        ])
    impression = _pick(rng, ["Bilateral pleural effusions.", "Bilateral effusions.", "Bilateral pleural fluid."])
    return sentence, impression


def _nodules(nodules: tuple[Lesion, ...], rng: np.random.Generator) -> _Sentence:
    if len(nodules) > 1:
        return _two_nodules(nodules[0], nodules[1], rng)
    lobe, mm = nodules[0].lobe, f"{round(nodules[0].size_mm)}"
    sentence = _pick(rng, [
        f"{_cap(_an(mm))} {mm} mm nodule in the {lobe} lobe.",
        f"There is {_an(mm)} {mm} mm nodular opacity in the {lobe} lobe.",
        f"{_cap(_an(mm))} {mm} mm nodule is seen in the {lobe} lobe.",
        f"{_cap(lobe)} lobe pulmonary nodule measuring {mm} mm.",
        f"A well-circumscribed nodule in the {lobe} lobe measures {mm} mm.",
        f"{_cap(_an(mm))} {mm} mm rounded nodular opacity projects over the {lobe} lobe.",
    ])
    impression = _pick(rng, [
        f"{_cap(lobe)} lobe pulmonary nodule; CT is recommended for further characterization.",
        f"{mm} mm {lobe} lobe nodule.", "Solitary pulmonary nodule.", f"{_cap(lobe)} lobe nodule.",
    ])
    return sentence, impression


def _two_nodules(first: Lesion, second: Lesion, rng: np.random.Generator) -> _Sentence:
    mm1, mm2 = round(first.size_mm), round(second.size_mm)
    if first.lobe == second.lobe:
        sentence = _pick(rng, [
            f"Two nodules in the {first.lobe} lobe, measuring {mm1} and {mm2} mm.",
            f"There are two {first.lobe} lobe nodules measuring {mm1} mm and {mm2} mm.",
        ])
    else:
        sentence = _pick(rng, [
            f"Two pulmonary nodules, measuring {mm1} mm in the {first.lobe} lobe and {mm2} mm in the "
            f"{second.lobe} lobe.",
            f"There are nodules in the {first.lobe} lobe ({mm1} mm) and the {second.lobe} lobe ({mm2} mm).",
            f"Nodular opacities in the {first.lobe} lobe and {second.lobe} lobe, measuring {mm1} and {mm2} mm.",
        ])
    impression = _pick(rng, [
        "Two pulmonary nodules; CT is recommended for further characterization.", "Pulmonary nodules.",
        "Multiple pulmonary nodules.",
    ])
    return sentence, impression


def _mass(mass: Lesion, rng: np.random.Generator) -> _Sentence:
    lobe, cm = mass.lobe, _num(mass.size_mm / 10)
    other = _num(mass.size_mm / 10 * rng.uniform(0.75, 0.95))
    sentence = _pick(rng, [
        f"There is {_an(cm)} {cm} cm mass in the {lobe} lobe.",
        f"{_cap(_an(cm))} {cm} cm mass is present in the {lobe} lobe.",
        f"A large {cm} cm opacity in the {lobe} lobe.",
        f"Large rounded opacity in the {lobe} lobe measuring approximately {cm} cm.",
        f"{_cap(lobe)} lobe mass measuring {cm} x {other} cm.",
    ])
    impression = _pick(rng, [
        f"{_cap(lobe)} lobe mass, concerning for malignancy.",
        f"{cm} cm {lobe} lobe mass; recommend CT of the chest for further evaluation.",
        f"{_cap(lobe)} lobe mass.", "Pulmonary mass.",
    ])
    return sentence, impression


def _consolidation(lobe: str, rng: np.random.Generator) -> _Sentence:
    sentence = _pick(rng, [
        f"Focal consolidation in the {lobe} lobe.", f"There is airspace opacity in the {lobe} lobe.",
        f"{_cap(lobe)} lobe airspace disease.", f"Patchy consolidation is seen in the {lobe} lobe.",
        f"Airspace opacification of the {lobe} lobe.", f"Dense consolidation within the {lobe} lobe.",
    ])
    impression = _pick(rng, [
        f"{_cap(lobe)} lobe consolidation.",
        f"{_cap(lobe)} lobe airspace disease, which may represent pneumonia in the appropriate clinical setting.",
        f"{_cap(lobe)} lobe consolidation, compatible with pneumonia.",
        f"{_cap(lobe)} lobe airspace opacity; infection is not excluded.",
    ])
    return sentence, impression


def _pneumothorax(side: str, fraction: float, rng: np.random.Generator) -> _Sentence:
    size = "small" if fraction < 0.18 else "moderate"
    cm = _num(round(fraction * 15 * 2) / 2)
    sentence = _pick(rng, [
        f"There is {_an(size)} {size} {side} pneumothorax.", f"{_cap(size)} {side} apical pneumothorax.",
        f"{_cap(size)} {side}-sided pneumothorax measuring approximately {cm} cm at the apex.",
        f"{_cap(_an(size))} {size} pneumothorax is present on the {side}.",
        f"{_cap(side)} pneumothorax, {size} in size.",
        f"{_cap(side)} apical pneumothorax with a {cm} cm pleural line separation.",
    ])
    impression = _pick(rng, [f"{_cap(size)} {side} pneumothorax.", f"{_cap(side)} pneumothorax."])
    return sentence, impression


def _atelectasis(lobe: str, rng: np.random.Generator) -> _Sentence:
    sentence = _pick(rng, [
        f"Subsegmental atelectasis in the {lobe} lobe.", f"There is {lobe} lobe atelectasis.",
        f"Linear atelectasis in the {lobe} lobe.", f"Plate-like atelectasis in the {lobe} lobe.",
        f"Volume loss in the {lobe} lobe, consistent with atelectasis.", f"Mild volume loss of the {lobe} lobe.",
    ])
    impression = _pick(rng, [
        f"{_cap(lobe)} lobe atelectasis.", f"{_cap(lobe)} lobe subsegmental atelectasis.",
        f"Atelectasis in the {lobe} lobe.",
    ])
    return sentence, impression


def _device(device: str, rng: np.random.Generator) -> _Sentence:
    if device not in DEVICES:
        raise InputError(f"unknown support device {device!r}; expected one of {', '.join(DEVICES)}")
    cm = _num(rng.integers(5, 14) / 2)
    sentences = {
        "endotracheal tube": [
            f"Endotracheal tube terminates {cm} cm above the carina.",
            f"The endotracheal tube tip is {cm} cm above the carina.",
            f"Endotracheal tube in satisfactory position, {cm} cm above the carina.",
        ],
        "central venous catheter": [
            "Right internal jugular central venous catheter with tip in the SVC.",
            "Right internal jugular central line terminates in the superior vena cava.",
            "Left subclavian central venous catheter with its tip at the cavoatrial junction.",
            "A right IJ central venous catheter tip projects over the mid SVC.",
        ],
        "pacemaker": [
            "Left chest wall pacemaker with lead in the right ventricle.",
            "Left-sided pacemaker with leads in the right atrium and right ventricle.",
            "A dual-chamber pacemaker is present, leads terminating in the right atrium and right ventricle.",
            "Right chest wall pacemaker with a single lead in the right ventricle.",
        ],
    }[device]
    impression = _pick(rng, [
        "", "Support devices as described.", "Lines and tubes in satisfactory position.",
        f"{_cap(device)} in appropriate position.",
    ])
    return _pick(rng, sentences), impression


def _absent(findings: ChestFindings) -> set[str]:
    return {name for name, value in findings.labels().items() if not value}


def _chest_negatives(findings: ChestFindings) -> list[list[str]]:
    """Groups of true negative statements; one phrasing per kept group goes into the report."""
    absent = _absent(findings)
    clear_lungs = {"consolidation", "atelectasis", "nodule", "mass", "pneumothorax"} <= absent
    return [
        _heart_negatives(findings.cardiothoracic_ratio) if "cardiomegaly" in absent else [],
        _pleural_negatives(absent),
        _lung_negatives(absent, clear_lungs),
        ["No pulmonary nodules or masses.", "No discrete nodule or mass."] if {"nodule", "mass"} <= absent else [],
        [
            "No acute osseous abnormality.", "The visualized osseous structures are unremarkable.",
            "No displaced rib fractures.", "The mediastinal contours are normal.",
        ],
    ]


def _heart_negatives(ratio: float) -> list[str]:
    return [
        "Heart size is normal.", "The cardiac silhouette is normal in size.", "Normal heart size.",
        "The heart is not enlarged.", "Cardiomediastinal silhouette is within normal limits.",
        f"Heart size is normal (cardiothoracic ratio {ratio:.2f}).", "Heart size is within normal limits.",
    ]


def _pleural_negatives(absent: set[str]) -> list[str]:
    effusion = [
        "No pleural effusion.", "There is no pleural effusion.", "The costophrenic angles are sharp.",
        "Pleural effusion is not seen.", "No pleural effusions.",
    ]
    pneumothorax = ["No pneumothorax.", "There is no pneumothorax.", "Pneumothorax is not identified."]
    both = [
        "No pleural effusion or pneumothorax.", "No pneumothorax or pleural effusion.",
        "There is no pleural effusion or pneumothorax.", "No pleural effusion, pneumothorax, or focal consolidation.",
    ]
    if {"pleural_effusion", "pneumothorax"} <= absent:
        return both[:3] + both[3:] * ("consolidation" in absent) + effusion + pneumothorax
    return effusion if "pleural_effusion" in absent else pneumothorax if "pneumothorax" in absent else []


def _lung_negatives(absent: set[str], clear_lungs: bool) -> list[str]:
    clear = ["The lungs are clear.", "Lungs are clear bilaterally.", "The lungs are well expanded and clear."]
    focal = ["No focal consolidation.", "No focal airspace consolidation.", "There is no focal airspace disease."]
    collapse = ["No focal consolidation or atelectasis."] if "atelectasis" in absent else []
    return (clear if clear_lungs else []) + (focal + collapse if "consolidation" in absent else [])


_CHEST_NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.", "Normal chest radiograph.",
    "No radiographic evidence of acute cardiopulmonary disease.", "Unremarkable chest radiograph.",
    "No acute intrathoracic process.",
)


# ---------------------------------------------------------------------------------------------- brain


def _brain_positives(findings: BrainFindings, rng: np.random.Generator, modality: str) -> list[_Sentence]:
    labels = findings.labels()
    positives = []
    if labels["tumor"]:
        positives.append(_tumor(findings.tumor, rng, modality))
    if labels["wm_lesions"]:
        positives.append(_wm_lesions(findings.wm_lesions, rng, modality))
    if labels["atrophy"]:
        positives.append(_atrophy(findings.atrophy, rng))
    return positives


def _dimensions(diameter_mm: float, rng: np.random.Generator) -> str:
    other = diameter_mm * rng.uniform(0.8, 0.95)
    if rng.random() < 0.5:
        return f"{round(diameter_mm)} mm" if rng.random() < 0.5 else f"{round(diameter_mm)} x {round(other)} mm"
    return f"{_num(diameter_mm / 10)} cm" if rng.random() < 0.5 else f"{_num(diameter_mm / 10)} x {_num(other / 10)} cm"


_ENHANCEMENT = {
    "heterogeneously enhancing": "heterogeneous", "rim-enhancing": "rim", "peripherally enhancing": "peripheral",
    "ring-enhancing": "ring",
}


def _tumor(tumor: Tumor, rng: np.random.Generator, modality: str) -> _Sentence:
    """Three sentences kept together: the mass itself, its oedema, its mass effect."""
    where = f"{tumor.hemisphere} {tumor.lobe}"
    dims = _dimensions(2 * tumor.radius_mm, rng)
    necrosis = _pick(rng, ["a large central necrotic core", "extensive central necrosis"]
                     if tumor.necrosis_fraction >= 0.4 else ["a small central area of necrosis", "central necrosis"])
    enhancing = _pick(rng, list(_ENHANCEMENT))
    mass = _pick(rng, [
        f"There is {_an(dims)} {dims} {enhancing} mass in the {where} lobe with {necrosis}.",
        f"{_cap(_an(enhancing))} {enhancing} intra-axial mass centered in the {where} lobe measures {dims}, "
        f"with {necrosis}.",
        f"{_cap(where)} lobe {enhancing} lesion measuring {dims}, with {necrosis}.",
        f"An intra-axial tumor in the {where} lobe measures {dims} and shows {_ENHANCEMENT[enhancing]} "
        f"enhancement and {necrosis}.",
    ] + ([f"A hypodense mass in the {where} lobe measures {dims}, with {necrosis} and peripheral enhancement "
          "on post-contrast images."] if modality == "CT" else []))
    impression = _pick(rng, [
        f"{_cap(where)} lobe {enhancing} mass with necrosis and surrounding vasogenic edema, most consistent with "
        "high-grade glioma.",
        f"{dims} {where} lobe mass with mass effect, compatible with a primary glial neoplasm.",
        f"Enhancing {where} lobe tumor. Differential includes high-grade glioma and metastasis.",
        f"{_cap(where)} lobe mass, likely glioblastoma.",
    ])
    return " ".join([mass, _edema(tumor, rng, modality), _mass_effect(tumor, rng)]), impression


def _edema(tumor: Tumor, rng: np.random.Generator, modality: str) -> str:
    mm = round(tumor.edema_mm)
    signal = "T2/FLAIR hyperintense " if modality == "MR" else "hypodense "
    return _pick(rng, [
        f"Surrounding vasogenic edema extends up to {mm} mm from the lesion margin.",
        f"There is {mm} mm of surrounding vasogenic oedema.",
        f"Surrounding {signal}vasogenic edema measures up to {mm} mm.",
        f"The mass is surrounded by {signal}perilesional oedema extending {mm} mm.",
    ])


def _mass_effect(tumor: Tumor, rng: np.random.Generator) -> str:
    burden = tumor.radius_mm + tumor.edema_mm
    if burden < 25:
        return _pick(rng, ["Mild local mass effect with effacement of the adjacent sulci.",
                           "There is mild local mass effect without midline shift."])
    shift = round((burden - 25) / 3) + 1
    return _pick(rng, [
        f"There is mass effect on the {tumor.hemisphere} lateral ventricle with {shift} mm of midline shift.",
        f"Mass effect with {shift} mm of midline shift and partial effacement of the {tumor.hemisphere} "
        "lateral ventricle.",
    ])


_COUNT_WORDS = ("three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen",
                "fourteen")


def _wm_lesions(count: int, rng: np.random.Generator, modality: str) -> _Sentence:
    number = _COUNT_WORDS[count - 3] if 3 <= count <= 14 and rng.random() < 0.5 else str(count)
    tail = _maybe(rng, 0.3, ", nonspecific but most often related to chronic small vessel ischemic disease")
    if modality == "CT":
        sentence = _pick(rng, [
            f"There are {number} scattered periventricular white matter hypodensities{tail}.",
            f"Periventricular white matter hypodensities (approximately {count}){tail}.",
        ])
        impression = _pick(rng, ["Chronic microvascular ischemic changes.", "Periventricular white matter disease."])
        return sentence, impression
    sentence = _pick(rng, [
        f"There are {number} punctate FLAIR hyperintense foci in the periventricular white matter{tail}.",
        f"{_cap(number)} scattered periventricular white matter hyperintensities are present{tail}.",
        f"Approximately {count} T2/FLAIR hyperintense foci in the periventricular and deep white matter{tail}.",
        f"Periventricular white matter hyperintensities, {count} in number{tail}.",
        f"Multiple ({count}) FLAIR hyperintense foci in the periventricular white matter{tail}.",
    ])
    impression = _pick(rng, [
        "Periventricular white matter hyperintensities, likely chronic small vessel ischemic disease.",
        f"{_cap(number)} nonspecific white matter lesions.", "White matter hyperintensities.",
    ])
    return sentence, impression


def _atrophy(amount: float, rng: np.random.Generator) -> _Sentence:
    sev = _severity(amount, (0.55, 0.75))
    sentence = _pick(rng, [
        f"There is {sev} prominence of the sulci and ventricles.",
        f"{_cap(sev)} prominence of sulci and ventricles, consistent with generalized volume loss.",
        f"{_cap(sev)} generalized cerebral volume loss.",
        f"The ventricles and sulci are {_adverb(sev)} prominent, in keeping with parenchymal volume loss.",
        f"{_cap(sev)} diffuse cerebral atrophy.",
        "Ex vacuo enlargement of the ventricles with widening of the sulci.",
    ])
    impression = _pick(rng, [
        f"{_cap(sev)} generalized cerebral atrophy.", f"{_cap(sev)} parenchymal volume loss.",
        f"{_cap(sev)} global volume loss.", f"{_cap(sev)} cerebral atrophy.",
    ])
    return sentence, impression


def _brain_negatives(findings: BrainFindings, modality: str) -> list[list[str]]:
    labels = findings.labels()
    mri = modality == "MR"
    tumor = [
        "No intracranial mass, hemorrhage, or midline shift.", "No intracranial mass lesion.",
        "There is no intracranial mass or mass effect.",
    ] + (["No intracranial mass or abnormal enhancement."] if mri else [])
    white_matter = ([
        "No white matter signal abnormality.", "No periventricular white matter hyperintensities.",
    ] if mri else ["No white matter hypodensity.", "No periventricular white matter hypodensities."])
    atrophy = [
        "Ventricles are normal in size.", "The ventricles and sulci are normal in size and configuration.",
        "Ventricles and sulci are appropriate for age.", "No cerebral atrophy.", "No parenchymal volume loss.",
    ]
    generic = [
        "No acute intracranial hemorrhage.", "No extra-axial fluid collection.",
        "Gray-white matter differentiation is preserved.",
        "The visualized paranasal sinuses and mastoid air cells are clear.",
    ] + (["No restricted diffusion."] if mri else [])
    return [
        [] if labels["tumor"] else tumor,
        [] if labels["wm_lesions"] else white_matter,
        [] if labels["atrophy"] or labels["tumor"] else atrophy,
        generic,
    ]


_BRAIN_NORMAL_IMPRESSIONS = ("No acute intracranial abnormality.", "No acute intracranial process.", "Normal study.")
_MR_NORMAL_IMPRESSIONS = ("Normal MRI of the brain.", "Unremarkable MRI of the brain.")
_CT_NORMAL_IMPRESSIONS = ("Normal noncontrast CT of the head.", "Unremarkable CT of the head.")

"""Self-consistency of reports: a finding affirmed and negated, and positive findings of the other anatomy."""

import numpy as np
import pytest

from medm2g_core.data.labeler import contradictions, foreign_findings
from medm2g_core.errors import InputError
from medm2g_core.phantoms.findings import BrainFindings, ChestFindings
from medm2g_core.phantoms.reports import brain_report, chest_report

PHANTOM_REPORTS = 300  # per anatomy


@pytest.mark.parametrize(("report", "expected"), [
    ("FINDINGS: There is no pneumothorax. IMPRESSION: Right pneumothorax.", ["pneumothorax"]),
    ("FINDINGS: Small left pleural effusion. IMPRESSION: No pleural effusion.", ["pleural_effusion"]),
    ("FINDINGS: Right lower lobe consolidation. The lungs are clear.", ["consolidation"]),
    ("FINDINGS: Heart size is normal (cardiothoracic ratio 0.62).", ["cardiomegaly"]),
    ("FINDINGS: Bilateral pleural effusions. No right pleural effusion.", ["pleural_effusion"]),
    ("FINDINGS: Enlarged heart. No pneumothorax or pleural effusion. IMPRESSION: Cardiomegaly. Left pneumothorax. "
     "No cardiomegaly.", ["cardiomegaly", "pneumothorax"]),
    ("FINDINGS: No intracranial mass lesion. IMPRESSION: Left frontal lobe mass, likely glioblastoma.", ["tumor"]),
    ("FINDINGS: Mild diffuse cerebral atrophy. IMPRESSION: No cerebral atrophy.", ["atrophy"]),
    ("FINDINGS: No white matter signal abnormality. Periventricular white matter hyperintensities, 5 in number.",
     ["wm_lesions"]),
])
def test_a_finding_affirmed_and_negated_is_a_contradiction(report, expected):
    assert contradictions(report) == expected


@pytest.mark.parametrize("report", [
    "FINDINGS: Small right pneumothorax. No pleural effusion. IMPRESSION: Right pneumothorax.",  # restated
    "FINDINGS: No pleural effusion. Possible small left effusion.",  # an uncertain mention
    "FINDINGS: Blunting of the left costophrenic angle. No pneumothorax. IMPRESSION: No pleural effusion.",
    "FINDINGS: Pneumothorax cannot be excluded. IMPRESSION: No pneumothorax.",
    "FINDINGS: Small right pneumothorax. No left pneumothorax.",  # the other side only
    "FINDINGS: Moderate pneumothorax on the left. IMPRESSION: No right pneumothorax.",
    "FINDINGS: A 6 mm nodule in the right upper lobe. No other pulmonary nodules.",  # further instances only
    "FINDINGS: Right lower lobe consolidation. The lungs are otherwise clear.",
    "FINDINGS: The heart is not enlarged. No acute cardiopulmonary process.",
    "FINDINGS: Mild generalized cerebral volume loss. No intracranial mass lesion. IMPRESSION: Mild cerebral "
    "atrophy.",
    "INDICATION: Pneumothorax? FINDINGS: No pneumothorax.",  # the question is not read
])
def test_consistent_reports_have_no_contradiction(report):
    assert contradictions(report) == []


@pytest.mark.parametrize(("report", "anatomy", "expected"), [
    ("FINDINGS: Mild cerebral atrophy. Small left pleural effusion. IMPRESSION: Atrophy.", "brain",
     ["pleural_effusion"]),
    ("FINDINGS: Enlarged cardiac silhouette. A 3 cm mass in the right upper lobe. IMPRESSION: Pulmonary mass.",
     "brain", ["cardiomegaly", "mass"]),
    ("FINDINGS: Right pneumothorax. Periventricular white matter hyperintensities, 4 in number.", "chest",
     ["wm_lesions"]),
    ("FINDINGS: There is a 3 cm enhancing mass in the left frontal lobe. IMPRESSION: Left frontal lobe mass.",
     "chest", ["tumor"]),
])
def test_positive_findings_of_the_other_anatomy_are_foreign(report, anatomy, expected):
    assert foreign_findings(report, anatomy) == expected


@pytest.mark.parametrize(("report", "anatomy"), [
    ("FINDINGS: There is a 3 cm enhancing mass in the left frontal lobe. No pleural effusion.", "brain"),  # negated
    ("FINDINGS: Mild atrophy. A pleural effusion cannot be excluded.", "brain"),  # uncertain
    ("FINDINGS: A 3 cm mass in the right upper lobe. No intracranial mass.", "chest"),  # "mass" read in context
    ("FINDINGS: Small left pleural effusion. Left lower lobe atelectasis.", "chest"),
    ("FINDINGS: Moderate generalized cerebral volume loss.", "brain"),
])
def test_own_findings_and_negated_foreign_ones_are_not_foreign(report, anatomy):
    assert foreign_findings(report, anatomy) == []


def test_an_unknown_anatomy_is_refused():
    with pytest.raises(InputError, match="anatomy must be one of brain, chest, not 'pelvis'"):
        foreign_findings("FINDINGS: No pleural effusion.", "pelvis")


def test_phantom_reports_are_consistent_and_stay_in_their_anatomy():
    rng = np.random.default_rng(14)
    for number in range(PHANTOM_REPORTS):
        chest = chest_report(ChestFindings.sample(rng), rng)
        brain = brain_report(BrainFindings.sample(rng), rng, "MR" if number % 2 else "CT")
        assert contradictions(chest) == [] and foreign_findings(chest, "chest") == [], chest
        assert contradictions(brain) == [] and foreign_findings(brain, "brain") == [], brain

"""The project's shared words: one definition of each name every layer speaks, imported from here and nowhere else.

Pure constants (no imports beyond the standard library), so the command line can build its options and help
without importing torch, and a spelling defined here cannot drift between the modules that use it.
"""

# Imaging modalities as files store them (NIfTI descriptions, DICOM Modality after mapping), and MRI contrasts.
FILE_MODALITIES = ("CT", "MR", "XRAY", "OT")
MRI_CONTRASTS = ("T1", "T1ce", "T2", "FLAIR", "PD")

# The model's modalities: a latent diffusion model each (paper 3.1).
IMAGE_MODALITIES = ("xray", "ct", "mri")
MODALITIES = ("text", *IMAGE_MODALITIES)
MODALITY_OF_FILE = {"CT": "ct", "MR": "mri", "XRAY": "xray"}  # stored modality -> model modality
FILE_OF_MODALITY = {model: stored for stored, model in MODALITY_OF_FILE.items()}
TRANSLATE_TARGETS = IMAGE_MODALITIES

# Image keys of manifests and the model-ready cache: ``mr_<contrast>`` per MRI contrast, ``mr`` when unknown.
MRI_KEYS = tuple(f"mr_{c.lower()}" for c in MRI_CONTRASTS)
IMAGE_KEYS = ("xray", "ct", "mr", *MRI_KEYS)
CONTRAST_OF_KEY = dict(zip(MRI_KEYS, MRI_CONTRASTS, strict=True))
MODALITY_KEYS = {"xray": ("xray",), "ct": ("ct",), "mri": ("mr", *MRI_KEYS)}  # every key of a model modality
SPLITS = ("train", "val", "test")

# Paired data and the cross-guided rounds that train on it (paper 3.4-3.5; "spatial" and "report" are ours).
PAIR_KINDS = ("text-xray", "text-ct", "text-mri", "ct-mri")
CROSS_ROUNDS = ("text-xray", "text-ct", "ct-mri")

# What ``train vae`` and ``train ldm`` train: one autoencoder per modality ("image": one for every imaging
# modality), one latent diffusion model per modality.
VAE_MODALITIES = ("image", *IMAGE_MODALITIES, "text")
LDM_MODALITIES = (*IMAGE_MODALITIES, "text")
SPATIAL_ROUND = "spatial"
REPORT_ROUND = "report"  # guided reports and films (our extension, training/report_stage.py)

# Finding labels stored with every phantom case (and read back from reports by the labeler), per anatomy.
CHEST_LABELS = (
    "cardiomegaly", "pleural_effusion", "nodule", "mass", "consolidation", "pneumothorax", "atelectasis",
    "support_device",
)
BRAIN_LABELS = ("tumor", "wm_lesions", "atrophy")

# Phantom world anatomies, and the seed stride that gives case i of a world its own random stream.
ANATOMIES = ("brain", "chest")
SEED_STRIDE = 100_003
# The noise of a volume's slices: one draw for all of them (consistent across slices; the default, chosen by
# benchmarks/slice_consistency.py) or a draw of its own for each (seed, slice index).
SLICE_NOISE = ("shared", "independent")
# The model component that holds the training distribution of each image modality (the out-of-distribution check).
OOD_REFERENCE = "ood_reference"

# Radiograph geometry: the detector a chest film and a skull film are drawn on (millimetres a side).
DETECTOR_SIZE_MM = 430.0
SKULL_DETECTOR_MM = 240.0

# Sampling and evaluation names the command line offers.
SCHEDULER_NAMES = ("ddim", "ddpm", "dpm", "euler")
EVAL_TASKS = ("mri-to-ct", "mri-synthesis", "report", "text-to-image", "xray-generation")

# File names inside a model folder and a prepared cache.
MODEL_INDEX = "model_index.json"
CACHE_INDEX = "cache.json"

# Classifier-free guidance: the paper's scale, and the scale of the report round's guided copies (X-ray -> report,
# report -> X-ray, report -> CT), chosen from benchmarks/report_round.py (BENCHMARKS.md). The CLI shows both.
PAPER_GUIDANCE = 2.0
REPORT_GUIDANCE = 7.0
# DDIM eta: the paper's 1.0, except the spatial path's MRI targets, which sample deterministically (eta 0): over 3 seeds
# x 2 test cases T2 + FLAIR -> T1 13.81 dB at eta 0 against 13.64 at 1, CT -> T2 9.35 against 8.99; MRI -> CT is better
# at 1 (22.37 against 21.83) and keeps it (BENCHMARKS.md, "Guide effect ... --flows volume"). A spatial path trained
# with zero terminal SNR (``scheduler_spatial``) samples every target at the paper's eta: its MRI copy is as good at 1
# as at 0 (T2 + FLAIR -> T1 18.82 against 18.74 dB, CT -> T2 11.89 against 12.10; 2 cases x 3 seeds).
PAPER_ETA = 1.0
SPATIAL_MRI_ETA = 0.0
SPATIAL_SCHEDULER = "scheduler_spatial"  # the spatial path's own noise schedule, when it has one

# CT volume -> X-ray: the share of the denoising schedule the X-ray denoiser redraws the CT's projection (DRR)
# over; chosen from benchmarks/ct_to_xray.py (BENCHMARKS.md). A default the CLI shows, hence defined here.
DRR_STRENGTH = 0.3

# Report: new draws for a report that contradicts itself or names the other anatomy's findings
# (sampling/report.py); a default the CLI shows, hence defined here.
REPORT_REDRAWS = 8

"""The tissue atlas of the phantom head, derived once from the MNI152 2009 template that nilearn bundles.

Source: the symmetric ICBM152 2009a T1 template and its grey/white-matter probability maps shipped in
nilearn's wheel (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``,
197x233x189, 1 mm, uint8). Licence notice: ``data/MNI152-LICENSE.txt``. Regenerate the committed file with
``python -m medm2g_core.phantoms.brain_atlas`` (needs nilearn and scipy).

Stored in ``data/brain_atlas.npz`` (``np.savez_compressed``; uint8 maps on a 1.5 mm grid whose axes run
along +x, +y, +z of MNI RAS+ mm, as in the template):

- ``gm``, ``wm``: grey/white-matter fractions in 63 steps (0..63 for 0..1; finer steps would hide under
  the noise and double the file), zero outside the brain mask; inside the mask the rest (1 - gm - wm) is
  fluid. Keeping fractions (not labels) keeps partial volume: the images of a case are weighted sums of
  pure-tissue signals, so nothing looks blocky.
- ``shell_depth``: signed distance (mm) outside the intracranial envelope (the brain mask closed over
  its sulci and smoothed), negative inside; steps of 0.25 mm from -8 mm. The template is skull-stripped,
  so the layers outside the brain (subarachnoid CSF, dura, inner table, diploe, outer table,
  galea/temporalis, subcutaneous fat, skin) are shells at depths given by :func:`shell_boundaries`, whose
  thickness varies over the head (thin temporal squama under the temporalis, thick occipital bone) and
  per case. This smooth field is stored on a 3 mm grid of its own (``shell_affine``), where trilinear
  interpolation is exact to a fraction of a millimetre.
- ``ventricle_depth``: signed distance (mm) from the lateral and third ventricles, steps of 0.125 mm from
  -12 mm. Lateral ventricles: fluid-rich (1 - gm - wm > 0.5), dark (T1 < 100 of 255) voxels deeper than
  6 mm in the brain, the two connected components nearest (+-14, -14, 15) mm, grown 3 mm into partial
  volume; third ventricle: the same dark fluid in a midline box under the fornix.
- ``labels``: hard labels (:data:`ATLAS_LABELS`) with the mean shell thicknesses, for inspection.
- ``choroid_mm``: centres of the choroid plexus glomus (the atria of the lateral ventricles).

Why 1.5 mm: the default case grid is 2 mm, which the 1.5 mm atlas samples without aliasing; 1 mm maps of
four fields would be several MB, 2 mm ones would lose the cortical ribbon on a 1 mm case grid.
The bottom of the template (z = -72 mm, through the medulla) is the bottom of the head: below it the
atlas repeats its last slice, so a whole-head case ends in a short neck-like stump.
"""

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from medm2g_core.errors import Medm2gError, MissingDependencyError

ATLAS_PATH = Path(__file__).resolve().parent / "data" / "brain_atlas.npz"
ATLAS_SPACING_MM = 1.5
SHELL_SPACING_MM = 3.0
FRACTION_CODE = (0.0, 1.0 / 63)  # (offset, step) of the uint8 gm/wm maps
ATLAS_BOX_MM = ((-96.0, 96.0), (-132.0, 96.0), (-72.0, 108.0))  # x, y, z ranges of the 1.5 mm maps (MNI)
SHELL_BOX_MM = ((-120.0, 120.0), (-159.0, 123.0), (-72.0, 138.0))  # the shell map reaches past any head
ATLAS_LABELS = (
    "background", "scalp", "fat", "skull_cortical", "skull_marrow", "dura", "csf", "ventricle", "gm", "wm",
)
LAYERS = ("csf", "dura", "skull_cortical", "skull_marrow", "skull_cortical", "scalp", "fat", "scalp")  # outwards
HEAD_CENTRE_MM = (0.0, -18.0, 10.0)  # MNI; centre of the thickness model and of per-case scaling
SHELL_DEPTH_CODE = (-8.0, 0.25)  # (offset mm, step mm) of the uint8 shell_depth map
VENTRICLE_DEPTH_CODE = (-12.0, 0.125)
TEMPLATE_FILES = {
    name: f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in ("t1", "gm", "wm")
}


@dataclass(frozen=True)
class ShellThicknessMm:
    """Mean adult thickness (mm) of the layers between the brain and the air.

    Skull: about 6-7 mm over the vertex, thicker frontally and occipitally, 3-4 mm at the temporal squama;
    inner table about 1.5 mm and outer table about 2 mm around the diploe. Scalp: skin about 2 mm,
    subcutaneous fat a few mm, galea thin except where the temporalis muscle lies on the temporal bone.
    """

    csf: float = 1.5
    csf_frontal: float = 1.0  # extra
    dura: float = 0.8
    skull: float = 6.5
    skull_frontal: float = 1.5  # extra
    skull_occipital: float = 2.5  # extra
    skull_temporal: float = -3.5  # less
    inner_table: float = 1.5
    outer_table: float = 2.0
    galea: float = 1.5
    temporalis: float = 7.0  # extra muscle over the temporal squama
    fat: float = 3.0
    skin: float = 2.0


@dataclass(frozen=True)
class ShellScale:
    """Per-case factors on :class:`ShellThicknessMm` (all 1 for the atlas itself)."""

    csf: float = 1.0
    csf_extra_mm: float = 0.0  # atrophy widens the subarachnoid space
    skull: float = 1.0
    muscle: float = 1.0
    fat: float = 1.0
    skull_ripple: tuple[tuple[float, float, float, float, float], ...] = ()  # (kx, ky, kz, phase, amplitude)


THICKNESS = ShellThicknessMm()


@dataclass(frozen=True)
class BrainAtlas:
    """The atlas maps (uint8 codes) on a grid with a voxel -> MNI mm ``affine``."""

    gm: np.ndarray
    wm: np.ndarray
    ventricle_depth: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    shell_depth: np.ndarray  # on its own coarser grid
    shell_affine: np.ndarray
    choroid_mm: np.ndarray  # (2, 3)

    def to_index(self, points_mm: np.ndarray, shell: bool = False) -> np.ndarray:
        """Continuous voxel indices (3, N) of MNI points (3, N) in the 1.5 mm maps (or the shell map)."""
        inv = np.linalg.inv(self.shell_affine if shell else self.affine)
        return inv[:3, :3] @ points_mm + inv[:3, 3:4]


def box_fraction(signed_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Fraction of a voxel of ``width_mm`` lying on the positive side of a plane at ``signed_mm`` from its centre."""
    return np.clip(signed_mm / width_mm + 0.5, 0.0, 1.0)


def _smooth_step(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def shell_boundaries(points_mm: np.ndarray, scale: ShellScale = ShellScale()) -> np.ndarray:
    """Outer depth (mm from the intracranial envelope) of each layer in :data:`LAYERS`, shape (8, N).

    Thickness depends on the direction from :data:`HEAD_CENTRE_MM` (frontal, occipital, temporal regions)
    and on the per-case ``scale``.
    """
    points_mm = np.asarray(points_mm, dtype=np.float32)
    rel = points_mm - np.asarray(HEAD_CENTRE_MM, dtype=np.float32)[:, None]
    unit = rel / np.maximum(np.linalg.norm(rel, axis=0), 1e-3)
    frontal = _smooth_step((unit[1] - 0.5) / 0.3)
    occipital = _smooth_step((-unit[1] - 0.55) / 0.3)
    temporal = _smooth_step((np.abs(unit[0]) - 0.6) / 0.25) * _smooth_step((45.0 - points_mm[2]) / 30.0)
    t = THICKNESS
    skull = t.skull + t.skull_frontal * frontal + t.skull_occipital * occipital + t.skull_temporal * temporal
    ripple = sum(
        (amp * np.cos(np.pi * (kx * unit[0] + ky * unit[1] + kz * unit[2]) + phase)
         for kx, ky, kz, phase, amp in scale.skull_ripple),
        np.zeros_like(skull),
    )
    skull = np.maximum(skull * scale.skull * (1.0 + ripple), 2.0)
    tables = t.inner_table + t.outer_table
    table_share = np.minimum(skull / tables, 1.0)
    thickness = (
        (t.csf + t.csf_frontal * frontal) * scale.csf + scale.csf_extra_mm,
        t.dura,
        t.inner_table * table_share,
        np.maximum(skull - tables, 0.0),
        t.outer_table * table_share,
        (t.galea + t.temporalis * temporal) * scale.muscle,
        t.fat * scale.fat,
        t.skin,
    )
    bounds = np.empty((len(thickness), points_mm.shape[1]), dtype=np.float32)
    outer = np.zeros(points_mm.shape[1], dtype=np.float32)
    for row, layer in zip(bounds, thickness, strict=True):
        outer += layer
        row[:] = outer
    return bounds


def layer_fractions(depth_mm: np.ndarray, bounds: np.ndarray, width_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(intracranial fraction (N,), fractions of each layer (L, N)) of voxels at ``depth_mm``; air is the rest."""
    outside = box_fraction(depth_mm[None] - np.concatenate([np.zeros_like(bounds[:1]), bounds]), width_mm)
    return 1.0 - outside[0], outside[:-1] - outside[1:]


def decode(code: np.ndarray, offset_step: tuple[float, float]) -> np.ndarray:
    """Physical value of a uint8-coded map: offset + step * code."""
    return offset_step[0] + offset_step[1] * np.asarray(code, dtype=np.float32)


def _encode(values: np.ndarray, offset_step: tuple[float, float]) -> np.ndarray:
    return np.clip(np.rint((values - offset_step[0]) / offset_step[1]), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def load_atlas(path: Path = ATLAS_PATH) -> BrainAtlas:
    """The committed atlas (cached; the arrays are read-only)."""
    if not Path(path).is_file():
        raise Medm2gError(f"brain atlas missing at {path}; regenerate it: python -m medm2g_core.phantoms.brain_atlas")
    with np.load(path, allow_pickle=False) as npz:
        names = tuple(str(n) for n in npz["label_names"])
        if names != ATLAS_LABELS:
            raise Medm2gError(f"brain atlas at {path} has labels {names}, expected {ATLAS_LABELS}")
        arrays = {key: npz[key] for key in ("gm", "wm", "shell_depth", "ventricle_depth", "labels")}
        geometry = {key: npz[key].astype(np.float64) for key in ("affine", "shell_affine", "choroid_mm")}
    for array in arrays.values():
        array.flags.writeable = False
    return BrainAtlas(**arrays, **geometry)


def _template_dir() -> Path:
    try:
        import nilearn.datasets
    except ImportError as err:
        raise MissingDependencyError("nilearn (source of the MNI152 template)", "pip install nilearn") from err
    return Path(str(resources.files(nilearn.datasets) / "data"))


def _load_template() -> tuple[dict[str, np.ndarray], np.ndarray]:
    import nibabel as nib

    folder = _template_dir()
    images = {name: nib.load(folder / filename) for name, filename in TEMPLATE_FILES.items()}
    arrays = {name: np.asarray(image.dataobj, dtype=np.float32) for name, image in images.items()}
    return arrays, images["t1"].affine


def _world_grid(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape(3, *shape).astype(np.float32)


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    outside, inside = ndimage.distance_transform_edt(~mask), ndimage.distance_transform_edt(mask)
    return np.where(mask, 0.5 - inside, outside - 0.5).astype(np.float32)  # the surface lies between voxel centres


def _envelope(brain: np.ndarray) -> np.ndarray:
    """The brain mask closed over its sulci (5 mm) and smoothed: the inner surface of the subarachnoid space."""
    from scipy import ndimage

    closed = ndimage.distance_transform_edt(ndimage.distance_transform_edt(~brain) <= 5.0) > 5.0
    return (ndimage.gaussian_filter(closed.astype(np.float32), 1.5) > 0.5) | brain


def _ventricles(t1: np.ndarray, fluid: np.ndarray, brain: np.ndarray, world: np.ndarray) -> np.ndarray:
    """Lateral ventricles (dark, fluid-rich central components) and the third ventricle."""
    from scipy import ndimage

    dark_fluid = (fluid > 0.5) & (t1 < 100) & brain
    deep = dark_fluid & (ndimage.distance_transform_edt(brain) > 6.0)
    components, count = ndimage.label(deep)
    index = np.arange(1, count + 1)
    sizes = ndimage.sum(deep, components, index)
    centres = np.array(ndimage.center_of_mass(deep, components, index))
    centres_mm = np.array([world[(slice(None), *np.round(c).astype(int))] for c in centres])
    near = np.linalg.norm(np.c_[np.abs(centres_mm[:, 0]) - 14, centres_mm[:, 1] + 14, centres_mm[:, 2] - 15], axis=1)
    lateral = np.isin(components, index[(sizes > 1000) & (near < 20)])
    if lateral.sum() < 5000:
        raise RuntimeError("lateral ventricles not found in the template; has the template changed?")
    lateral = ndimage.binary_dilation(lateral, iterations=3, mask=(fluid > 0.3) & (t1 < 140) & brain)
    x, y, z = world
    third = dark_fluid & (np.abs(x) <= 3) & (y >= -24) & (y <= 0) & (z >= -8) & (z <= 12)
    return lateral | third


def _padded(brain: np.ndarray, affine: np.ndarray, margin: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """The brain mask with ``margin`` empty voxels around it, except below: there the last slice repeats, so
    the shells stay open under the medulla (the template ends there). Returns (mask, its affine)."""
    below = np.repeat(brain[:, :, :1], margin, axis=2)
    padded = np.pad(np.concatenate([below, brain], axis=2), ((margin, margin), (margin, margin), (0, margin)))
    shifted = affine.copy()
    shifted[:3, 3] -= affine[:3, :3] @ np.full(3, margin)
    return padded, shifted


def _resample(volume: np.ndarray, affine: np.ndarray, points_mm: np.ndarray, smooth_mm: float = 0.0) -> np.ndarray:
    from scipy import ndimage

    if smooth_mm:
        volume = ndimage.gaussian_filter(volume, smooth_mm)
    inv = np.linalg.inv(affine)
    idx = inv[:3, :3] @ points_mm.reshape(3, -1) + inv[:3, 3:4]
    return ndimage.map_coordinates(volume, idx, order=1, mode="nearest").reshape(points_mm.shape[1:])


def _atlas_grid(box_mm: tuple[tuple[float, float], ...], spacing_mm: float) -> tuple[np.ndarray, tuple[int, ...]]:
    shape = tuple(round((hi - lo) / spacing_mm) + 1 for lo, hi in box_mm)
    affine = np.diag([spacing_mm] * 3 + [1.0])
    affine[:3, 3] = [lo for lo, _ in box_mm]
    return affine, shape  # type: ignore[return-value]


def atlas_labels(gm: np.ndarray, wm: np.ndarray, shell_mm: np.ndarray, ventricle_mm: np.ndarray,
                 points_mm: np.ndarray, width_mm: float, scale: ShellScale = ShellScale()) -> np.ndarray:
    """Hard labels (:data:`ATLAS_LABELS`) of voxels from their tissue fractions and depths (all flat, N)."""
    inside, layers = layer_fractions(shell_mm, shell_boundaries(points_mm, scale), width_mm)
    fluid = np.clip(inside - gm - wm, 0.0, None)
    ventricular = fluid * box_fraction(1.5 - ventricle_mm, width_mm)
    index = {name: i for i, name in enumerate(ATLAS_LABELS)}
    fractions = np.zeros((len(ATLAS_LABELS), shell_mm.size), dtype=np.float32)
    fractions[index["background"]] = 1.0 - inside - layers.sum(axis=0)
    for layer, name in zip(layers, LAYERS, strict=True):
        fractions[index[name]] += layer
    fractions[index["csf"]] += fluid - ventricular
    fractions[index["ventricle"]] = ventricular
    fractions[index["gm"]], fractions[index["wm"]] = gm, wm
    return np.argmax(fractions, axis=0).astype(np.uint8)


def build_atlas() -> dict[str, np.ndarray]:
    """Derive the atlas arrays from the template (about 15 s and 2 GB of memory)."""
    from scipy import ndimage

    template, t_affine = _load_template()
    brain = ndimage.binary_fill_holes(template["t1"] > 0)
    gm, wm = (np.where(brain, template[name] / 255.0, 0.0).astype(np.float32) for name in ("gm", "wm"))
    fluid = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    world = _world_grid(brain.shape, t_affine)
    ventricles = _ventricles(template["t1"], fluid, brain, world)
    padded, padded_affine = _padded(brain, t_affine)
    shell_mm = _signed_distance(_envelope(padded))
    ventricle_mm = np.clip(_signed_distance(ventricles), -13.0, 21.0)
    affine, shape = _atlas_grid(ATLAS_BOX_MM, ATLAS_SPACING_MM)
    shell_affine, shell_shape = _atlas_grid(SHELL_BOX_MM, SHELL_SPACING_MM)
    points = _world_grid(shape, affine)
    codes = {
        "gm": _encode(_resample(gm, t_affine, points, smooth_mm=0.6), FRACTION_CODE),
        "wm": _encode(_resample(wm, t_affine, points, smooth_mm=0.6), FRACTION_CODE),
        "ventricle_depth": _encode(_resample(ventricle_mm, t_affine, points), VENTRICLE_DEPTH_CODE),
        "shell_depth": _encode(_resample(shell_mm, padded_affine, _world_grid(shell_shape, shell_affine)),
                               SHELL_DEPTH_CODE),
    }
    fine_shell = _resample(decode(codes["shell_depth"], SHELL_DEPTH_CODE), shell_affine, points)
    labels = atlas_labels(
        decode(codes["gm"], FRACTION_CODE).ravel(), decode(codes["wm"], FRACTION_CODE).ravel(),
        fine_shell.ravel(), decode(codes["ventricle_depth"], VENTRICLE_DEPTH_CODE).ravel(),
        points.reshape(3, -1), ATLAS_SPACING_MM,
    ).reshape(shape)
    atria = ventricles & (world[1] < -28)
    choroid = [world[:, atria & (np.sign(world[0]) == side)].mean(axis=1) for side in (-1, 1)]
    return {
        **codes,
        "labels": labels,
        "affine": affine,
        "shell_affine": shell_affine,
        "choroid_mm": np.array(choroid, dtype=np.float64),
        "label_names": np.array(ATLAS_LABELS),
    }


def main() -> None:
    """Rebuild ``data/brain_atlas.npz`` from nilearn's copy of the template."""
    arrays = build_atlas()
    ATLAS_PATH.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(ATLAS_PATH, **arrays)
    counts = np.bincount(arrays["labels"].ravel(), minlength=len(ATLAS_LABELS))
    volumes = ", ".join(
        f"{name} {count * ATLAS_SPACING_MM**3 / 1000:.0f} ml" for name, count in zip(ATLAS_LABELS, counts, strict=True)
    )
    print(f"wrote {ATLAS_PATH} ({ATLAS_PATH.stat().st_size / 1e6:.2f} MB, grid {arrays['labels'].shape}): {volumes}")


if __name__ == "__main__":
    main()

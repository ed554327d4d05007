"""Per-seed dimensions of the synthetic chest: body, thoracic cage, diaphragm, heart, hila, great vessels, airway.

:class:`Thorax` holds the sizes drawn from the anatomy stream; :class:`Heart` is the ellipsoid sized so that its
frontal width on the radiograph is the requested cardiothoracic ratio; :func:`mediastinal_paths` gives the
centre lines of the aorta, SVC, pulmonary arteries, trachea and bronchi. Nothing here paints.
"""

from dataclasses import dataclass

import numpy as np

from medm2g_core.phantoms.chest.grid import SIDE_SIGN, ellipsoid_distance, smoothstep, unit
from medm2g_core.phantoms.drr import PAGeometry

LUNG_FLOOR_Z = -150.0  # the posterior costophrenic recesses approach but never reach this height (mm)


@dataclass(frozen=True)
class Thorax:
    """Per-seed body and thoracic-cage dimensions (mm, RAS, origin at the centre of the field of view)."""

    body_width: float
    body_depth: float
    fat: float
    cage_half_width: float  # A0: half width of the thoracic cavity at its widest
    cavity_centre_y: float
    cavity_half_depth: float
    apex_z: float
    dome_top: dict[str, float]  # side -> highest point of the hemidiaphragm
    dome_lateral_drop: float
    dome_posterior_drop: float
    level_mm: float  # vertebral level height
    t1_z: float
    heart_yaw: float  # radians, tilt of the heart's long axis below horizontal toward the left
    heart_roll: float
    heart_axes: tuple[float, float, float]  # shape (relative), scaled by the cardiothoracic ratio
    carina_z: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Thorax":
        width = float(rng.uniform(300.0, 380.0))
        depth = float(np.clip(0.68 * width + rng.normal(0.0, 10.0), 200.0, 260.0))
        fat = float(rng.uniform(8.0, 22.0) + (width - 300.0) * 0.08)
        y_ant = depth / 2 - 0.8 * fat - rng.uniform(14.0, 20.0)
        y_post = -depth / 2 + 0.6 * fat + rng.uniform(38.0, 46.0)
        apex = float(rng.uniform(128.0, 140.0))
        dome_right = float(rng.uniform(-78.0, -60.0))
        t1 = apex + 8.0
        return cls(
            body_width=width, body_depth=depth, fat=fat,
            cage_half_width=float(width / 2 - fat - rng.uniform(16.0, 22.0)),
            cavity_centre_y=float((y_ant + y_post) / 2), cavity_half_depth=float((y_ant - y_post) / 2),
            apex_z=apex, dome_top={"right": dome_right, "left": dome_right - float(rng.uniform(10.0, 20.0))},
            dome_lateral_drop=float(rng.uniform(55.0, 68.0)), dome_posterior_drop=float(rng.uniform(35.0, 50.0)),
            level_mm=(t1 - dome_right) / 9.0, t1_z=t1,
            heart_yaw=float(np.radians(rng.uniform(30.0, 45.0))), heart_roll=float(np.radians(rng.uniform(15.0, 30.0))),
            heart_axes=(1.0, float(rng.uniform(0.72, 0.82)), float(rng.uniform(0.7, 0.8))),
            carina_z=float(apex - rng.uniform(0.36, 0.42) * (apex - dome_right)),
        )

    def cage_half_width_at(self, z) -> np.ndarray:
        """Half width of the thoracic cavity at height z: narrowing toward the inlet, slightly toward the abdomen."""
        z = np.asarray(z, dtype=np.float32)
        widest = self.dome_top["right"] + 30.0
        up = np.clip((z - widest) / (self.t1_z + 10.0 - widest), 0.0, 1.1) ** 2.2
        down = np.clip((widest - z) / 120.0, 0.0, 1.0)
        return (self.cage_half_width * (1.0 - 0.6 * up - 0.08 * down)).astype(np.float32)

    def body_half_width_at(self, z) -> np.ndarray:
        """Half width of the body contour: the chest, widening into the shoulders at the top."""
        z = np.asarray(z, dtype=np.float32)
        shoulder = smoothstep((z - (self.t1_z - 40.0)) / 60.0)
        return (self.body_width / 2 * (1.0 + 0.1 * shoulder)).astype(np.float32)

    def dome_z(self, side: str, x, y) -> np.ndarray:
        """Height of the hemidiaphragm under (x, y): a dome over mid-hemithorax, steep laterally and posteriorly."""
        lateral = SIDE_SIGN[side] * x
        centre = 0.45 * self.cage_half_width
        u = (lateral - centre) / np.where(lateral > centre, self.cage_half_width - centre, centre)
        v = (y - self.cavity_centre_y) / self.cavity_half_depth
        circle = 1.0 - np.sqrt(np.clip(1.0 - u**2, 0.0, 1.0))
        drop = np.where(u > 0, self.dome_lateral_drop * (0.75 * u**2 + 0.25 * circle), 15.0 * u**2)
        drop = drop + self.dome_posterior_drop * np.minimum(v, 0.0) ** 2 + 12.0 * np.maximum(v, 0.0) ** 2
        deepest = self.dome_top[side] - LUNG_FLOOR_Z
        return (self.dome_top[side] - deepest * (1.0 - np.exp(-drop / deepest))).astype(np.float32)

    def lung_distance(self, side: str, x, y, z) -> np.ndarray:
        """Approximate signed distance (mm) to one lung's outline before the mediastinal organs carve it."""
        lateral = SIDE_SIGN[side] * x
        a = self.cage_half_width_at(z)
        dy = y - self.cavity_centre_y
        rho = np.sqrt((x / a) ** 2 + (dy / self.cavity_half_depth) ** 2)
        cage = (rho - 1.0) * np.minimum(a, self.cavity_half_depth)
        dome = self.dome_z(side, x, y) - z
        cap_x, cap_y, cap_z = 0.62 * self.cage_half_width, 1.1 * self.cavity_half_depth, self.apex_z - self.cap_base
        apex = ellipsoid_distance(lateral - 0.5 * self.cage_half_width, dy + 0.15 * self.cavity_half_depth,
                                  np.maximum(z - self.cap_base, 0.0), (cap_x, cap_y, cap_z))
        septum = self.mediastinum_half_width(y) - lateral
        return np.maximum(np.maximum(cage, dome), np.maximum(apex, septum))

    def mediastinum_half_width(self, y) -> np.ndarray:
        """Half width of the mediastinum between the lungs: narrow anteriorly, wide around airway and spine."""
        front = self.cavity_centre_y + 0.45 * self.cavity_half_depth
        return 9.0 + 12.0 * smoothstep((front - y) / 35.0)

    @property
    def cap_base(self) -> float:
        return self.apex_z - 110.0

    @property
    def inner_width(self) -> float:
        """Widest inner thoracic width at the lateral lung edges (mm, frontal projection)."""
        return 2.0 * float(self.cage_half_width_at(self.dome_top["right"] + 30.0))

    @property
    def spine_y(self) -> float:
        """Centre of the vertebral bodies (y)."""
        return self.cavity_centre_y - self.cavity_half_depth + 6.0

    def vertebra_z(self, n: int) -> float:
        return self.t1_z - n * self.level_mm


@dataclass(frozen=True)
class Heart:
    """The heart ellipsoid: centre, rotation (columns = body axes of the ellipsoid) and semi-axes (mm)."""

    centre: np.ndarray
    rotation: np.ndarray
    axes: np.ndarray

    @classmethod
    def for_ratio(cls, thorax: Thorax, ratio: float, geometry: PAGeometry | None) -> "Heart":
        """The heart whose frontal width is ``ratio`` x the inner thoracic width as seen on the radiograph."""
        down, forward = thorax.heart_yaw, thorax.heart_roll
        apex = np.array([-np.cos(down) * np.cos(forward), np.cos(down) * np.sin(forward), -np.sin(down)])
        second = unit(np.cross(apex, [0.0, 1.0, 0.0]))
        rotation = np.column_stack([apex, second, np.cross(apex, second)])  # first column: toward the apex
        shape = np.asarray(thorax.heart_axes)
        covariance = rotation @ np.diag(shape**2) @ rotation.T
        y_centre = thorax.cavity_centre_y + 0.3 * thorax.cavity_half_depth
        width = ratio * thorax.inner_width
        if geometry is not None:
            width *= float(geometry.magnification(thorax.cavity_centre_y) / geometry.magnification(y_centre))
        scale = width / (2.0 * np.sqrt(covariance[0, 0]))
        half_height = scale * np.sqrt(covariance[2, 2])
        centre = np.array([-width / 6.0, y_centre, thorax.dome_top["left"] - 12.0 + half_height])
        return cls(centre, rotation, shape * scale)

    def distance(self, x, y, z) -> np.ndarray:
        d = [x - self.centre[0], y - self.centre[1], z - self.centre[2]]
        local = [sum(self.rotation[r, c] * d[r] for r in range(3)) for c in range(3)]
        return ellipsoid_distance(*local, self.axes)

    def bounds(self, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        half = np.sqrt(np.diag(self.rotation @ np.diag(self.axes**2) @ self.rotation.T)) + margin
        return self.centre - half, self.centre + half

    def point(self, along: float) -> np.ndarray:
        """A point on the long axis: ``along`` = 1 at the apex end, -1 at the base."""
        return self.centre + along * self.axes[0] * self.rotation[:, 0]


def mediastinal_paths(thorax: Thorax, heart: Heart) -> dict[str, tuple[np.ndarray, float]]:
    """Centre lines and radii (mm) of the aorta, SVC, pulmonary trunk and arteries, trachea and bronchi."""
    top = 170.0
    base = heart.point(-0.75)
    spine_y = thorax.spine_y
    carina = np.array([0.0, spine_y + 34.0, thorax.carina_z])
    knob_z = thorax.carina_z + 38.0
    hila = hila_of(thorax)
    aorta = [_shifted(base, 10, 5, 0), [22, base[1] - 5, knob_z - 30], [14, spine_y + 60, knob_z],
             [-30, spine_y + 40, knob_z + 6], [-36, spine_y + 18, knob_z - 10], [-24, spine_y + 10, knob_z - 60],
             [-20, spine_y + 12, thorax.dome_top["left"] - 60], [-14, spine_y + 16, -200]]
    trunk_top = np.array([-12.0, carina[1] + 12, thorax.carina_z - 12])
    return {
        "aorta": (np.array(aorta, dtype=float), 13.0),
        "svc": (np.array([[28, spine_y + 55, top], [26, spine_y + 55, knob_z - 10], [24, base[1], base[2] + 15]]), 9.0),
        "pulmonary trunk": (np.array([_shifted(heart.point(-0.6), -8, 12, 0), trunk_top]), 12.0),
        "brachiocephalic trunk": (np.array([[10, spine_y + 56, knob_z + 4], [20, spine_y + 50, top]]), 7.0),
        "left carotid": (np.array([[-6, spine_y + 50, knob_z + 8], [-16, spine_y + 46, top]]), 5.0),
        "left subclavian": (np.array([[-18, spine_y + 42, knob_z + 8], [-30, spine_y + 36, top]]), 6.0),
        "right pulmonary artery": (np.array([trunk_top, [20, carina[1] - 4, thorax.carina_z - 16], hila["right"]]),
                                   11.0),
        "left pulmonary artery": (np.array([trunk_top, [-30, carina[1] - 8, thorax.carina_z], hila["left"]]), 11.0),
        "trachea": (np.array([[0, spine_y + 32, top], [0, spine_y + 34, thorax.carina_z + 40], carina]), 8.5),
        "right bronchus": (np.array([carina, _shifted(carina, 22, -4, -22), _shifted(hila["right"], -6, -10, -4)]),
                           6.5),
        "left bronchus": (np.array([carina, _shifted(carina, -28, -6, -14), _shifted(hila["left"], 6, -10, -6)]), 6.0),
    }


def _shifted(point: np.ndarray, dx: float, dy: float, dz: float) -> np.ndarray:
    return point + np.array([dx, dy, dz])


def hila_of(thorax: Thorax) -> dict[str, np.ndarray]:
    y = thorax.cavity_centre_y - 0.15 * thorax.cavity_half_depth
    return {"right": np.array([58.0, y, thorax.carina_z - 22.0]), "left": np.array([-56.0, y, thorax.carina_z - 10.0])}

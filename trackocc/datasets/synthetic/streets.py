"""Street network of a synthetic scene: a Manhattan grid of roads with sidewalks.

The network lives in a street frame (u, v) rotated by ``theta`` and shifted by ``origin`` from
the global frame. Family A streets run along u at ``v = k * block_a`` (the ego drives on k = 0),
family B streets run along v at ``u = offset_b + m * block_b``. The ground class of any global
(x, y) is computed analytically (numba), so voxelization and far-field rendering agree.
"""
from dataclasses import dataclass

import numba
import numpy as np

from ...structures.occ_classes import ROAD, VEGETATION, WALKABLE

# indices into the float64 parameter vector handed to numba kernels
P_OX, P_OY, P_THETA, P_BLOCK_A, P_BLOCK_B, P_OFF_B, P_HW_A, P_SW_A, P_HW_B, P_SW_B, \
    P_Z0, P_LANES_A, P_LANES_B, P_LAWN_FRAC = range(14)
NUM_PARAMS = 14
LANE_WIDTH = 3.5

MARK_NONE, MARK_WHITE, MARK_YELLOW = 0, 1, 2


@dataclass
class StreetLayout:
    """Parameters of the street grid (metres, radians)."""
    origin: tuple
    theta: float
    block_a: float  # spacing of family-A streets (along v)
    block_b: float  # spacing of family-B streets (along u)
    offset_b: float
    lanes_a: int  # driving lanes per direction on A streets
    lanes_b: int
    parking_a: bool
    sidewalk_a: float
    sidewalk_b: float
    ground_z: float  # global z of the road surface (= ego frame z 0)
    lawn_fraction: float

    @property
    def half_width_a(self) -> float:
        """Half width of the A roadway (driving lanes + parking strip or shoulder)."""
        return LANE_WIDTH * self.lanes_a + (2.4 if self.parking_a else 0.3)

    @property
    def half_width_b(self) -> float:
        return LANE_WIDTH * self.lanes_b + 0.3

    def params(self) -> np.ndarray:
        """(NUM_PARAMS,) float64 vector used by the numba kernels."""
        p = np.zeros(NUM_PARAMS, np.float64)
        p[P_OX], p[P_OY] = self.origin
        p[P_THETA] = self.theta
        p[P_BLOCK_A], p[P_BLOCK_B], p[P_OFF_B] = self.block_a, self.block_b, self.offset_b
        p[P_HW_A], p[P_SW_A] = self.half_width_a, self.sidewalk_a
        p[P_HW_B], p[P_SW_B] = self.half_width_b, self.sidewalk_b
        p[P_Z0] = self.ground_z
        p[P_LANES_A], p[P_LANES_B] = self.lanes_a, self.lanes_b
        p[P_LAWN_FRAC] = self.lawn_fraction
        return p

    def to_global(self, u, v):
        """Street-frame (u, v) -> global (x, y); accepts scalars or arrays."""
        c, s = np.cos(self.theta), np.sin(self.theta)
        return (self.origin[0] + c * np.asarray(u) - s * np.asarray(v),
                self.origin[1] + s * np.asarray(u) + c * np.asarray(v))

    def b_streets(self, u_min: float, u_max: float) -> np.ndarray:
        """u coordinates of the B streets crossing [u_min, u_max]."""
        m0 = int(np.floor((u_min - self.offset_b) / self.block_b))
        m1 = int(np.ceil((u_max - self.offset_b) / self.block_b))
        return self.offset_b + self.block_b * np.arange(m0, m1 + 1)


def sample_layout(rng: np.random.Generator) -> StreetLayout:
    """Draw a random street layout."""
    lanes_a = int(rng.integers(1, 3))
    return StreetLayout(
        origin=(float(rng.uniform(-3000, 3000)), float(rng.uniform(-3000, 3000))),
        theta=float(rng.uniform(-np.pi, np.pi)),
        block_a=float(rng.uniform(70, 110)),
        block_b=float(rng.uniform(70, 130)),
        offset_b=float(rng.uniform(0, 60)),
        lanes_a=lanes_a,
        lanes_b=1,
        parking_a=bool(rng.random() < 0.6),
        sidewalk_a=float(rng.uniform(2.6, 4.5)),
        sidewalk_b=float(rng.uniform(2.2, 3.5)),
        ground_z=float(rng.uniform(-20, 80)),
        lawn_fraction=float(rng.uniform(0.2, 0.6)),
    )


@numba.njit(cache=True)
def hash01(a, b, c):
    """Deterministic integer hash of three ints -> float in [0, 1)."""
    h = (np.int64(a) * 73856093) ^ (np.int64(b) * 19349663) ^ (np.int64(c) * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF) / 16777216.0


@numba.njit(cache=True)
def to_street(p, x, y):
    """Global (x, y) -> street frame (u, v)."""
    dx = x - p[P_OX]
    dy = y - p[P_OY]
    c = np.cos(p[P_THETA])
    s = np.sin(p[P_THETA])
    return c * dx + s * dy, -s * dx + c * dy


@numba.njit(cache=True)
def ground_class(p, x, y):
    """Ground class and road marking at global (x, y).

    Returns (class id, marking) with marking in MARK_NONE / MARK_WHITE / MARK_YELLOW.
    """
    u, v = to_street(p, x, y)
    ka = np.floor(v / p[P_BLOCK_A] + 0.5)
    va = v - ka * p[P_BLOCK_A]  # signed distance to the nearest A street centre line
    ub = u - p[P_OFF_B]
    kb = np.floor(ub / p[P_BLOCK_B] + 0.5)
    wb = ub - kb * p[P_BLOCK_B]  # signed distance to the nearest B street centre line
    da = abs(va)
    db = abs(wb)
    hwa = p[P_HW_A]
    hwb = p[P_HW_B]
    on_a = da < hwa
    on_b = db < hwb
    if on_a or on_b:
        mark = MARK_NONE
        if on_a and not on_b:
            if da < 0.12:
                mark = MARK_YELLOW
            else:
                for lane in range(1, int(p[P_LANES_A])):
                    if abs(da - lane * LANE_WIDTH) < 0.08 and (u % 9.0) < 3.0:
                        mark = MARK_WHITE
                if db < hwb + 3.5 and (v % 1.0) < 0.5 and da < hwa - 0.3:
                    mark = MARK_WHITE  # zebra crossing next to the intersection
        elif on_b and not on_a:
            if db < 0.12:
                mark = MARK_YELLOW
            elif da < hwa + p[P_SW_A] + 0.6 and abs(da - hwa - p[P_SW_A] - 0.4) < 0.2:
                mark = MARK_WHITE  # stop line
        return ROAD, mark
    if da < hwa + p[P_SW_A] or db < hwb + p[P_SW_B]:
        return WALKABLE, MARK_NONE
    # inside a block: lawn or paved lot, chosen per block
    if hash01(int(ka) if va < 0 else int(ka) + 1, int(kb) if wb < 0 else int(kb) + 1,
              int(p[P_OX])) < p[P_LAWN_FRAC]:
        return VEGETATION, MARK_NONE
    return WALKABLE, MARK_NONE

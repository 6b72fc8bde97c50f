"""Solid primitives the synthetic world is made of, stored as rows of a float64 array.

Row layout (``PRIM_COLS`` columns): kind, class id, instance id, centre x, y, z, half extents
hx, hy, hz, yaw. Kinds: box (hx, hy, hz half sizes), vertical cylinder (radius hx, half height
hz), ellipsoid (radii hx, hy, hz), cone (base radius hx, top radius hy, half height hz).
Coordinates are global for the static world and object-local for agent parts.
"""
import numpy as np

BOX, CYLINDER, ELLIPSOID, CONE = 0, 1, 2, 3
(C_KIND, C_CLS, C_INST, C_X, C_Y, C_Z, C_HX, C_HY, C_HZ, C_YAW) = range(10)
PRIM_COLS = 10


class PrimitiveList:
    """Append-only builder of primitive rows."""

    def __init__(self):
        self._rows = []

    def add(self, kind, cls, x, y, z, hx, hy, hz, yaw=0.0, inst=0):
        """Add one primitive; ``z`` is the centre height."""
        self._rows.append((kind, cls, inst, x, y, z, hx, hy, hz, yaw))

    def box_on_ground(self, cls, x, y, ground_z, length, width, height, yaw=0.0, inst=0,
                      lift=0.0):
        """Box standing on the ground (bottom at ``ground_z + lift``)."""
        self.add(BOX, cls, x, y, ground_z + lift + height / 2, length / 2, width / 2,
                 height / 2, yaw, inst)

    def cylinder_on_ground(self, cls, x, y, ground_z, radius, height, inst=0, lift=0.0):
        self.add(CYLINDER, cls, x, y, ground_z + lift + height / 2, radius, radius,
                 height / 2, 0.0, inst)

    def __len__(self):
        return len(self._rows)

    def array(self) -> np.ndarray:
        """(P, PRIM_COLS) float64 array."""
        if not self._rows:
            return np.zeros((0, PRIM_COLS), np.float64)
        return np.asarray(self._rows, dtype=np.float64)


def place_parts(parts: np.ndarray, x: float, y: float, z: float, yaw: float) -> np.ndarray:
    """Move object-local parts (P, PRIM_COLS) to a pose (x, y, ground z, yaw) -> global rows."""
    out = parts.copy()
    c, s = np.cos(yaw), np.sin(yaw)
    out[:, C_X] = x + c * parts[:, C_X] - s * parts[:, C_Y]
    out[:, C_Y] = y + s * parts[:, C_X] + c * parts[:, C_Y]
    out[:, C_Z] = z + parts[:, C_Z]
    out[:, C_YAW] = parts[:, C_YAW] + yaw
    return out

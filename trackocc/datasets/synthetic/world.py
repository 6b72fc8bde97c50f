"""Static part of a synthetic scene: buildings, vegetation, street furniture.

Everything is placed in the street frame of a :class:`StreetLayout` and stored as global
primitives (see :mod:`.primitives`). Ground (road, sidewalks, lawns) is analytic
(:func:`.streets.ground_class`) and not part of the primitive list.
"""
import numpy as np

from ...structures.occ_classes import (BICYCLE, BUILDING, CONE, GO, MOTORCYCLE, POLE, SIGN,
                                      TRAFFICLIGHT, TREETRUNK, VEGETATION)
from .primitives import CONE as CONE_KIND, ELLIPSOID, PrimitiveList
from .streets import StreetLayout


class IdAllocator:
    """Instance ids unique within a sequence. Starts at 2: the reference evaluator treats id 1
    as 'no instance', so the synthetic data never uses it."""

    def __init__(self, start: int = 2):
        self.next_id = start

    def __call__(self) -> int:
        self.next_id += 1
        return self.next_id - 1


class WorldBuilder:
    """Places static objects of one scene into a :class:`PrimitiveList` (global frame)."""

    def __init__(self, layout: StreetLayout, rng: np.random.Generator, ids: IdAllocator):
        self.lay = layout
        self.rng = rng
        self.ids = ids
        self.prims = PrimitiveList()
        self.z0 = layout.ground_z
        self.yaw_a = layout.theta  # heading of the u axis in the global frame

    # ------------------------------------------------------------------ helpers
    def _g(self, u, v):
        x, y = self.lay.to_global(u, v)
        return float(x), float(y)

    def _box(self, cls, u, v, length, width, height, yaw_local=0.0, inst=0, lift=0.0):
        x, y = self._g(u, v)
        self.prims.box_on_ground(cls, x, y, self.z0, length, width, height,
                                 self.yaw_a + yaw_local, inst, lift)

    def _cyl(self, cls, u, v, radius, height, inst=0, lift=0.0):
        x, y = self._g(u, v)
        self.prims.cylinder_on_ground(cls, x, y, self.z0, radius, height, inst, lift)

    # ------------------------------------------------------------------ objects
    def tree(self, u, v):
        r = self.rng
        trunk_h = r.uniform(1.8, 3.2)
        self._cyl(TREETRUNK, u, v, r.uniform(0.15, 0.3), trunk_h)
        rad = r.uniform(1.4, 2.8)
        x, y = self._g(u, v)
        self.prims.add(ELLIPSOID, VEGETATION, x, y, self.z0 + trunk_h + 0.7 * rad, rad,
                       rad * r.uniform(0.8, 1.1), rad * r.uniform(0.8, 1.3))

    def street_light(self, u, v):
        self._cyl(POLE, u, v, 0.15, self.rng.uniform(4.5, 8.0))

    def sign(self, u, v, facing):
        """Pole with a sign plate (instance of class sign) facing along +-u."""
        r = self.rng
        pole_h = r.uniform(2.0, 2.6)
        self._cyl(POLE, u, v, 0.08, pole_h)
        size = r.uniform(0.6, 0.9)
        self._box(SIGN, u - 0.1 * facing, v, 0.05, size, size, inst=self.ids(), lift=pole_h)

    def traffic_light(self, u, v, side):
        """Pole at an intersection corner with an arm over the road and a light box."""
        r = self.rng
        h = r.uniform(4.6, 5.2)
        self._cyl(POLE, u, v, 0.15, h)
        arm = r.uniform(3.5, 6.0)
        self._box(POLE, u, v - side * arm / 2, 0.2, arm, 0.2, lift=h - 0.2)
        self._box(TRAFFICLIGHT, u, v - side * arm, 0.4, 0.4, 1.0, lift=h - 1.1)

    def cone_cluster(self, u, v, direction):
        for i in range(int(self.rng.integers(2, 4))):
            x, y = self._g(u + direction * 1.2 * i, v + self.rng.uniform(-0.15, 0.15))
            self.prims.add(CONE_KIND, CONE, x, y, self.z0 + 0.2 + 0.35, 0.25, 0.06, 0.35)

    def furniture(self, u, v):
        """A general object (bin, bench, box) or a parked bicycle on a sidewalk, long side
        along the street and at most 0.8 m deep (walking pedestrians pass next to it)."""
        r = self.rng
        kind = r.random()
        if kind < 0.35:
            self._box(GO, u, v, 0.6, 0.6, r.uniform(0.9, 1.2))
        elif kind < 0.6:
            self._box(GO, u, v, 1.8, 0.6, 0.8)
        elif kind < 0.85:
            self._box(BICYCLE, u, v, 1.7, 0.5, 1.0)
        else:
            self._box(GO, u, v, r.uniform(1.0, 2.0), 0.8, r.uniform(1.0, 2.0))

    # ------------------------------------------------------------------ layout
    def build(self, u_range, v_range):
        """Populate blocks and sidewalks intersecting ``u_range`` x ``v_range`` (street frame)."""
        lay = self.lay
        hwa, swa, hwb, swb = lay.half_width_a, lay.sidewalk_a, lay.half_width_b, lay.sidewalk_b
        b_us = lay.b_streets(u_range[0] - lay.block_b, u_range[1] + lay.block_b)
        a_vs = lay.block_a * np.arange(np.floor(v_range[0] / lay.block_a) - 1,
                                       np.ceil(v_range[1] / lay.block_a) + 2)
        for va in a_vs:
            for ub0, ub1 in zip(b_us[:-1], b_us[1:]):
                # sidewalk furniture along both sides of this A street segment
                for side in (-1.0, 1.0):
                    self._sidewalk_a(va, side, ub0 + hwb + swb, ub1 - hwb - swb)
            for ub in b_us:
                self._intersection(ub, va)
        for va0, va1 in zip(a_vs[:-1], a_vs[1:]):
            for ub0, ub1 in zip(b_us[:-1], b_us[1:]):
                self._block(ub0 + hwb + swb, ub1 - hwb - swb, va0 + hwa + swa, va1 - hwa - swa)
                for side, ub in ((1.0, ub0), (-1.0, ub1)):
                    self._sidewalk_b(ub, side, va0 + hwa + swa, va1 - hwa - swa)
        return self.prims.array()

    def _sidewalk_a(self, va, side, u0, u1):
        lay, r = self.lay, self.rng
        curb = va + side * (lay.half_width_a + 0.6)
        if r.random() < 0.75:  # tree row
            u = u0 + r.uniform(2, 8)
            while u < u1 - 2:
                self.tree(u, curb + side * r.uniform(0.0, 0.4))
                u += r.uniform(7, 14)
        u = u0 + r.uniform(3, 15)
        while u < u1 - 2:
            self.street_light(u, curb - side * 0.2)
            u += r.uniform(18, 30)
        # signs facing the traffic driving towards the next intersection
        if r.random() < 0.8:
            facing = 1.0 if side < 0 else -1.0
            u = u1 - r.uniform(3, 12) if facing > 0 else u0 + r.uniform(3, 12)
            self.sign(u, curb + side * 0.3, facing)
        if r.random() < 0.5:
            self.sign(r.uniform(u0 + 5, u1 - 5), curb + side * 0.3, r.choice([-1.0, 1.0]))
        outer = va + side * (lay.half_width_a + lay.sidewalk_a - 0.45)
        for _ in range(int(r.integers(1, 7))):
            self.furniture(r.uniform(u0, u1), outer)
        if lay.parking_a and r.random() < 0.6:  # cones in the car-free corner of the strip
            self.cone_cluster(u1 - 1.0, va + side * (lay.half_width_a - 1.1), -1.0)
        if lay.parking_a and r.random() < 0.3:  # parked next to the crossing, where no car is
            self._box(MOTORCYCLE, u0 + 1.5, va + side * (lay.half_width_a - 1.1), 2.1, 0.8, 1.2)

    def _sidewalk_b(self, ub, side, v0, v1):
        lay, r = self.lay, self.rng
        curb = ub + side * (lay.half_width_b + 0.6)
        if r.random() < 0.5:
            v = v0 + r.uniform(2, 8)
            while v < v1 - 2:
                self.tree(curb + side * r.uniform(0.0, 0.3), v)
                v += r.uniform(8, 15)
        v = v0 + r.uniform(3, 15)
        while v < v1 - 2:
            self.street_light(curb - side * 0.2, v)
            v += r.uniform(20, 32)

    def _intersection(self, ub, va):
        """Traffic lights at the corners of the crossing of B street ``ub`` and A street ``va``."""
        lay, r = self.lay, self.rng
        if r.random() < 0.3:
            return
        for su, sv in ((-1, -1), (1, 1), (-1, 1), (1, -1)):
            if r.random() < 0.8:
                u = ub + su * (lay.half_width_b + 0.8)
                v = va + sv * (lay.half_width_a + 0.8)
                self.traffic_light(u, v, sv)

    def _block(self, u0, u1, v0, v1):
        """Buildings along the block edges (or a park with trees and hedges)."""
        r = self.rng
        if u1 - u0 < 10 or v1 - v0 < 10:
            return
        if r.random() < 0.2:  # park
            for _ in range(int((u1 - u0) * (v1 - v0) / 150)):
                self.tree(r.uniform(u0 + 2, u1 - 2), r.uniform(v0 + 2, v1 - 2))
            for v_edge, s in ((v0, 1.0), (v1, -1.0)):
                if r.random() < 0.6:
                    self._box(VEGETATION, (u0 + u1) / 2, v_edge + s * 0.6, u1 - u0 - 4, 0.8,
                              r.uniform(0.8, 1.6))
            return
        for v_edge, s in ((v0, 1.0), (v1, -1.0)):
            u = u0 + r.uniform(0, 4)
            while u < u1 - 6:
                width = min(r.uniform(8, 26), u1 - u)
                depth = min(r.uniform(8, 20), (v1 - v0) / 2 - 1)
                setback = r.uniform(0, 5) if r.random() < 0.6 else 0.0
                height = r.uniform(4.5, 25)
                self._box(BUILDING, u + width / 2, v_edge + s * (setback + depth / 2), width,
                          depth, height)
                if setback > 2.5 and r.random() < 0.5:
                    self._box(VEGETATION, u + width / 2, v_edge + s * 0.7, width * 0.8, 0.8,
                              r.uniform(0.8, 1.4))
                u += width + (r.uniform(1, 8) if r.random() < 0.5 else 0.0)

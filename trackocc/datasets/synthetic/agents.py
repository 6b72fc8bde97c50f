"""Moving and parked agents of a synthetic sequence (ego, vehicles, pedestrians, cyclists).

Agents drive in lanes of the street grid (right-hand traffic). Within a lane every agent keeps
its own speed but never closer than a gap to the one in front (a min rule on positions), so
agents never overlap; cross-street traffic queues at the stop line of the ego's street.
Instance ids come from the sequence's :class:`IdAllocator` and never change.
"""
from dataclasses import dataclass, field

import numpy as np

from ...structures.occ_classes import CYCLIST, PEDESTRIAN, VEHICLE
from .constants import FRAME_INTERVAL_S
from .primitives import PrimitiveList
from .streets import LANE_WIDTH, StreetLayout
from .world import IdAllocator

EGO_LENGTH = 4.8

# vehicle types: (length, width, height, probability, has cabin)
VEHICLE_TYPES = (
    (4.5, 1.85, 1.5, 0.45, True),   # sedan
    (4.8, 1.95, 1.8, 0.25, True),   # SUV
    (5.3, 2.0, 2.3, 0.12, False),   # van
    (8.0, 2.4, 3.2, 0.10, False),   # truck
    (11.5, 2.55, 3.2, 0.08, False),  # bus
)


@dataclass
class Agent:
    """One thing instance: object-local parts and a global pose per frame."""
    inst: int
    cls: int
    parts: np.ndarray  # (P, PRIM_COLS) object-local (x forward, z up from the ground)
    size: tuple  # (length, width, height) of its 3D box
    poses: np.ndarray = field(default=None)  # (F, 3) global x, y, yaw


@dataclass
class Lane:
    """A directed lane: ``axis`` 'a' (along u) or 'b' (along v) at street coordinate ``base``."""
    axis: str
    base: float
    lateral: float
    direction: float  # +1 / -1
    stop_s: float = None  # along-lane stop position for the vehicle front (None: no stop)

    def to_uv(self, s):
        s = np.asarray(s, np.float64)
        if self.axis == 'a':
            return self.direction * s, np.full_like(s, self.base + self.lateral)
        return np.full_like(s, self.base + self.lateral), self.direction * s

    def heading(self, theta: float) -> float:
        if self.axis == 'a':
            return theta + (0.0 if self.direction > 0 else np.pi)
        return theta + (np.pi / 2 if self.direction > 0 else -np.pi / 2)


def vehicle_parts(rng, inst):
    """Random vehicle body -> (parts, size)."""
    probs = np.array([t[3] for t in VEHICLE_TYPES])
    length, width, height, _, cabin = VEHICLE_TYPES[rng.choice(len(VEHICLE_TYPES), p=probs)]
    s = rng.uniform(0.93, 1.07)
    length, width, height = length * s, min(width * s, 2.6), height * rng.uniform(0.95, 1.05)
    p = PrimitiveList()
    if cabin:
        body_h = 0.55 * height
        p.box_on_ground(VEHICLE, 0, 0, 0, length, width, body_h - 0.2, inst=inst, lift=0.2)
        p.box_on_ground(VEHICLE, -0.08 * length, 0, 0, 0.55 * length, 0.92 * width,
                        height - body_h, inst=inst, lift=body_h)
    else:
        p.box_on_ground(VEHICLE, 0, 0, 0, length, width, height - 0.25, inst=inst, lift=0.25)
    return p.array(), (length, width, height)


def pedestrian_parts(rng, inst):
    height = rng.uniform(1.5, 1.95)
    p = PrimitiveList()
    p.cylinder_on_ground(PEDESTRIAN, 0, 0, 0, rng.uniform(0.22, 0.3), height, inst=inst)
    return p.array(), (0.6, 0.6, height)


def cyclist_parts(rng, inst):
    p = PrimitiveList()
    p.box_on_ground(CYCLIST, 0, 0, 0, 1.75, 0.45, 1.0, inst=inst)
    rider_h = rng.uniform(0.7, 0.9)
    p.cylinder_on_ground(CYCLIST, -0.1, 0, 0, 0.25, rider_h, inst=inst, lift=1.0)
    return p.array(), (1.8, 0.6, 1.0 + rider_h)


def speed_profile(rng, num_frames, v0, v_max):
    """(F,) speeds (m/s) with smooth random accelerations, clipped to [0, v_max]."""
    accel = np.cumsum(rng.normal(0, 0.4, num_frames)) * 0.5 + rng.uniform(-0.8, 0.8)
    v = v0 + np.cumsum(accel) * FRAME_INTERVAL_S
    return np.clip(v, 0.0, v_max)


class TrafficPlanner:
    """Builds the ego trajectory and all agents of one sequence."""

    def __init__(self, layout: StreetLayout, rng: np.random.Generator, ids: IdAllocator,
                 num_frames: int):
        self.lay = layout
        self.rng = rng
        self.ids = ids
        self.F = num_frames

    # ------------------------------------------------------------------ lane dynamics
    def _run_lane(self, lane, s0, speeds, lengths):
        """Positions (N, F) of the agents of one lane.

        Each agent drives at its desired speed (``speeds`` (N, F)), accelerates at most 2 m/s^2
        and, to keep a gap to the agent in front (or to stop at ``lane.stop_s``), never goes
        faster than its braking distance allows (3 m/s^2); positions are clamped so agents
        never overlap.
        """
        n, dt = len(s0), FRAME_INTERVAL_S
        order = np.argsort(-np.asarray(s0))
        gaps = self.rng.uniform(1.5, 3.0, n)
        pos = np.zeros((n, self.F))
        vel = np.array([sp[0] for sp in speeds], np.float64)
        for f in range(self.F):
            front = None
            for i in order:
                limit = np.inf
                if front is not None:
                    limit = pos[front, f] - (lengths[front] + lengths[i]) / 2 - gaps[i]
                if lane.stop_s is not None and s0[i] + lengths[i] / 2 <= lane.stop_s:
                    limit = min(limit, lane.stop_s - lengths[i] / 2)
                if f == 0:
                    pos[i, 0] = min(s0[i], limit)
                else:
                    prev = pos[i, f - 1]
                    v = min(speeds[i][f], vel[i] + 2.0 * dt,
                            np.sqrt(2 * 3.0 * max(limit - prev, 0.0)))
                    pos[i, f] = max(prev, min(prev + v * dt, limit))
                    vel[i] = (pos[i, f] - prev) / dt
                front = i
        return pos

    def _fill_positions(self, s_min, s_max, mean_gap, length_fn, avoid=()):
        """Random initial along-lane positions with gaps, skipping ``avoid`` intervals."""
        out = []
        s = s_min + self.rng.uniform(0, mean_gap)
        while s < s_max:
            item = length_fn()
            half = item[1][0] / 2
            if all(not (a - half < s < b + half) for a, b in avoid):
                out.append((s, item))
            s += item[1][0] + self.rng.exponential(mean_gap)
        return out

    def _lane_agents(self, lane, placed, speed_fn, with_ego=None):
        """Turn placed (s0, (parts, size, inst, cls)) into Agents with per-frame poses."""
        s0 = [p[0] for p in placed]
        lengths = [p[1][1][0] for p in placed]
        speeds = [speed_fn() for _ in placed]
        if with_ego is not None:
            s0.append(with_ego[0])
            lengths.append(EGO_LENGTH)
            speeds.append(with_ego[1])
        if not s0:
            return [], None
        pos = self._run_lane(lane, np.asarray(s0), speeds, np.asarray(lengths))
        u, v = lane.to_uv(pos)
        x, y = self.lay.to_global(u, v)
        yaw = lane.heading(self.lay.theta)
        agents = []
        for i, (_, (parts, size, inst, cls)) in enumerate(placed):
            poses = np.stack([x[i], y[i], np.full(self.F, yaw)], -1)
            agents.append(Agent(inst, cls, parts, size, poses))
        return agents, (pos[-1] if with_ego is not None else None)

    def _new(self, maker, cls):
        inst = self.ids()
        parts, size = maker(self.rng, inst)
        return parts, size, inst, cls

    # ------------------------------------------------------------------ scene
    def _ego_turn(self, ego_s0, ego_speeds, v0):
        """Pick a right turn into a B street reached during the sequence -> (ub, radius, u_s)
        or None. The arc starts at u_s on the A lane and ends in the B lane heading -v."""
        lay, r = self.lay, self.rng
        if r.random() > 0.5:
            return None
        travel = float(ego_speeds.sum() * FRAME_INTERVAL_S)
        radius = max(6.0, lay.half_width_a + v0) + r.uniform(0.5, 2.5)
        for ub in lay.b_streets(ego_s0, ego_s0 + travel + 50):
            u_s = ub - LANE_WIDTH / 2 - radius
            if ego_s0 + 5 < u_s < ego_s0 + travel - 8:
                return ub, radius, u_s
        return None

    def _ego_path(self, s, v0, turn):
        """Ego along-path positions (F,) -> street-frame (u, v, heading relative to u)."""
        s = np.asarray(s, np.float64)
        if turn is None:
            return s, np.full_like(s, v0), np.zeros_like(s)
        _, radius, u_s = turn
        phi = np.clip((s - u_s) / radius, 0.0, np.pi / 2)
        beyond = np.maximum(s - u_s - radius * np.pi / 2, 0.0)
        u = np.where(s < u_s, s, u_s + radius * np.sin(phi))
        v = v0 - radius * (1 - np.cos(phi)) - beyond
        return u, v, -phi

    def plan(self):
        """-> (ego poses (F, 3) global x, y, yaw; list of Agents; street-frame (u range,
        v range) the ego sees)."""
        lay, r, F = self.lay, self.rng, self.F
        n_a = lay.lanes_a
        ego_lane_idx = int(r.integers(0, n_a))
        ego_lat = -(LANE_WIDTH / 2 + LANE_WIDTH * ego_lane_idx)
        ego_v0 = 0.0 if r.random() < 0.08 else r.uniform(3, 13)
        ego_speeds = speed_profile(r, F, ego_v0, 15.0)
        if ego_v0 == 0.0:
            ego_speeds[:] = 0.0
        ego_s0 = r.uniform(0, lay.block_b)
        turn = self._ego_turn(ego_s0, ego_speeds, ego_lat)
        if turn is not None:
            ego_speeds = np.minimum(ego_speeds, r.uniform(4.5, 7.0))
        travel = float(ego_speeds.sum() * FRAME_INTERVAL_S)
        u_lo, u_hi = ego_s0 - 75, ego_s0 + travel + 75
        agents, ego_s = [], None
        veh = lambda: self._new(vehicle_parts, VEHICLE)  # noqa: E731
        density = r.uniform(12, 35)  # mean free gap between vehicles
        for d in (1.0, -1.0):
            for lane_i in range(n_a):
                lane = Lane('a', 0.0, -d * (LANE_WIDTH / 2 + LANE_WIDTH * lane_i), d)
                s_range = (u_lo, u_hi) if d > 0 else (-u_hi - 60, -u_lo + 60)
                is_ego = d > 0 and lane_i == ego_lane_idx
                avoid = [(ego_s0 - EGO_LENGTH - 4, ego_s0 + EGO_LENGTH + 4)] if is_ego else []
                placed = self._fill_positions(*s_range, density, veh, avoid)
                v_lane = r.uniform(4, 13)
                a, e = self._lane_agents(
                    lane, placed, lambda: speed_profile(r, F, v_lane + r.uniform(-1, 1), 16),
                    with_ego=(ego_s0, ego_speeds) if is_ego else None)
                agents += a
                if is_ego:
                    ego_s = e
            # cyclists on the right edge line of the outer lane (trucks leave room)
            if r.random() < 0.8:
                lane = Lane('a', 0.0, -d * LANE_WIDTH * n_a, d)
                s_range = (u_lo, u_hi) if d > 0 else (-u_hi, -u_lo)
                placed = self._fill_positions(*s_range, r.uniform(20, 60),
                                              lambda: self._new(cyclist_parts, CYCLIST))
                agents += self._lane_agents(
                    lane, placed, lambda: speed_profile(r, F, r.uniform(3, 7), 8))[0]
            # parked cars, not at intersections
            if lay.parking_a:
                lane = Lane('a', 0.0, -d * (LANE_WIDTH * n_a + 1.3), d)
                placed = self._fill_positions(u_lo, u_hi, r.uniform(2, 15), veh)
                corner = lay.half_width_b + lay.sidewalk_b + 4
                b_us = lay.b_streets(u_lo - 100, u_hi + 100)
                placed = [(s, p) for s, p in placed if p[1][0] < 5.5 and
                          np.abs(b_us - s).min() > corner]
                agents += self._lane_agents(lane, placed, lambda: np.zeros(F))[0]
            agents += self._sidewalk_people(d, u_lo, u_hi)
        for ub in lay.b_streets(u_lo, u_hi):
            agents += self._cross_street(ub, ego_turn=turn is not None and ub == turn[0])
        u, v, rel_yaw = self._ego_path(ego_s, ego_lat, turn)
        x, y = lay.to_global(u, v)
        ego = np.stack([x, y, lay.theta + rel_yaw], -1)
        v_lo = min(-60.0, float(v.min()) - 60.0)
        return ego, agents, ((u_lo, u_hi), (v_lo, 60.0))

    def _sidewalk_people(self, side, u_lo, u_hi):
        """Pedestrians on the sidewalk of side ``-side`` of the A street: walking slots in both
        directions; some stand still (and walkers behind them wait)."""
        lay, r, F = self.lay, self.rng, self.F
        agents = []
        edge = lay.half_width_a
        slots = np.arange(edge + 1.4, edge + lay.sidewalk_a - 1.15, 0.6)
        ped = lambda: self._new(pedestrian_parts, PEDESTRIAN)  # noqa: E731
        for k, lat in enumerate(slots):
            d = 1.0 if (k + (side > 0)) % 2 == 0 else -1.0
            lane = Lane('a', 0.0, -side * lat, d)
            s_range = (u_lo, u_hi) if d > 0 else (-u_hi, -u_lo)
            placed = self._fill_positions(*s_range, r.uniform(6, 30), ped)
            v_slot = r.uniform(0.9, 1.6)
            agents += self._lane_agents(
                lane, placed, lambda: np.full(F, 0.0 if r.random() < 0.15 else
                                              max(0.5, v_slot + r.uniform(-0.2, 0.2))))[0]
        return agents

    def _cross_street(self, ub, ego_turn=False):
        """Vehicles, cyclists and pedestrians on a B street; approaching vehicles queue at the
        stop line of the ego street. ``ego_turn``: the ego turns right into this street, so its
        target lane holds no vehicles leaving the intersection ahead of it."""
        lay, r, F = self.lay, self.rng, self.F
        agents = []
        clear = lay.half_width_a + lay.sidewalk_a + 1.0
        veh = lambda: self._new(vehicle_parts, VEHICLE)  # noqa: E731
        for d in (1.0, -1.0):
            if r.random() < 0.25:
                continue
            lane = Lane('b', ub, d * (LANE_WIDTH / 2), d, stop_s=-clear)
            leaving_ok = not (ego_turn and d < 0)
            placed = self._fill_positions(-70, 70, r.uniform(8, 30), veh,
                                          avoid=[(-clear, clear if leaving_ok else 1e9)])
            v_lane = r.uniform(4, 11)
            agents += self._lane_agents(
                lane, placed, lambda: speed_profile(r, F, v_lane, 13))[0]
            if r.random() < 0.3:
                lane = Lane('b', ub, d * LANE_WIDTH, d, stop_s=-clear)
                placed = self._fill_positions(-60, 60, 40, lambda: self._new(cyclist_parts,
                                                                             CYCLIST),
                                              avoid=[(-clear, clear)])
                agents += self._lane_agents(
                    lane, placed, lambda: speed_profile(r, F, r.uniform(3, 6), 7))[0]
        # pedestrians on the B sidewalks wait at the curb of the ego street
        curb = lay.half_width_a + 0.6
        for side in (-1.0, 1.0):
            if r.random() < 0.4:
                continue
            d = float(r.choice([-1.0, 1.0]))
            lane = Lane('b', ub, side * (lay.half_width_b + 1.2), d, stop_s=-curb)
            placed = self._fill_positions(-60, 60, r.uniform(8, 25),
                                          lambda: self._new(pedestrian_parts, PEDESTRIAN),
                                          avoid=[(-curb, curb)])
            v_walk = r.uniform(0.9, 1.5)
            agents += self._lane_agents(lane, placed, lambda: np.full(F, v_walk))[0]
        return agents

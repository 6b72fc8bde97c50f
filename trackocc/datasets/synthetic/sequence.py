"""Generation of one synthetic sequence: world, traffic, per-frame voxels, sensors, files.

``generate_sequence`` is deterministic in (seed, split, seq). Labels, masks and points do
not depend on the image resolution (visibility rays use a fixed resolution); only the image
aspect ratio (the cameras' vertical field of view) changes ``mask_camera`` and ``infov``.
"""
import os
from dataclasses import dataclass

import numpy as np

from .agents import TrafficPlanner
from .cameras import LIDAR_MAX_RANGE, LIDAR_ORIGIN, frustum_mask, lidar_angles, make_rig
from ...structures.cameras import CAMERA_FOLDERS
from ...structures.occ_classes import CLASS_COLORS, FREE, OCC_TO_BOX_LABEL, SIGN
from ...structures.occ_grid import GRID_MIN, GRID_SHAPE, VOXEL_SIZE
from ...structures.occ_npz import OCC_DIR, occ_file_path
from ...structures.sample_index import make_sample_idx
from .constants import (CLASS_INTENSITY, FRAME_INTERVAL_S, GROUND_LAYER, LIDAR_FOLDER,
                        NUM_POINT_FEATS)
from .primitives import C_CLS, C_HX, C_HY, C_HZ, C_INST, C_X, C_Y, C_YAW, C_Z, place_parts
from .raster import ego_vector, paint_ground, paint_primitives
from .raycast import cast_lidar, render_camera
from .streets import sample_layout
from .world import IdAllocator, WorldBuilder
from .writer import write_jpeg, write_npz, write_points


@dataclass
class RenderConfig:
    """Sensor and rendering settings of the generator."""
    image_size: tuple = (480, 320)  # (W, H) of every camera image
    side_height: int = None  # shorter side-camera images (Waymo: 886 of 1280), None = same
    mask_ray_width: int = 480  # camera-visibility rays per image row (resolution independent)
    margin_voxels: int = 50  # render grid padding around the label grid in x and y (20 m)
    render_layers: int = 32  # render grid height in voxels (z up to 11.8 m)
    lidar_beams: int = 64
    lidar_azimuth: int = 1500
    jpeg_quality: int = 92
    shadows: bool = True  # sun shadows in the images (about +40% rendering time)


def _ego2global(pose, z):
    x, y, yaw = pose
    m = np.eye(4)
    m[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    m[:3, 3] = (x, y, z)
    return m


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def _to_list(m):
    return [[float(x) for x in row] for row in np.asarray(m)]


class SequenceGenerator:
    """Builds and writes all frames of sequence ``seq`` of split ``split`` under ``root``."""

    def __init__(self, root, split, seq, num_frames, seed, cfg: RenderConfig):
        self.root, self.split, self.seq, self.F, self.cfg = root, split, seq, num_frames, cfg
        self.rng = np.random.default_rng([int(seed), int(split), int(seq)])
        rng = self.rng
        self.layout = sample_layout(rng)
        ids = IdAllocator()
        self.ego_poses, self.agents, (u_range, v_range) = TrafficPlanner(
            self.layout, rng, ids, num_frames).plan()
        self.static = WorldBuilder(self.layout, rng, ids).build(u_range, v_range)
        w, h = cfg.image_size
        self.cams = make_rig(rng, w, h, cfg.side_height)
        self.infov = frustum_mask(self.cams)
        sun_az, sun_el = rng.uniform(-np.pi, np.pi), np.deg2rad(rng.uniform(25, 70))
        self.sun_global = np.array([np.cos(sun_az) * np.cos(sun_el),
                                    np.sin(sun_az) * np.cos(sun_el), np.sin(sun_el)])
        # per-sequence exposure and white balance of the cameras
        self.gain = rng.uniform(0.85, 1.1) * rng.uniform(0.95, 1.05, 3)
        self.t0 = int(1_500_000_000_000_000 + rng.integers(0, 10 ** 14))
        self.context_name = f'synthetic_{seed}_{split}_{seq:03d}'
        m = cfg.margin_voxels
        self.render_shape = (GRID_SHAPE[0] + 2 * m, GRID_SHAPE[1] + 2 * m, cfg.render_layers)
        self.gmin = np.array([GRID_MIN[0] - m * VOXEL_SIZE, GRID_MIN[1] - m * VOXEL_SIZE,
                              GRID_MIN[2]], np.float64)
        self.elev, self.azim = lidar_angles(cfg.lidar_beams, cfg.lidar_azimuth)

    # ------------------------------------------------------------------ per frame
    def voxelize(self, f):
        """-> (sem, inst) render-grid arrays of frame ``f`` and the ego vector."""
        ego = ego_vector(self.ego_poses[f], self.layout.ground_z)
        sem = np.full(self.render_shape, FREE, np.uint8)
        inst = np.zeros(self.render_shape, np.int32)
        paint_ground(sem, self.gmin, VOXEL_SIZE, ego, self.layout.params(), GROUND_LAYER)
        near = np.hypot(self.static[:, C_X] - ego[2], self.static[:, C_Y] - ego[3]) < 110
        paint_primitives(sem, inst, self.static[near], self.gmin, VOXEL_SIZE, ego)
        parts = [place_parts(a.parts, *a.poses[f, :2], self.layout.ground_z, a.poses[f, 2])
                 for a in self.agents
                 if np.hypot(a.poses[f, 0] - ego[2], a.poses[f, 1] - ego[3]) < 100]
        if parts:
            paint_primitives(sem, inst, np.concatenate(parts), self.gmin, VOXEL_SIZE, ego)
        return sem, inst, ego

    def render(self, sem, inst, ego):
        """-> (list of RGB images, mask_camera (200, 200, 16) uint8)."""
        cfg = self.cfg
        sun = self.sun_global.copy()
        c, s = ego[0], ego[1]
        sun[:2] = [c * sun[0] + s * sun[1], -s * sun[0] + c * sun[1]]
        vis = np.zeros(GRID_SHAPE, np.uint8)
        params = self.layout.params()
        m = cfg.margin_voxels
        images = []
        for cam in self.cams:
            img = np.zeros((cam.height, cam.width, 3), np.uint8)
            rot = np.ascontiguousarray(cam.cam2ego[:3, :3])
            org = np.ascontiguousarray(cam.cam2ego[:3, 3])
            same = cam.width == cfg.mask_ray_width
            render_camera(sem, inst, self.gmin, VOXEL_SIZE, m, org, rot, cam.intrinsics, sun,
                          ego, params, CLASS_COLORS, img, vis, True, same, cfg.shadows)
            if not same:  # visibility rays at a fixed resolution
                scale = cfg.mask_ray_width / cam.width
                dummy = np.zeros((max(1, round(cam.height * scale)), cfg.mask_ray_width, 3),
                                 np.uint8)
                render_camera(sem, inst, self.gmin, VOXEL_SIZE, m, org, rot,
                              cam.intrinsics * scale, sun, ego, params, CLASS_COLORS, dummy,
                              vis, False, True, False)
            images.append(np.clip(img * self.gain, 0, 255).astype(np.uint8))
        return images, vis

    def lidar(self, sem, ego):
        """-> points (N, 6) float32, mask_lidar (200, 200, 16) uint8."""
        n_rays = len(self.elev) * len(self.azim)
        noise = self.rng.normal(0, 0.02, n_rays)
        keep = self.rng.random(n_rays) > 0.05
        out = np.zeros((n_rays, NUM_POINT_FEATS), np.float32)
        vis = np.zeros(GRID_SHAPE, np.uint8)
        n = cast_lidar(sem, self.gmin, VOXEL_SIZE, self.cfg.margin_voxels,
                       np.asarray(LIDAR_ORIGIN, np.float64), self.elev, self.azim,
                       LIDAR_MAX_RANGE, noise, keep, self.layout.params(), ego, CLASS_INTENSITY,
                       out, vis)
        return out[:n], vis

    def boxes(self, f, ego, visible_ids):
        """cam_sync_instances of frame ``f``: instances with at least one visible voxel."""
        c, s, tx, ty = ego[0], ego[1], ego[2], ego[3]
        yaw_e = np.arctan2(s, c)
        out = []

        def add(inst, cls, x, y, z_bottom, size, yaw):
            dx, dy = x - tx, y - ty
            out.append(dict(
                bbox_3d=[float(c * dx + s * dy), float(-s * dx + c * dy), float(z_bottom),
                         float(size[0]), float(size[1]), float(size[2]),
                         float(_wrap(yaw - yaw_e))],
                bbox_label_3d=OCC_TO_BOX_LABEL[cls], instance_id=int(inst)))

        for a in self.agents:
            if a.inst in visible_ids:
                add(a.inst, a.cls, a.poses[f, 0], a.poses[f, 1], 0.0, a.size, a.poses[f, 2])
        for row in self.static[self.static[:, C_INST] > 0]:
            if int(row[C_INST]) in visible_ids and int(row[C_CLS]) == SIGN:
                add(int(row[C_INST]), SIGN, row[C_X], row[C_Y],
                    row[C_Z] - row[C_HZ] - self.layout.ground_z,
                    (2 * row[C_HX], 2 * row[C_HY], 2 * row[C_HZ]), row[C_YAW])
        out.sort(key=lambda d: d['instance_id'])
        return out

    def frame(self, f):
        """Build and write frame ``f`` -> its info dict."""
        cfg, m = self.cfg, self.cfg.margin_voxels
        idx = make_sample_idx(self.split, self.seq, f)
        sem, inst, ego = self.voxelize(f)
        images, mask_camera = self.render(sem, inst, ego)
        points, mask_lidar = self.lidar(sem, ego)
        lab = (slice(m, m + GRID_SHAPE[0]), slice(m, m + GRID_SHAPE[1]), slice(0, GRID_SHAPE[2]))
        semantics = np.ascontiguousarray(sem[lab])
        instances = np.ascontiguousarray(inst[lab])
        kitti = os.path.join(self.root, 'kitti_format', 'training')
        name = f'{idx:07d}'
        for cam, img in zip(self.cams, images):
            write_jpeg(os.path.join(kitti, CAMERA_FOLDERS[cam.name], name + '.jpg'), img,
                       cfg.jpeg_quality)
        write_points(os.path.join(kitti, LIDAR_FOLDER, name + '.bin'), points)
        write_npz(occ_file_path(os.path.join(self.root, OCC_DIR), self.split, self.seq, f), dict(
            semantics=semantics, instances=instances, mask_camera=mask_camera,
            mask_lidar=mask_lidar, infov=self.infov))
        seen = instances[(mask_camera > 0) & self.infov]
        return dict(
            sample_idx=idx,
            timestamp=self.t0 + int(round(f * FRAME_INTERVAL_S * 1e6)),
            context_name=self.context_name,
            ego2global=_to_list(_ego2global(self.ego_poses[f], self.layout.ground_z)),
            lidar_points=dict(lidar_path=name + '.bin', num_pts_feats=NUM_POINT_FEATS),
            images={cam.name: dict(img_path=name + '.jpg', height=cam.height, width=cam.width,
                                   cam2img=_to_list(cam.cam2img),
                                   lidar2cam=_to_list(cam.lidar2cam),
                                   lidar2img=_to_list(cam.lidar2img)) for cam in self.cams},
            cam_sync_instances=self.boxes(f, ego, set(np.unique(seen[seen > 0]).tolist())))

    def run(self, on_frame=None):
        """Write every frame -> list of info dicts (frame order)."""
        infos = []
        for f in range(self.F):
            infos.append(self.frame(f))
            if on_frame is not None:
                on_frame()
        return infos


def generate_sequence(root, split, seq, num_frames, seed, cfg=None, on_frame=None):
    """Generate and write one sequence under ``root`` -> list of its info dicts."""
    return SequenceGenerator(root, split, seq, num_frames, seed, cfg or RenderConfig()).run(
        on_frame)

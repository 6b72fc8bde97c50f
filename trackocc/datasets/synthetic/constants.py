"""Constants shared by the synthetic TrackOcc-Waymo generator and the data checker.

Grid, class table and camera names follow ``docs/data_contract.md``: the occupancy grid is
200 x 200 x 16 voxels of 0.4 m in the ego (= LiDAR) frame, x, y in [-40, 40) m, z in [-1, 5.4) m.
"""
import numpy as np

# ----------------------------------------------------------------------------- classes
OCC_CLASS_NAMES = (
    'GO', 'vehicle', 'pedestrian', 'sign', 'cyclist', 'trafficlight', 'pole',
    'constructioncone', 'bicycle', 'motorcycle', 'building', 'vegetation', 'treetrunk',
    'road', 'walkable', 'free')
NUM_CLASSES = len(OCC_CLASS_NAMES)  # 16
(GO, VEHICLE, PEDESTRIAN, SIGN, CYCLIST, TRAFFICLIGHT, POLE, CONE, BICYCLE, MOTORCYCLE,
 BUILDING, VEGETATION, TREETRUNK, ROAD, WALKABLE, FREE) = range(NUM_CLASSES)
#: classes tracked by TrackOcc (instance ids persistent over frames)
THING_CLASSES = (VEHICLE, PEDESTRIAN, CYCLIST)
#: classes that carry instance ids in the released voxels (signs have ids, but are not tracked)
INSTANCE_CLASSES = (VEHICLE, PEDESTRIAN, SIGN, CYCLIST)
#: mmdet3d Waymo box categories used by ``cam_sync_instances[*].bbox_label_3d``
BOX_CATEGORIES = {'Car': 0, 'Pedestrian': 1, 'Cyclist': 2, 'Sign': 3}
OCC_TO_BOX_LABEL = {VEHICLE: 0, PEDESTRIAN: 1, CYCLIST: 2, SIGN: 3}

#: RGB base colour of every class in the rendered images (index = class id; FREE unused)
CLASS_COLORS = np.array([
    (140, 125, 110),  # GO: warm grey general objects (bins, benches)
    (40, 70, 200),    # vehicle: blue
    (215, 40, 40),    # pedestrian: red
    (235, 225, 30),   # sign: yellow
    (240, 130, 20),   # cyclist: orange
    (30, 200, 200),   # trafficlight: cyan
    (165, 165, 175),  # pole: light grey
    (255, 80, 170),   # constructioncone: pink
    (130, 50, 170),   # bicycle: purple
    (200, 110, 210),  # motorcycle: violet
    (190, 150, 110),  # building: tan
    (45, 145, 45),    # vegetation: green
    (95, 75, 60),     # treetrunk: grey-brown
    (75, 75, 80),     # road: dark grey
    (180, 180, 160),  # walkable: light beige
    (0, 0, 0),        # free (never drawn)
], dtype=np.float64)
SKY_HORIZON = np.array((205, 220, 238), dtype=np.float64)
SKY_ZENITH = np.array((105, 150, 215), dtype=np.float64)

#: LiDAR intensity per class (roughly Waymo-like: retro-reflective signs bright)
CLASS_INTENSITY = np.array([
    0.15, 0.25, 0.12, 0.9, 0.2, 0.5, 0.3, 0.7, 0.2, 0.25,
    0.18, 0.1, 0.08, 0.06, 0.12, 0.0], dtype=np.float64)

# ----------------------------------------------------------------------------- grid
GRID_SHAPE = (200, 200, 16)
VOXEL_SIZE = 0.4
GRID_MIN = (-40.0, -40.0, -1.0)
GRID_MAX = (40.0, 40.0, 5.4)
#: ground top surface (the ground layer is voxel k = 2, z in [-0.2, 0.2))
GROUND_LAYER = 2
GROUND_TOP_Z = GRID_MIN[2] + VOXEL_SIZE * (GROUND_LAYER + 1)

# ----------------------------------------------------------------------------- sensors
CAMERA_NAMES = ('CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_SIDE_LEFT',
                'CAM_SIDE_RIGHT')
#: folder of each camera under ``kitti_format/training``
CAMERA_FOLDERS = {name: f'image_{i}' for i, name in enumerate(CAMERA_NAMES)}
LIDAR_FOLDER = 'velodyne'
NUM_POINT_FEATS = 6
FRAME_INTERVAL_S = 0.5
SPLITS = ('training', 'validation')  # split id 0 / 1
INFO_FILES = {0: 'waymo_infos_train_jpg.pkl', 1: 'waymo_infos_val_jpg.pkl'}


def sample_idx_of(split: int, seq: int, frame: int) -> int:
    """``sample_idx = split * 1e6 + seq * 1e3 + frame`` (Waymo kitti_format convention)."""
    if not (0 <= seq < 1000 and 0 <= frame < 1000 and split in (0, 1)):
        raise ValueError(f'sample_idx needs split in (0, 1), seq and frame in [0, 1000); '
                         f'got split={split} seq={seq} frame={frame}')
    return split * 1_000_000 + seq * 1000 + frame


def occ_relpath(split: int, seq: int, frame: int) -> str:
    """Path of a frame's voxel labels relative to the data root."""
    return f'pano_voxel04/{SPLITS[split]}/{seq:03d}/{frame:03d}_04.npz'

"""The occupancy class table of TrackOcc-Waymo: names, thing / stuff split, free class.

Index = class id, as stored in the ``semantics`` arrays of the voxel labels
(``docs/data_contract.md``). numpy only.
"""
from typing import Dict, Tuple

import numpy as np

#: class names, index = class id; the last one (15) is free space
OCC_CLASS_NAMES: Tuple[str, ...] = (
    'GO', 'vehicle', 'pedestrian', 'sign', 'cyclist', 'trafficlight', 'pole',
    'constructioncone', 'bicycle', 'motorcycle', 'building', 'vegetation', 'treetrunk',
    'road', 'walkable', 'free')
NUM_CLASSES = len(OCC_CLASS_NAMES)  # 16
(GO, VEHICLE, PEDESTRIAN, SIGN, CYCLIST, TRAFFICLIGHT, POLE, CONE, BICYCLE, MOTORCYCLE,
 BUILDING, VEGETATION, TREETRUNK, ROAD, WALKABLE, FREE) = range(NUM_CLASSES)
#: the empty-space class (never an object, never drawn)
FREE_CLASS = FREE
#: classes tracked as instances by TrackOcc (instance ids persist over frames)
THING_CLASSES: Tuple[int, ...] = (VEHICLE, PEDESTRIAN, CYCLIST)
#: classes predicted as stuff (one segment per class): all but the things and free space
STUFF_CLASSES: Tuple[int, ...] = tuple(c for c in range(NUM_CLASSES)
                                       if c not in THING_CLASSES and c != FREE_CLASS)
#: classes that carry instance ids in the released voxels (signs have ids, but are not tracked)
INSTANCE_CLASSES: Tuple[int, ...] = (VEHICLE, PEDESTRIAN, SIGN, CYCLIST)

#: mmdet3d Waymo box categories of ``cam_sync_instances[*].bbox_label_3d``
BOX_CATEGORIES: Dict[str, int] = {'Car': 0, 'Pedestrian': 1, 'Cyclist': 2, 'Sign': 3}
#: occupancy class -> box category, and back
OCC_TO_BOX_LABEL: Dict[int, int] = {VEHICLE: 0, PEDESTRIAN: 1, CYCLIST: 2, SIGN: 3}
BOX_LABEL_TO_OCC: Dict[int, int] = {box: occ for occ, box in OCC_TO_BOX_LABEL.items()}

#: (16, 3) float64 RGB colour of every class (synthetic camera images and the occupancy
#: renders; row 15, free, is never drawn)
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
CLASS_COLORS.flags.writeable = False

"""The five Waymo cameras: names in network-input order and their image folders. Pure Python."""
from typing import Dict, Tuple

#: camera names in the order of the network input (and of ``image_0`` ... ``image_4``)
CAMERA_NAMES: Tuple[str, ...] = ('CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT',
                                 'CAM_SIDE_LEFT', 'CAM_SIDE_RIGHT')
#: image folder of each camera under ``kitti_format/training``
CAMERA_FOLDERS: Dict[str, str] = {name: f'image_{i}' for i, name in enumerate(CAMERA_NAMES)}
#: left-to-right order of the cameras as seen from the vehicle (for side-by-side displays)
SPATIAL_CAMERA_ORDER: Tuple[str, ...] = ('CAM_SIDE_LEFT', 'CAM_FRONT_LEFT', 'CAM_FRONT',
                                         'CAM_FRONT_RIGHT', 'CAM_SIDE_RIGHT')

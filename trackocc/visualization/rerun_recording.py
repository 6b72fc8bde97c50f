"""A Rerun recording (``.rrd``) of one occupancy sequence, to browse with ``rerun OUT.rrd``.

Entity layout (``world`` is the ego frame of the first recorded frame, x forward, z up)::

    world                           AnnotationContext: class id -> name, palette colour
    world/ego                       Transform3D: ego pose of the frame (axes drawn)
    world/ego/vehicle               Boxes3D: the ego vehicle (static)
    world/ego/cameras/<CAM>         Transform3D (camera -> ego) + Pinhole (intrinsics)
    world/ego/cameras/<CAM>/image   EncodedImage: the camera's JPEG as stored
    world/ego_trajectory            LineStrips3D: ego positions up to the frame
    world/ego/{gt,pred}/stuff       voxels without instance id, coloured by class
    world/ego/{gt,pred}/things      voxels with an instance id, coloured by the id (the same
                                    colour in every frame) + component ``instance_id``
    world/ego/{gt,pred}/labels      Points3D above each instance: '<class> <id>'

Timelines: ``frame`` (sequence: the frame number) and ``timestamp`` (the info's microseconds).
Voxels are ``Boxes3D`` (``style='boxes'``) or ``Points3D`` (``style='points'``) at voxel
centres; every class id carries its name through the annotation context. A layer missing from
a frame is logged empty (no prediction) or cleared (no cameras) at that frame, so nothing of an
earlier frame stays on screen.
"""
import io
import os
import os.path as osp
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import rerun as rr
import rerun.blueprint as rrb
from rerun import error_utils

from trackocc.structures import GRID_MIN, SPATIAL_CAMERA_ORDER, VOXEL_SIZE, voxel_centres
from trackocc.utils.output_files import temp_path
from .palette import class_colors, class_names, instance_colors

VOXEL_STYLES = ('boxes', 'points')
#: rough extent of the ego vehicle (Waymo's frame: origin at the rear axle on the ground)
EGO_BOX = dict(centers=[[1.4, 0.0, 0.8]], half_sizes=[[2.4, 1.0, 0.8]])


@dataclass
class CameraView:
    """One camera of a frame.

    Args:
        name: e.g. 'CAM_FRONT'.
        img_path: the image file (sent as stored, JPEG or PNG).
        cam2img: (3, 3), (3, 4) or (4, 4) intrinsics, top-left 3x3 used.
        lidar2cam: (4, 4) ego (= LiDAR) -> OpenCV camera frame (x right, y down, z forward).
    """
    name: str
    img_path: str
    cam2img: np.ndarray
    lidar2cam: np.ndarray


@dataclass
class RecordingFrame:
    """What one frame of a recording shows; absent parts are None / empty.

    Args:
        frame_idx: frame number (the ``frame`` timeline).
        timestamp_us: the info's ``timestamp`` in microseconds (the ``timestamp`` timeline).
        ego2global: (4, 4) ego pose; None in every frame when no info is at hand.
        cameras: the frame's cameras.
        gt, pred: ``(semantics, instances)``, two (X, Y, Z) integer grids; instance 0 = none.
        source: where the frame came from, for error messages.
    """
    frame_idx: int
    timestamp_us: Optional[int] = None
    ego2global: Optional[np.ndarray] = None
    cameras: Sequence[CameraView] = field(default_factory=list)
    gt: Optional[Tuple[np.ndarray, np.ndarray]] = None
    pred: Optional[Tuple[np.ndarray, np.ndarray]] = None
    source: str = ''


class RecordingInputError(ValueError):
    """A frame handed to the recorder is malformed (message names the frame and the problem)."""


def occupied_layers(semantics: np.ndarray, instances: np.ndarray, free_class: int,
                    num_classes: int, where: str = '') -> Dict[str, np.ndarray]:
    """Split a panoptic grid into the drawn voxels.

    Args:
        semantics, instances: (X, Y, Z) integer grids (instance 0 = none).
        free_class: the class never drawn.
        num_classes: class ids must lie in [0, num_classes).

    Returns:
        dict of ``stuff_ijk`` (S, 3), ``stuff_cls`` (S,), ``thing_ijk`` (T, 3),
        ``thing_cls`` (T,), ``thing_ids`` (T,), all int64 in C order of the grid.
    """
    semantics = np.asarray(semantics)
    instances = np.asarray(instances)
    if semantics.ndim != 3 or semantics.shape != instances.shape:
        raise RecordingInputError(f'{where}: semantics {semantics.shape} and instances '
                                  f'{instances.shape} must be the same (X, Y, Z) grid')
    for name, arr in (('semantics', semantics), ('instances', instances)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise RecordingInputError(f'{where}: {name} has dtype {arr.dtype}, expected integers')
    if semantics.size and (semantics.min() < 0 or semantics.max() >= num_classes):
        raise RecordingInputError(f'{where}: semantics holds class ids in [{semantics.min()}, '
                                  f'{semantics.max()}], expected [0, {num_classes})')
    occupied = semantics != free_class
    things = occupied & (instances > 0)
    stuff = occupied & ~things
    stuff_ijk = np.argwhere(stuff)
    thing_ijk = np.argwhere(things)
    return dict(stuff_ijk=stuff_ijk, stuff_cls=semantics[stuff].astype(np.int64),
                thing_ijk=thing_ijk, thing_cls=semantics[things].astype(np.int64),
                thing_ids=instances[things].astype(np.int64))


def instance_labels(centres: np.ndarray, classes: np.ndarray, ids: np.ndarray,
                    names: Sequence[str], lift: float) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """One label per instance id: above the top of its voxels, '<majority class> <id>'.

    Args:
        centres: (T, 3) voxel centres; classes, ids: (T,) int.
        lift: metres above the highest voxel centre.

    Returns:
        ids (I,) ascending, positions (I, 3) float32, texts (I strings).
    """
    uniq, inverse = np.unique(ids, return_inverse=True)
    if not len(uniq):
        return uniq, np.zeros((0, 3), np.float32), []
    count = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
    pos = np.stack([np.bincount(inverse, centres[:, a], len(uniq)) / count for a in (0, 1)], 1)
    top = np.full(len(uniq), -np.inf)
    np.maximum.at(top, inverse, centres[:, 2])
    votes = np.zeros((len(uniq), len(names)), np.int64)
    np.add.at(votes, (inverse, classes), 1)
    majority = votes.argmax(1)
    positions = np.concatenate([pos, (top + lift)[:, None]], 1).astype(np.float32)
    texts = [f'{names[c]} {i}' for c, i in zip(majority, uniq)]
    return uniq, positions, texts


def _matrix(value, shapes: Sequence[Tuple[int, int]], what: str, where: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape not in shapes or not np.isfinite(arr).all():
        raise RecordingInputError(f'{where}: {what} must be a finite matrix of shape '
                                  f'{" or ".join(map(str, shapes))}, got {arr.shape}')
    return arr


def _pose4(value, what: str, where: str) -> np.ndarray:
    arr = _matrix(value, [(4, 4), (3, 4)], what, where)
    out = np.eye(4)
    out[:3] = arr[:3]
    return out


def _read_image(path: str, where: str) -> Tuple[bytes, str, Tuple[int, int]]:
    """Bytes, media type and (W, H) of an image file (the header is decoded, not the pixels)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except FileNotFoundError:
        raise FileNotFoundError(f'{where}: camera image {path} not found') from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, size = im.format, im.size
    except (UnidentifiedImageError, OSError) as err:
        raise RecordingInputError(f'{where}: camera image {path} is not a readable image '
                                  f'({err})') from None
    media = Image.MIME.get(fmt)
    if media is None:
        raise RecordingInputError(f'{where}: camera image {path} has format {fmt} without a '
                                  f'media type')
    return data, media, size


class SequenceRecorder:
    """Write one sequence's :class:`RecordingFrame` s to an ``.rrd`` file.

    Use as a context manager; the file appears (atomically, by rename) only when the block
    ends without an error and at least one frame was added::

        with SequenceRecorder('out.rrd', name='validation 000') as rec:
            for frame in frames:
                rec.add(frame)

    Args:
        out_file: the ``.rrd`` path (folders are created).
        name: start of the recording id (the viewer's recording list shows it).
        style: 'boxes' (solid voxel cubes) or 'points' (one point per voxel centre).
        grid_min, voxel_size: occupancy grid geometry (``docs/data_contract.md``).
    """

    def __init__(self, out_file: str, name: str, style: str = 'boxes',
                 grid_min: Sequence[float] = GRID_MIN, voxel_size: float = VOXEL_SIZE,
                 application_id: str = 'trackocc'):
        if style not in VOXEL_STYLES:
            raise ValueError(f'style must be one of {VOXEL_STYLES}, got {style!r}')
        self.out_file = osp.abspath(out_file)
        self.name = name
        self.style = style
        self.grid_min = tuple(float(v) for v in grid_min)
        self.voxel_size = float(voxel_size)
        self.application_id = application_id
        self.names = class_names()
        self.colors = class_colors()
        self.free_class = len(self.names) - 1
        self.num_frames = 0
        self.voxel_counts: List[Dict[str, int]] = []
        self._world_from_global: Optional[np.ndarray] = None
        self._has_pose: Optional[bool] = None
        self._trajectory: List[np.ndarray] = []
        self._camera_names: List[str] = []
        self._layers = set()
        self._rec = None
        self._tmp = None

    # -- file handling --------------------------------------------------------------------
    def __enter__(self) -> 'SequenceRecorder':
        folder = osp.dirname(self.out_file)
        if osp.isdir(self.out_file):
            raise IsADirectoryError(f'{self.out_file} is a folder, expected an .rrd file path')
        os.makedirs(folder, exist_ok=True)
        self._tmp = temp_path(self.out_file)
        # rerun only warns about malformed data unless in strict mode: every problem is an
        # exception while this recorder writes
        self._strict_before = error_utils.strict_mode()
        rr.set_strict_mode(True)
        try:
            self._rec = rr.new_recording(self.application_id,
                                         recording_id=f'{self.name} {uuid.uuid4()}')
            self._rec.save(self._tmp)
            self._log('world', rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
            infos = [rr.AnnotationInfo(id=i, label=n, color=tuple(int(c) for c in rgb))
                     for i, (n, rgb) in enumerate(zip(self.names, self.colors))]
            self._log('world', rr.AnnotationContext(infos), static=True)
            self._log('world/ego/vehicle', rr.Boxes3D(**EGO_BOX, colors=[(90, 90, 90)],
                                                      labels=['ego']), static=True)
        except BaseException:
            self._close(keep=False)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._close(keep=False)
            return
        if not self.num_frames:
            self._close(keep=False)
            raise ValueError(f'{self.out_file}: no frame was added; an empty recording is not '
                             f'written')
        self._rec.send_blueprint(self._blueprint())
        self._close(keep=True)

    def _close(self, keep: bool) -> None:
        """Flush and close the recording; rename it onto ``out_file`` or delete it."""
        rec, self._rec = self._rec, None
        try:
            if rec is not None:
                rec.flush(blocking=True)
                rec.disconnect()
            if keep:
                with open(self._tmp, 'rb+') as handle:
                    os.fsync(handle.fileno())
                os.replace(self._tmp, self.out_file)
        finally:
            rr.set_strict_mode(self._strict_before)
            if osp.exists(self._tmp):
                os.remove(self._tmp)

    def _log(self, path: str, entity, *extra, static: bool = False) -> None:
        self._rec.log(path, entity, *extra, static=static)

    # -- frames ---------------------------------------------------------------------------
    def add(self, frame: RecordingFrame) -> Dict[str, int]:
        """Log one frame (frames in time order). Returns its drawn voxel counts per layer."""
        if self._rec is None:
            raise RuntimeError('SequenceRecorder.add outside its with-block')
        where = frame.source or f'frame {frame.frame_idx}'
        self._rec.set_time_sequence('frame', int(frame.frame_idx))
        if frame.timestamp_us is not None:  # nanoseconds since the epoch: shown as a date
            self._rec.set_time_nanos('timestamp', int(frame.timestamp_us) * 1000)
        self._log_pose(frame, where)
        self._log_cameras(frame, where)
        counts = {}
        for layer in ('gt', 'pred'):
            grids = getattr(frame, layer)
            if grids is None and layer not in self._layers:
                continue  # nothing of it on screen yet
            self._layers.add(layer)
            counts.update(self._log_voxels(layer, grids, f'{where} ({layer})'))
        self.num_frames += 1
        self.voxel_counts.append(counts)
        return counts

    def _log_pose(self, frame: RecordingFrame, where: str) -> None:
        has_pose = frame.ego2global is not None
        if self._has_pose is None:
            self._has_pose = has_pose
        elif has_pose != self._has_pose:
            raise RecordingInputError(f'{where}: ego2global given for some frames of the '
                                      f'sequence but not for others')
        pose = np.eye(4)
        if has_pose:
            ego2global = _pose4(frame.ego2global, 'ego2global', where)
            if self._world_from_global is None:
                self._world_from_global = np.linalg.inv(ego2global)
            pose = self._world_from_global @ ego2global
        self._log('world/ego', rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3],
                                              axis_length=2.0))
        if has_pose:
            self._trajectory.append(pose[:3, 3].astype(np.float32))
            self._log('world/ego_trajectory',
                      rr.LineStrips3D([np.stack(self._trajectory)], colors=[(255, 120, 0)],
                                      radii=[0.15]))

    def _log_cameras(self, frame: RecordingFrame, where: str) -> None:
        names = [cam.name for cam in frame.cameras]
        for stale in sorted(set(self._camera_names) - set(names)):
            self._log(f'world/ego/cameras/{stale}', rr.Clear(recursive=True))
        for cam in frame.cameras:
            path = f'world/ego/cameras/{cam.name}'
            intr = _matrix(cam.cam2img, [(3, 3), (3, 4), (4, 4)], f'{cam.name} cam2img', where)
            cam2ego = np.linalg.inv(_pose4(cam.lidar2cam, f'{cam.name} lidar2cam', where))
            data, media, size = _read_image(cam.img_path, where)
            self._log(path, rr.Transform3D(translation=cam2ego[:3, 3], mat3x3=cam2ego[:3, :3]),
                      rr.Pinhole(image_from_camera=intr[:3, :3], resolution=size,
                                 camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=2.0))
            self._log(f'{path}/image', rr.EncodedImage(contents=data, media_type=media))
            if cam.name not in self._camera_names:
                self._camera_names.append(cam.name)

    def _voxels(self, centres: np.ndarray, colors: np.ndarray, classes: np.ndarray):
        if self.style == 'boxes':
            half = 0.5 * self.voxel_size
            return rr.Boxes3D(centers=centres, half_sizes=[(half, half, half)], colors=colors,
                              class_ids=classes, fill_mode='solid', show_labels=False)
        return rr.Points3D(centres, radii=[0.5 * self.voxel_size], colors=colors,
                           class_ids=classes, show_labels=False)

    def _log_voxels(self, layer: str, grids, where: str) -> Dict[str, int]:
        """Log a layer's voxels and labels; ``grids`` None logs them empty (a frame without
        this layer shows nothing of it)."""
        if grids is None:
            none = np.zeros((0, 3), np.int64)
            parts = dict(stuff_ijk=none, stuff_cls=none[:, 0], thing_ijk=none,
                         thing_cls=none[:, 0], thing_ids=none[:, 0])
        else:
            parts = occupied_layers(grids[0], grids[1], self.free_class, len(self.names),
                                    where)
        root = f'world/ego/{layer}'
        stuff_xyz = voxel_centres(parts['stuff_ijk'], self.grid_min,
                                  self.voxel_size).astype(np.float32)
        self._log(f'{root}/stuff', self._voxels(stuff_xyz, self.colors[parts['stuff_cls']],
                                                parts['stuff_cls']))
        thing_xyz = voxel_centres(parts['thing_ijk'], self.grid_min,
                                  self.voxel_size).astype(np.float32)
        self._log(f'{root}/things',
                  self._voxels(thing_xyz, instance_colors(parts['thing_ids']),
                               parts['thing_cls']),
                  rr.AnyValues(instance_id=parts['thing_ids']))
        ids, positions, texts = instance_labels(thing_xyz, parts['thing_cls'],
                                                parts['thing_ids'], self.names,
                                                lift=self.voxel_size)
        self._log(f'{root}/labels', rr.Points3D(positions, labels=texts,
                                                colors=instance_colors(ids),
                                                radii=[0.5 * self.voxel_size], show_labels=True))
        return {f'{layer}/stuff': len(stuff_xyz), f'{layer}/things': len(thing_xyz),
                f'{layer}/instances': len(ids)}

    def _blueprint(self):
        """3D views of gt and prediction side by side over the camera images (left to right
        as seen from the vehicle)."""
        views = []
        for layer, title in (('gt', 'ground truth'), ('pred', 'prediction')):
            if layer in self._layers:
                others = [f'- /world/ego/{o}/**' for o in ('gt', 'pred') if o != layer]
                views.append(rrb.Spatial3DView(origin='world', name=title,
                                               contents=['+ /world/**', *others]))
        order = {name: i for i, name in enumerate(SPATIAL_CAMERA_ORDER)}
        cams = sorted(self._camera_names, key=lambda n: (order.get(n, len(order)), n))
        rows = [rrb.Horizontal(*views)] if views else []
        if cams:
            rows.append(rrb.Horizontal(*[rrb.Spatial2DView(origin=f'world/ego/cameras/{n}',
                                                           name=n) for n in cams]))
        return rrb.Blueprint(rrb.Vertical(*rows, row_shares=[3, 1][:len(rows)]),
                             collapse_panels=False)

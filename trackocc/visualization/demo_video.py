"""Demo video of a streamed sequence, in the style of the TrackOcc demo: the five camera
images on top, below them an isometric 3D view of the predicted voxels in which every tracked
instance has the colour of its track id (the same colour = the same instance, across space
and time) and stuff its class colour, optionally the ground truth beside it.

Frames are composed from the package's renderers (:func:`render_isometric`,
:func:`camera_strip`, :func:`legend_panel`) and encoded with imageio's FFMPEG plugin (the
ffmpeg binary of ``imageio-ffmpeg``) as H.264 MP4, yuv420p, and/or as a GIF
(:func:`write_gif`). Files appear only when complete (temporary file + ``os.replace``).
"""
import os
import os.path as osp
from typing import List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..structures.occ_classes import FREE_CLASS
from ..utils.output_files import temp_path
from .isometric_render import render_isometric
from .layout import (blank, camera_strip, legend_panel, read_camera_image, stack,
                     with_title)
from .occupancy_visualizer import (OccupancyVisualizer, occ_arrays, single_frame,
                                   visibility_mask)
from .palette import class_colors, class_names
from .sequence_gif import write_gif

#: how voxels outside the camera-visibility mask are drawn
INVISIBLE_MODES = ('fade', 'hide', 'show')


class DemoFrame(NamedTuple):
    """What one video frame shows. Grids are (X, Y, Z) int arrays; ``*_instances`` hold
    track / instance ids (0 = stuff). ``visible``: (X, Y, Z) bool camera-visibility mask or
    None. ``cam_images``: RGB images named by ``cam_names`` (any order)."""
    pred_semantics: np.ndarray
    pred_instances: np.ndarray
    gt_semantics: Optional[np.ndarray] = None
    gt_instances: Optional[np.ndarray] = None
    visible: Optional[np.ndarray] = None
    cam_images: Sequence[np.ndarray] = ()
    cam_names: Sequence[str] = ()
    title: str = ''


class DemoFrameRenderer:
    """Composes :class:`DemoFrame` s into RGB video frames of one constant size.

    Layout, top to bottom: title; camera strip (left to right as seen from the car); the 3D
    view of the prediction (and of the ground truth to its right); a class legend on the right.

    Args:
        unit, height: isometric pixels per voxel step horizontally / vertically (even
            ``unit``; 2 and 3 give 801 x 449 pixels per view of a 200 x 200 x 16 grid).
        instance_tint: 1 colours instance voxels by their id alone; lower values blend in the
            class colour.
        invisible: voxels outside ``visible``: 'fade' (towards grey, as the other renders),
            'hide' (left out: what the metric scores) or 'show' (drawn as the rest).
        legend: add the class legend.
        free_class: the 'free' class id (never drawn).
    """

    def __init__(self, unit: int = 2, height: int = 3, instance_tint: float = 1.0,
                 invisible: str = 'fade', legend: bool = True,
                 free_class: int = FREE_CLASS) -> None:
        if invisible not in INVISIBLE_MODES:
            raise ValueError(f'DemoFrameRenderer: invisible must be one of {INVISIBLE_MODES}, '
                             f'got {invisible!r}')
        if not 0.0 <= instance_tint <= 1.0:
            raise ValueError(f'DemoFrameRenderer: instance_tint must be in [0, 1], got '
                             f'{instance_tint}')
        self.unit = int(unit)
        self.height = int(height)
        self.instance_tint = float(instance_tint)
        self.invisible = invisible
        self.free_class = int(free_class)
        self._legend = self._legend_panel() if legend else None

    def _legend_panel(self) -> np.ndarray:
        keep = [c for c in range(len(class_names())) if c != self.free_class]
        notes = ('things: one colour', ' per track id, kept', ' over the frames')
        if self.invisible == 'fade':
            notes += ('faded: not seen', ' by the cameras')
        return legend_panel([class_names()[c] for c in keep], class_colors()[keep], notes)

    def view(self, semantics: np.ndarray, instances: Optional[np.ndarray],
             visible: Optional[np.ndarray], title: str) -> np.ndarray:
        """Titled isometric view of one grid; the title counts its instances."""
        vis = None if self.invisible == 'show' else visible
        img = render_isometric(semantics, instances, vis, free_class=self.free_class,
                               unit=self.unit, height=self.height,
                               instance_tint=self.instance_tint,
                               hide_invisible=self.invisible == 'hide')
        count = 0
        if instances is not None:
            inst = np.asarray(instances)
            if vis is not None and self.invisible == 'hide':
                inst = inst[np.asarray(vis, bool)]
            count = int(np.unique(inst[inst > 0]).size)
        return with_title(img, f'{title} ({count} {"id" if count == 1 else "ids"})')

    def render(self, frame: DemoFrame) -> np.ndarray:
        """(H, W, 3) uint8 RGB video frame of ``frame``."""
        views = [self.view(frame.pred_semantics, frame.pred_instances, frame.visible,
                           'prediction: tracks by id')]
        if frame.gt_semantics is not None:
            views.append(self.view(frame.gt_semantics, frame.gt_instances, frame.visible,
                                   'ground truth: instances by id'))
        panels = stack(views, axis=1, gap=12)
        rows = []
        if len(frame.cam_images):
            if len(frame.cam_names) != len(frame.cam_images):
                raise ValueError(f'DemoFrameRenderer: {len(frame.cam_images)} camera images '
                                 f'but {len(frame.cam_names)} camera names')
            rows.append(camera_strip(list(frame.cam_images), list(frame.cam_names),
                                     panels.shape[1]))
        rows.append(panels)
        body = stack(rows, axis=0, gap=8)
        if self._legend is not None:
            body = stack([body, self._legend], axis=1, gap=12)
        return with_title(body, frame.title or 'TrackOcc', font_scale=0.7, thickness=2)


def demo_frame(data_sample, with_gt: bool = False, cameras: bool = True,
               cam_width: int = 480, backend_args: Optional[dict] = None,
               name: str = 'TrackOcc') -> DemoFrame:
    """The :class:`DemoFrame` of a streamed frame (an ``OccDataSample`` with ``pred_occ``, as
    ``TrackOcc.predict`` leaves it, or a TrackDataSample of one frame).

    The visibility mask is the ground truth's ``mask_camera & infov`` when the frame has
    ``gt_occ`` (also without ``with_gt``); camera images are read from metainfo ``img_path``
    (decoded at about ``cam_width`` pixels wide) when ``cameras``.
    """
    frame = single_frame(data_sample)
    pred = occ_arrays(frame, 'pred_occ')
    if pred is None or 'instances' not in pred:
        raise ValueError('demo_frame: the frame has no pred_occ with semantics and instances '
                         '(run the model on it first)')
    gt = occ_arrays(frame, 'gt_occ')
    if with_gt and gt is None:
        raise ValueError(f'demo_frame: {OccupancyVisualizer.frame_title(frame)} has no gt_occ '
                         '(the test pipeline loads it with LoadPanopticOccupancy)')
    images, names = [], []
    if cameras:
        paths = frame.metainfo.get('img_path') or []
        paths = [paths] if isinstance(paths, str) else list(paths)
        names = list(frame.metainfo.get('cam_names') or
                     [f'camera {n}' for n in range(len(paths))])
        images = [read_camera_image(p, (cam_width, cam_width), backend_args) for p in paths]
    return DemoFrame(
        pred_semantics=pred['semantics'], pred_instances=pred['instances'],
        gt_semantics=gt['semantics'] if with_gt else None,
        gt_instances=gt.get('instances') if with_gt else None,
        visible=visibility_mask(gt), cam_images=images, cam_names=names,
        title=OccupancyVisualizer.frame_title(frame, name))


def pad_to_even(img: np.ndarray, color=(255, 255, 255)) -> np.ndarray:
    """``img`` padded with one row / column of ``color`` at the bottom / right where its
    height / width is odd (H.264 in yuv420p needs even sizes)."""
    pad_h, pad_w = img.shape[0] % 2, img.shape[1] % 2
    if not (pad_h or pad_w):
        return img
    out = blank(img.shape[0] + pad_h, img.shape[1] + pad_w, color)
    out[:img.shape[0], :img.shape[1]] = img
    return out


def _temp_path(out_file: str) -> str:
    """:func:`temp_path` with ``out_file``'s extension (the encoders choose the format by
    it); its folder is created."""
    out_file = osp.abspath(out_file)
    os.makedirs(osp.dirname(out_file), exist_ok=True)
    return temp_path(out_file, keep_suffix=True)


class DemoVideoWriter:
    """Writes RGB frames to an H.264 MP4 (and/or a GIF) as they come; a context manager.

    The first frame fixes the size (padded to even width and height); later frames of another
    size are scaled to it. On leaving the ``with`` block normally the files are moved into
    place; after an exception the temporary files are removed and nothing is written.

    Args:
        mp4_file: the ``.mp4`` path, or None for no video.
        gif_file: the ``.gif`` path, or None for no GIF.
        fps: frames per second (the data's frames are 0.5 s apart: 2 plays in real time).
        crf: x264 constant rate factor (0-51, lower = better; 18-23 is visually clean).
        gif_max_width: GIF frames wider than this are scaled down (None keeps the size).
    """

    def __init__(self, mp4_file: Optional[str], gif_file: Optional[str] = None,
                 fps: float = 2.0, crf: int = 20,
                 gif_max_width: Optional[int] = 960) -> None:
        if mp4_file is None and gif_file is None:
            raise ValueError('DemoVideoWriter: give an MP4 and/or a GIF file')
        for path, ext in ((mp4_file, '.mp4'), (gif_file, '.gif')):
            if path is not None and not str(path).lower().endswith(ext):
                raise ValueError(f'DemoVideoWriter: {path} must end with {ext}')
        if not fps > 0:
            raise ValueError(f'DemoVideoWriter: fps must be > 0, got {fps}')
        if not 0 <= int(crf) <= 51:
            raise ValueError(f'DemoVideoWriter: crf must be in [0, 51], got {crf}')
        self.mp4_file, self.gif_file = mp4_file, gif_file
        self.fps, self.crf, self.gif_max_width = float(fps), int(crf), gif_max_width
        self.size: Optional[Tuple[int, int]] = None  # (H, W) of the written frames
        self.num_frames = 0
        self._writer = None
        self._mp4_tmp: Optional[str] = None
        self._gif_frames: List[np.ndarray] = []

    def __enter__(self) -> 'DemoVideoWriter':
        if self.mp4_file is not None:
            import imageio.v2 as imageio
            self._mp4_tmp = _temp_path(self.mp4_file)
            # macro_block_size=2: frames are padded to even sizes here, not rescaled by ffmpeg
            self._writer = imageio.get_writer(
                self._mp4_tmp, format='FFMPEG', mode='I', fps=self.fps, codec='libx264',
                pixelformat='yuv420p', quality=None, macro_block_size=2,
                ffmpeg_log_level='error',
                output_params=['-crf', str(self.crf), '-preset', 'medium',
                               '-movflags', '+faststart'])
        return self

    def add(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f'DemoVideoWriter: frames must be (H, W, 3) uint8 RGB, got '
                             f'{frame.dtype} array of shape {frame.shape}')
        frame = pad_to_even(frame)
        if self.size is None:
            self.size = frame.shape[:2]
        elif frame.shape[:2] != self.size:
            frame = cv2.resize(frame, (self.size[1], self.size[0]),
                               interpolation=cv2.INTER_AREA)
        if self._writer is not None:
            self._writer.append_data(frame)
        if self.gif_file is not None:
            self._gif_frames.append(frame)
        self.num_frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is not None:
                return
            if self.num_frames == 0:
                raise ValueError(f'DemoVideoWriter: no frames to write to '
                                 f'{self.mp4_file or self.gif_file}')
            if self.gif_file is not None:
                gif_tmp = _temp_path(self.gif_file)
                try:
                    write_gif(self._gif_frames, gif_tmp, duration=1.0 / self.fps,
                              max_width=self.gif_max_width)
                    os.replace(gif_tmp, self.gif_file)
                finally:
                    if osp.exists(gif_tmp):
                        os.remove(gif_tmp)
            if self._mp4_tmp is not None:
                os.replace(self._mp4_tmp, self.mp4_file)
        finally:
            self._gif_frames = []
            if self._mp4_tmp is not None and osp.exists(self._mp4_tmp):
                os.remove(self._mp4_tmp)

"""MMEngine visualizer of 4D panoptic occupancy frames (ground truth | prediction)."""
import os.path as osp
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import mmcv
import numpy as np
from mmengine.logging import print_log
from mmengine.visualization import Visualizer

from trackocc.registry import VISUALIZERS

from ..structures.occ_classes import FREE_CLASS
from ..structures.sample_index import split_sample_idx
from .bev_render import render_bev
from .isometric_render import render_isometric
from .layout import (camera_strip, legend_panel, read_camera_image, stack, with_title)
from .palette import class_colors, class_names
from .sequence_gif import write_gif

FrameLike = Any  # Det3DDataSample, or a dict with the same fields


def _field(obj: Any, name: str, default: Any = None) -> Any:
    """Field ``name`` of a dict or data element (data field first, then metainfo)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        value = obj.get(name)
    else:
        value = getattr(obj, name, None)
        if value is None and hasattr(obj, 'metainfo'):
            value = obj.metainfo.get(name)
    return default if value is None else value


def _numpy(value: Any) -> Optional[np.ndarray]:
    if value is None:
        return None
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def single_frame(data_sample: Any) -> Any:
    """The one frame of ``data_sample``: a frame itself, or a TrackDataSample of one frame."""
    frames = _field(data_sample, 'video_data_samples')
    if frames is None:
        return data_sample
    if len(frames) != 1:
        raise ValueError(f'OccupancyVisualizer: got a TrackDataSample of {len(frames)} frames; '
                         f'pass its frames (video_data_samples) one at a time')
    return frames[0]


def occ_arrays(frame: FrameLike, key: str) -> Optional[Dict[str, np.ndarray]]:
    """``semantics``/``instances`` (and masks) of ``frame.<key>`` as numpy, or None if absent."""
    occ = _field(frame, key)
    if occ is None:
        return None
    sem = _numpy(_field(occ, 'semantics'))
    if sem is None:
        raise KeyError(f'OccupancyVisualizer: {key} has no semantics')
    if sem.ndim == 1:
        raise ValueError(f'OccupancyVisualizer: {key}.semantics is flat ({sem.shape}); reshape '
                         f'it to the (X, Y, Z) grid first')
    out = dict(semantics=sem)
    for name in ('instances', 'mask_camera', 'infov'):
        arr = _numpy(_field(occ, name))
        if arr is not None:
            if arr.shape != sem.shape:
                raise ValueError(f'OccupancyVisualizer: {key}.{name} has shape {arr.shape}, '
                                 f'semantics {sem.shape}')
            out[name] = arr
    return out


def visibility_mask(gt: Optional[Dict[str, np.ndarray]]) -> Optional[np.ndarray]:
    """``mask_camera & infov`` of the ground truth (what the metric scores), or None."""
    if gt is None:
        return None
    mask = None
    for name in ('mask_camera', 'infov'):
        if name in gt:
            part = gt[name].astype(bool)
            mask = part if mask is None else mask & part
    return mask


@VISUALIZERS.register_module()
class OccupancyVisualizer(Visualizer):
    """Draws occupancy frames: bird's-eye views and isometric 3D renders of the ground truth
    and the prediction side by side, under the frame's camera images, with a class legend.

    Stuff voxels take their class colour; voxels with an instance id are tinted with a colour
    hashed from the id (stable over frames, so a track keeps its colour in a GIF), outlined and
    labelled with the id in the BEV. Voxels outside the ground truth's ``mask_camera & infov``
    (the region the metric scores) are faded and hatched, in both panels.

    Args:
        name, image, vis_backends, save_dir, fig_save_cfg, fig_show_cfg: as
            :class:`mmengine.visualization.Visualizer`.
        bev_scale: BEV pixels per voxel (4 -> 800 x 800 for the 200 x 200 grid).
        draw_3d: add the isometric 3D row. ``iso_unit``/``iso_height``: its pixels per voxel
            step horizontally / vertically.
        draw_cameras: add the camera strip when the frame's ``img_path`` files can be read.
        draw_ids: write instance ids in the BEV.
        hide_invisible_3d: leave voxels outside the visibility mask out of the 3D render.
        free_class: the 'free' class id (never drawn).
        backend_args: file backend arguments for reading camera images.
    """

    def __init__(self,
                 name: str = 'visualizer',
                 image: Optional[np.ndarray] = None,
                 vis_backends: Optional[List[dict]] = None,
                 save_dir: Optional[str] = None,
                 bev_scale: int = 4,
                 draw_3d: bool = True,
                 iso_unit: int = 2,
                 iso_height: int = 3,
                 draw_cameras: bool = True,
                 draw_ids: bool = True,
                 hide_invisible_3d: bool = False,
                 free_class: int = FREE_CLASS,
                 backend_args: Optional[dict] = None,
                 fig_save_cfg: dict = dict(frameon=False),
                 fig_show_cfg: dict = dict(frameon=False)) -> None:
        super().__init__(name=name, image=image, vis_backends=vis_backends, save_dir=save_dir,
                         fig_save_cfg=fig_save_cfg, fig_show_cfg=fig_show_cfg)
        self.bev_scale = int(bev_scale)
        self.draw_3d = draw_3d
        self.iso_unit = int(iso_unit)
        self.iso_height = int(iso_height)
        self.draw_cameras = draw_cameras
        self.draw_ids = draw_ids
        self.hide_invisible_3d = hide_invisible_3d
        self.free_class = int(free_class)
        self.backend_args = backend_args
        self._camera_warned = False

    # ------------------------------------------------------------------ pieces
    def class_names(self) -> List[str]:
        """Class names from ``dataset_meta['classes']`` if it lists every class, else the
        package's table."""
        names = list(class_names())
        classes = (self.dataset_meta or {}).get('classes')
        if classes is not None and len(classes) == len(names):
            names = [str(c) for c in classes]
        return names

    def legend(self) -> np.ndarray:
        names = self.class_names()
        keep = [c for c in range(len(names)) if c != self.free_class]
        notes = ('faded + hatched:', ' not seen by cameras', 'instances: tinted by id,',
                 ' outlined, id written')
        return legend_panel([names[c] for c in keep], class_colors()[keep], notes)

    def render_panels(self, occ: Dict[str, np.ndarray], visible: Optional[np.ndarray],
                      title: str) -> np.ndarray:
        """BEV (and 3D) column of one grid, titled."""
        inst = occ.get('instances')
        bev = render_bev(occ['semantics'], inst, visible, free_class=self.free_class,
                         scale=self.bev_scale, draw_ids=self.draw_ids)
        num_inst = 0 if inst is None else int(np.unique(inst[inst > 0]).size)
        count = f'{num_inst} instance' + ('' if num_inst == 1 else 's')
        parts = [with_title(bev, f"{title}: bird's-eye view ({count})")]
        if self.draw_3d:
            iso = render_isometric(occ['semantics'], inst, visible, free_class=self.free_class,
                                   unit=self.iso_unit, height=self.iso_height,
                                   hide_invisible=self.hide_invisible_3d)
            parts.append(with_title(iso, f'{title}: 3D view from rear right'))
        return stack(parts, axis=0, gap=6, align='center')

    def camera_images(self, frame: FrameLike, cell_width: int
                      ) -> Optional[Tuple[List[np.ndarray], List[str]]]:
        """The frame's camera images (from metainfo ``img_path``), or None when it has none or
        one cannot be read (warned once)."""
        paths = _field(frame, 'img_path')
        if paths is None:
            return None
        if isinstance(paths, str):
            paths = [paths]
        names = list(_field(frame, 'cam_names', [f'camera {n}' for n in range(len(paths))]))
        try:
            images = [read_camera_image(p, (cell_width, cell_width), self.backend_args)
                      for p in paths]
        except OSError as err:
            if not self._camera_warned:
                print_log(f'OccupancyVisualizer: drawing without camera images ({err})',
                          logger='current', level=30)
                self._camera_warned = True
            return None
        return images, names

    # ------------------------------------------------------------------ figures
    def render_frame(self, data_sample: FrameLike, draw_gt: bool = True, draw_pred: bool = True,
                     cam_images: Optional[Sequence[np.ndarray]] = None,
                     name: Optional[str] = None) -> np.ndarray:
        """Figure of one frame: title, camera strip, gt | prediction renders, legend.

        Args:
            data_sample: a Det3DDataSample (or dict) with ``gt_occ`` and/or ``pred_occ``
                (``semantics``, ``instances``, gt ``mask_camera``/``infov``, (X, Y, Z)) and
                metainfo ``sample_idx``/``sequence_id``/``frame_idx``, optionally ``img_path``
                and ``cam_names``; a TrackDataSample of one frame is accepted too.
            cam_images: RGB camera images to show instead of reading ``img_path``.
            name: prefix of the figure title.

        Returns:
            (H, W, 3) uint8 RGB figure.
        """
        frame = single_frame(data_sample)
        gt = occ_arrays(frame, 'gt_occ')
        pred = occ_arrays(frame, 'pred_occ')
        columns = []
        if draw_gt and gt is not None:
            columns.append((gt, 'ground truth'))
        if draw_pred and pred is not None:
            columns.append((pred, 'prediction'))
        if not columns:
            raise ValueError('OccupancyVisualizer: nothing to draw: the data sample has '
                             + ('no gt_occ' if draw_gt else '') + (' and ' if draw_gt and
                                                                   draw_pred else '')
                             + ('no pred_occ' if draw_pred else ''))
        visible = visibility_mask(gt)
        panels = stack([self.render_panels(occ, visible, title) for occ, title in columns],
                       axis=1, gap=12)
        rows = []
        if self.draw_cameras:
            cell_w = (panels.shape[1] - 16) // 5
            if cam_images is not None:
                cams = (list(cam_images),
                        list(_field(frame, 'cam_names', [f'camera {n}' for n in
                                                         range(len(cam_images))])))
            else:
                cams = self.camera_images(frame, cell_w)
            if cams is not None:
                rows.append(camera_strip(cams[0], cams[1], panels.shape[1]))
        rows.append(panels)
        body = stack([stack(rows, axis=0, gap=8), self.legend()], axis=1, gap=12)
        return with_title(body, self.frame_title(frame, name), font_scale=0.75, thickness=2)

    @staticmethod
    def frame_title(frame: FrameLike, name: Optional[str] = None) -> str:
        sample_idx = _field(frame, 'sample_idx')
        seq = _field(frame, 'sequence_id')
        idx = _field(frame, 'frame_idx')
        if sample_idx is not None:
            decoded = split_sample_idx(sample_idx)
            seq = decoded.sequence_id if seq is None else seq
            idx = decoded.frame if idx is None else idx
        parts = [name] if name else []
        if seq is not None:
            parts.append(f'sequence {int(seq)}')
        if idx is not None:
            parts.append(f'frame {int(idx)}')
        if sample_idx is not None:
            parts.append(f'(sample {int(sample_idx)})')
        return '   '.join(parts) if parts else 'occupancy'

    def add_datasample(self,
                       name: str,
                       data_sample: FrameLike,
                       draw_gt: bool = True,
                       draw_pred: bool = True,
                       show: bool = False,
                       wait_time: float = 0.,
                       out_file: Optional[str] = None,
                       step: int = 0,
                       cam_images: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
        """Render one frame (see :meth:`render_frame`); show it, write it to ``out_file``
        (PNG/JPEG by extension), or else hand it to the visualizer backends as ``name`` at
        ``step``. Returns the RGB figure."""
        drawn = self.render_frame(data_sample, draw_gt, draw_pred, cam_images, name)
        self.set_image(drawn)  # so that get_image() returns the figure, as in mmdet
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            params = ([cv2.IMWRITE_PNG_COMPRESSION, 1]
                      if out_file.lower().endswith('.png') else None)
            mmcv.imwrite(drawn[..., ::-1], out_file, params=params)
        else:
            self.add_image(name, drawn, step)
        return drawn

    def render_sequence_gif(self, frames: Iterable[Union[FrameLike, np.ndarray, str]],
                            out_file: str, duration: float = 0.5, draw_gt: bool = True,
                            draw_pred: bool = True, max_width: Optional[int] = 960,
                            name: Optional[str] = None) -> int:
        """Animated GIF of a streamed sequence, one GIF frame per input frame.

        Args:
            frames: data samples (rendered with :meth:`render_frame`), rendered RGB figures,
                or paths of rendered images, in stream order.
            out_file: the ``.gif`` path.
            duration: seconds per frame (the data's frames are 0.5 s apart).
            max_width: scale wider figures down to this width.

        Returns:
            The number of frames written.
        """
        def figures():
            for frame in frames:
                if isinstance(frame, (np.ndarray, str)) or hasattr(frame, '__fspath__'):
                    yield frame
                else:
                    yield self.render_frame(frame, draw_gt, draw_pred, name=name)

        if not str(out_file).lower().endswith('.gif'):
            raise ValueError(f'render_sequence_gif: out_file must end with .gif: {out_file}')
        return write_gif(figures(), out_file, duration=duration, max_width=max_width)


def default_out_name(frame: FrameLike) -> str:
    """``<sequence_id>/<frame_idx:03d>`` style relative path (no extension) of a frame."""
    sample_idx = _field(frame, 'sample_idx')
    seq = _field(frame, 'sequence_id')
    idx = _field(frame, 'frame_idx')
    if sample_idx is not None:
        decoded = split_sample_idx(sample_idx)
        seq = decoded.sequence_id if seq is None else seq
        idx = decoded.frame if idx is None else idx
    if seq is None or idx is None:
        raise KeyError('OccupancyVisualizer: a frame needs metainfo sample_idx or '
                       'sequence_id + frame_idx to name its output file')
    return osp.join(f'{int(seq):04d}', f'{int(idx):03d}')

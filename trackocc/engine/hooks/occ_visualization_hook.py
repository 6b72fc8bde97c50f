"""Drawing occupancy predictions during validation and testing (cf. mmdet3d's
``Det3DVisualizationHook`` and mmdet's ``TrackVisualizationHook``)."""
import os.path as osp
import warnings
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.utils import mkdir_or_exist
from mmengine.visualization import Visualizer

from trackocc.registry import HOOKS

from ...evaluation.metrics import iter_frames
from ...visualization import OccupancyVisualizer
from ...visualization.occupancy_visualizer import default_out_name


@HOOKS.register_module()
class OccVisualizationHook(Hook):
    """Draw occupancy frames (gt | prediction) with the current :class:`OccupancyVisualizer`.

    - Validation: every ``interval``-th frame goes to the visualizer's backends (e.g.
      ``LocalVisBackend`` writes
      ``<work_dir>/<timestamp>/vis_data/vis_image/val sample_<step>.png``).
    - Testing without ``test_out_dir``: the same, every ``interval``-th frame, as 'test sample'.
    - Testing with ``test_out_dir``: every frame is written to
      ``<test_out_dir>/<sequence_id:04d>/<frame_idx:03d>.png`` (relative paths are taken under
      ``<work_dir>/<timestamp>/``), nothing goes to the backends, and at the end of the test
      each sequence's frames become ``<test_out_dir>/<sequence_id:04d>.gif`` (``gif=True``).
      Every rank writes the sequences it streamed.

    Nothing is drawn unless ``draw=True``, so configs can keep the hook and switch it on with
    ``--cfg-options default_hooks.visualization.draw=True``.

    Args:
        draw: draw at all.
        interval: draw every ``interval``-th frame (counted over the loop's frames).
        show: show each drawn figure in a window (backends are then cleared, as in mmdet).
        wait_time: seconds a shown figure stays (0 = until a key).
        test_out_dir: folder for per-sequence PNGs and GIFs when testing.
        draw_gt / draw_pred: which columns to draw.
        gif: write the per-sequence GIFs (``test_out_dir`` only).
        gif_duration: seconds per GIF frame; ``gif_max_width``: GIF width limit in pixels.
    """

    def __init__(self,
                 draw: bool = False,
                 interval: int = 50,
                 show: bool = False,
                 wait_time: float = 0.,
                 test_out_dir: Optional[str] = None,
                 draw_gt: bool = True,
                 draw_pred: bool = True,
                 gif: bool = True,
                 gif_duration: float = 0.5,
                 gif_max_width: Optional[int] = 960) -> None:
        if int(interval) < 1:
            raise ValueError(f'OccVisualizationHook: interval must be >= 1, got {interval}')
        self.draw = draw
        self.interval = int(interval)
        self.show = show
        self.wait_time = wait_time
        self.test_out_dir = test_out_dir
        self.draw_gt = draw_gt
        self.draw_pred = draw_pred
        self.gif = gif
        self.gif_duration = gif_duration
        self.gif_max_width = gif_max_width
        self._out_dir: Optional[str] = None
        self._val_frames = 0
        self._test_frames = 0
        # {sequence folder name: [png paths in stream order]} of this test run
        self._sequence_pngs: Dict[str, List[str]] = OrderedDict()
        self._backends_cleared = False

    # ------------------------------------------------------------------ helpers
    @property
    def visualizer(self) -> OccupancyVisualizer:
        """The current visualizer instance (built by the runner from the ``visualizer`` cfg)."""
        vis = Visualizer.get_current_instance()
        if not isinstance(vis, OccupancyVisualizer):
            raise TypeError(f'OccVisualizationHook needs the current visualizer to be an '
                            f'OccupancyVisualizer, got {type(vis).__name__}; set '
                            f"visualizer=dict(type='OccupancyVisualizer', ...) in the config")
        if self.show and not self._backends_cleared:
            vis._vis_backends = {}
            warnings.warn('OccVisualizationHook: show=True, figures are only shown, the '
                          'visualizer backends store nothing')
            self._backends_cleared = True
        return vis

    def _draw_to_backends(self, name: str, frame: Any, step: int) -> None:
        self.visualizer.add_datasample(name, frame, draw_gt=self.draw_gt,
                                       draw_pred=self.draw_pred, show=self.show,
                                       wait_time=self.wait_time, step=step)

    # ------------------------------------------------------------------ validation
    def before_val_epoch(self, runner) -> None:
        self._val_frames = 0

    def after_val_iter(self, runner, batch_idx: int, data_batch: Any = None,
                       outputs: Optional[Sequence[Any]] = None) -> None:
        if not self.draw or not outputs:
            return
        for frame in iter_frames(outputs):
            if self._val_frames % self.interval == 0:
                self._draw_to_backends('val sample', frame, runner.iter + self._val_frames)
            self._val_frames += 1

    # ------------------------------------------------------------------ testing
    def before_test_epoch(self, runner) -> None:
        self._test_frames = 0
        self._sequence_pngs = OrderedDict()
        self._out_dir = None
        if self.draw and self.test_out_dir is not None:
            out_dir = self.test_out_dir
            if not osp.isabs(out_dir):
                out_dir = osp.join(runner.work_dir, runner.timestamp, out_dir)
            mkdir_or_exist(out_dir)
            self._out_dir = out_dir

    def after_test_iter(self, runner, batch_idx: int, data_batch: Any = None,
                        outputs: Optional[Sequence[Any]] = None) -> None:
        if not self.draw or not outputs:
            return
        if self.test_out_dir is not None and self._out_dir is None:
            self.before_test_epoch(runner)  # the loop ran without before_test_epoch
        for frame in iter_frames(outputs):
            if self._out_dir is not None:
                rel = default_out_name(frame)
                out_file = osp.join(self._out_dir, rel + '.png')
                self.visualizer.add_datasample(
                    'test sample', frame, draw_gt=self.draw_gt, draw_pred=self.draw_pred,
                    show=self.show, wait_time=self.wait_time, out_file=out_file,
                    step=self._test_frames)
                self._sequence_pngs.setdefault(osp.dirname(rel), []).append(out_file)
            elif self._test_frames % self.interval == 0:
                self._draw_to_backends('test sample', frame, self._test_frames)
            self._test_frames += 1

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        if not self.draw or self._out_dir is None:
            return
        if self.gif:
            for seq_name, pngs in self._sequence_pngs.items():
                gif_file = osp.join(self._out_dir, seq_name + '.gif')
                self.visualizer.render_sequence_gif(pngs, gif_file, duration=self.gif_duration,
                                                    max_width=self.gif_max_width)
        print_log(f'OccVisualizationHook: wrote {self._test_frames} frames'
                  + (f' and {len(self._sequence_pngs)} GIFs' if self.gif else '')
                  + f' to {self._out_dir}', logger='current')
        self._sequence_pngs = OrderedDict()

"""OccVisualizationHook driven by a fake val/test loop (hook methods called directly)."""
import os
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.structures import BaseDataElement
from PIL import Image

from trackocc.registry import HOOKS
from mmdet3d.structures import Det3DDataSample
from mmdet.structures import TrackDataSample
from trackocc.visualization import OccupancyVisualizer

SHAPE = (32, 32, 6)


def frame_output(seq: int, frame: int) -> TrackDataSample:
    """What the detector's predict returns for one streamed frame (T = 1)."""
    sem = np.full(SHAPE, 15, np.int64)
    sem[:, :, 0] = 13
    inst = np.zeros(SHAPE, np.int64)
    sem[4 + frame:8 + frame, 10:13, 1:3], inst[4 + frame:8 + frame, 10:13, 1:3] = 1, 9
    sample = Det3DDataSample(metainfo=dict(sample_idx=1_000_000 + seq * 1000 + frame,
                                           sequence_id=1000 + seq, frame_idx=frame))
    sample.gt_occ = BaseDataElement(semantics=torch.from_numpy(sem),
                                    instances=torch.from_numpy(inst),
                                    mask_camera=torch.ones(SHAPE, dtype=torch.bool),
                                    infov=torch.ones(SHAPE, dtype=torch.bool))
    sample.pred_occ = BaseDataElement(semantics=torch.from_numpy(sem).to(torch.uint8),
                                      instances=torch.from_numpy(inst).to(torch.int32))
    track = TrackDataSample()
    track.video_data_samples = [sample]
    return track


@pytest.fixture
def visualizer(tmp_path):
    # get_instance makes it the current visualizer, as the runner does
    return OccupancyVisualizer.get_instance(f'hook-vis-{uuid.uuid4().hex[:8]}',
                                            vis_backends=[dict(type='LocalVisBackend')],
                                            save_dir=str(tmp_path / 'backend'), draw_3d=False)


def fake_runner(tmp_path, it=0):
    return SimpleNamespace(work_dir=str(tmp_path / 'work'), timestamp='20260101_000000',
                           iter=it)


def run_test_loop(hook, runner, sequences):
    hook.before_test_epoch(runner)
    batch_idx = 0
    for seq, num_frames in sequences:
        for frame in range(num_frames):
            hook.after_test_iter(runner, batch_idx, data_batch=None,
                                 outputs=[frame_output(seq, frame)])
            batch_idx += 1
    hook.after_test_epoch(runner, metrics={})


def test_test_loop_writes_pngs_per_sequence_and_gifs(tmp_path, visualizer):
    hook = HOOKS.build(dict(type='OccVisualizationHook', draw=True, test_out_dir='vis',
                            gif_duration=0.25))
    runner = fake_runner(tmp_path)
    run_test_loop(hook, runner, [(7, 3), (8, 2)])
    out_dir = tmp_path / 'work' / '20260101_000000' / 'vis'
    assert sorted(os.listdir(out_dir)) == ['1007', '1007.gif', '1008', '1008.gif']
    assert sorted(os.listdir(out_dir / '1007')) == ['000.png', '001.png', '002.png']
    assert sorted(os.listdir(out_dir / '1008')) == ['000.png', '001.png']
    for name, frames in (('1007.gif', 3), ('1008.gif', 2)):
        with Image.open(out_dir / name) as gif:
            assert gif.n_frames == frames and gif.info['duration'] == 250
    # with test_out_dir nothing goes to the backends
    assert not (tmp_path / 'backend').exists() or not any((tmp_path / 'backend').rglob('*.png'))


def test_test_loop_without_out_dir_draws_every_interval_frame(tmp_path, visualizer):
    hook = HOOKS.build(dict(type='OccVisualizationHook', draw=True, interval=2))
    run_test_loop(hook, fake_runner(tmp_path), [(7, 3), (8, 2)])
    images = sorted(p.name for p in (tmp_path / 'backend').rglob('*.png'))
    assert images == ['test sample_0.png', 'test sample_2.png', 'test sample_4.png']
    assert not (tmp_path / 'work').exists()


def test_val_iters_use_runner_iter_as_step(tmp_path, visualizer):
    hook = HOOKS.build(dict(type='OccVisualizationHook', draw=True, interval=3))
    runner = fake_runner(tmp_path, it=100)
    hook.before_val_epoch(runner)
    for n in range(4):
        hook.after_val_iter(runner, n, data_batch=None, outputs=[frame_output(1, n)])
    images = sorted(p.name for p in (tmp_path / 'backend').rglob('*.png'))
    assert images == ['val sample_100.png', 'val sample_103.png']


def test_draw_false_draws_nothing(tmp_path, visualizer):
    hook = HOOKS.build(dict(type='OccVisualizationHook', test_out_dir='vis'))
    assert hook.draw is False
    runner = fake_runner(tmp_path)
    run_test_loop(hook, runner, [(7, 2)])
    hook.after_val_iter(runner, 0, outputs=[frame_output(7, 0)])
    assert not (tmp_path / 'work').exists() and not (tmp_path / 'backend').exists()
    with pytest.raises(ValueError, match='interval'):
        HOOKS.build(dict(type='OccVisualizationHook', interval=0))


def test_other_visualizer_is_a_clear_error(tmp_path):
    from mmengine.visualization import Visualizer
    Visualizer.get_instance(f'plain-{uuid.uuid4().hex[:8]}')
    hook = HOOKS.build(dict(type='OccVisualizationHook', draw=True, interval=1))
    with pytest.raises(TypeError, match='OccupancyVisualizer'):
        hook.after_val_iter(fake_runner(tmp_path), 0, outputs=[frame_output(1, 0)])

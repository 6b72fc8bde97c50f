"""tools/make_demo_video.py on the tiny config and tiny synthetic data: the MP4 (and GIF) read
back; the demo frame's colours; clear errors for a missing checkpoint and bad sequences."""
import os
import os.path as osp
import sys

import numpy as np
import pytest

ROOT = osp.join(osp.dirname(__file__), '..', '..')
sys.path.insert(0, osp.join(ROOT, 'tools'))
import create_data  # noqa: E402
import make_demo_video  # noqa: E402

from trackocc.visualization.demo_video import (DemoFrame, DemoFrameRenderer,  # noqa: E402
                                               DemoVideoWriter, pad_to_even)
from trackocc.visualization.palette import class_colors, instance_colors  # noqa: E402

CFG = osp.join(ROOT, 'configs', 'trackocc', 'trackocc_tiny_synthetic.py')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """2 validation sequences x 3 frames, 96 x 64 images (side cameras 96 x 48)."""
    root = str(tmp_path_factory.mktemp('demo-video') / 'data')
    assert create_data.main(['synthetic', '--out-dir', root, '--train-seqs', '0',
                             '--val-seqs', '2', '--frames-per-seq', '3', '--image-size', '96',
                             '64', '--side-height', '48', '--seed', '1', '--no-progress']) == 0
    return root


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """The tiny model's initial weights saved as an MMEngine-style checkpoint."""
    import torch

    from trackocc.analysis.model_setup import build_model, load_config
    model = build_model(load_config(CFG), None, 'cpu')
    path = str(tmp_path_factory.mktemp('ckpt') / 'tiny.pth')
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), path)
    return path


def read_video(path):
    import imageio.v2 as imageio
    reader = imageio.get_reader(path, format='FFMPEG')
    try:
        return reader.get_meta_data(), [np.asarray(f) for f in reader]
    finally:
        reader.close()


def test_video_of_a_streamed_sequence(data_root, checkpoint, tmp_path, capsys):
    out = tmp_path / 'videos' / 'val_001.mp4'
    assert make_demo_video.main([CFG, checkpoint, '--data-root', data_root, '--out', str(out),
                                 '--sequence', '1', '--with-gt', '--gif']) == 0
    printed = capsys.readouterr().out
    assert 'sequence 1001   frame 2' in printed and 'wrote 3 frames' in printed
    meta, frames = read_video(str(out))
    assert meta['codec'] == 'h264' and meta['pix_fmt'].startswith('yuv420p')
    assert meta['fps'] == 2.0
    assert len(frames) == 3
    height, width = frames[0].shape[:2]
    assert (width, height) == meta['size'] and width % 2 == 0 and height % 2 == 0
    # cameras (5 x ~96 px wide, scaled up) over two 3D views side by side, plus the legend
    assert width > 2 * 801 and height > 449
    for frame in frames:
        assert frame.shape == (height, width, 3)
        assert frame.std() > 20  # not a blank frame
        # prediction and ground-truth views hold saturated (voxel) colours, not just white
        body = frame[height // 2:]
        assert (body.max(-1).astype(int) - body.min(-1) > 60).mean() > 0.05
    # the cameras move through the scene: consecutive frames differ
    assert np.abs(frames[1].astype(int) - frames[0]).mean() > 1.0
    from PIL import Image
    with Image.open(out.with_suffix('.gif')) as gif:
        assert gif.n_frames == 3 and gif.size[0] == 960
    assert sorted(os.listdir(out.parent)) == ['val_001.gif', 'val_001.mp4']  # no temp files


@pytest.mark.parametrize('extra,message', [
    (['missing.pth'], 'error: checkpoint missing.pth does not exist'),
    (['--random-init', '--sequence', '7'],
     'error: unknown sequence 7: {ann} holds sequence_ids [1000, 1001] (numbers [0, 1])'),
    (['--random-init', '--sequence', '1', '--cfg-options',
      'test_dataloader.dataset.sequences=[1000]'],
     'error: sequence 1 (sequence_id 1001) of {ann} has no frames in the test data '
     '(load_interval=1, sequences=[1000])'),
])
def test_clear_errors(data_root, tmp_path, capsys, extra, message):
    out = tmp_path / 'x.mp4'
    assert make_demo_video.main([CFG, *extra, '--data-root', data_root, '--out', str(out)]) == 2
    ann = osp.join(data_root, 'kitti_format', 'waymo_infos_val_jpg.pkl')
    assert message.format(ann=ann) in capsys.readouterr().err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_empty_checkpoint_and_bad_arguments(data_root, tmp_path, capsys):
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    out = tmp_path / 'x.mp4'
    assert make_demo_video.main([CFG, str(empty), '--data-root', data_root, '--out',
                                 str(out)]) == 2
    assert f'checkpoint {empty} is empty' in capsys.readouterr().err and not out.exists()
    for args, message in (([CFG], 'either a checkpoint or --random-init'),
                          ([CFG, '--random-init', '--out', 'a.avi'], 'must end with .mp4'),
                          ([CFG, '--random-init', '--max-frames', '0'], '--max-frames must be')):
        with pytest.raises(SystemExit) as exc:
            make_demo_video.main(args + ([] if '--out' in args else ['--out', str(out)]))
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_track_colour_is_the_same_in_every_frame():
    """A tracked voxel is drawn in its id's colour wherever it is; stuff in its class colour."""
    renderer = DemoFrameRenderer(legend=False, invisible='show')
    images = []
    for x in (2, 5):
        sem = np.full((8, 8, 2), 15, np.int64)
        inst = np.zeros_like(sem)
        sem[x, 3, 0], inst[x, 3, 0] = 1, 7   # vehicle, track 7
        sem[0, 7, 0] = 13                      # road
        images.append(renderer.render(DemoFrame(sem, inst, title=f'x={x}')))
    track, road = instance_colors(7), class_colors()[13]
    for img in images:
        colors = img.reshape(-1, 3)
        assert (colors == track).all(-1).sum() > 4     # top face, unshaded
        assert (colors == road).all(-1).sum() > 4
    # the track moved: its pixels are elsewhere in the second frame
    assert not np.array_equal((images[0] == track).all(-1), (images[1] == track).all(-1))


def test_voxels_the_cameras_do_not_see_hidden_faded_or_shown():
    sem = np.full((8, 8, 2), 15, np.int64)
    inst = np.zeros_like(sem)
    sem[2, 3, 0], inst[2, 3, 0] = 1, 7
    sem[5, 5, 0], inst[5, 5, 0] = 2, 9
    visible = np.ones(sem.shape, bool)
    visible[5, 5, 0] = False
    for mode in ('hide', 'fade', 'show'):
        img = DemoFrameRenderer(legend=False, invisible=mode).render(
            DemoFrame(sem, inst, visible=visible))
        colors = img.reshape(-1, 3)
        assert (colors == instance_colors(7)).all(-1).any()
        # track 9 is drawn in its colour only when shown; faded it is lighter; hidden absent
        assert (colors == instance_colors(9)).all(-1).any() == (mode == 'show')
    with pytest.raises(ValueError, match="invisible must be one of"):
        DemoFrameRenderer(invisible='blur')


def test_writer_pads_to_even_size_and_writes_nothing_on_error(tmp_path):
    assert pad_to_even(np.zeros((5, 7, 3), np.uint8)).shape == (6, 8, 3)
    out = tmp_path / 'a.mp4'
    with pytest.raises(RuntimeError, match='stop'):
        with DemoVideoWriter(str(out)) as writer:
            writer.add(np.zeros((33, 45, 3), np.uint8))
            raise RuntimeError('stop')
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match='no frames to write'):
        with DemoVideoWriter(str(out)):
            pass
    assert os.listdir(tmp_path) == []
    with DemoVideoWriter(str(out), fps=4) as writer:
        for n in range(4):
            writer.add(np.full((33, 45, 3), 60 * n, np.uint8))
    meta, frames = read_video(str(out))
    assert len(frames) == 4 and frames[0].shape == (34, 46, 3) and meta['fps'] == 4.0
    assert abs(float(frames[3][:32, :44].mean()) - 180) < 4  # lossy, but close
    gif = tmp_path / 'b.gif'
    with DemoVideoWriter(None, str(gif), fps=2) as writer:
        writer.add(np.zeros((10, 12, 3), np.uint8))
        writer.add(np.full((20, 24, 3), 200, np.uint8))  # another size: scaled to the first
    from PIL import Image
    with Image.open(gif) as im:
        assert im.n_frames == 2 and im.size == (12, 10)
    assert sorted(os.listdir(tmp_path)) == ['a.mp4', 'b.gif']

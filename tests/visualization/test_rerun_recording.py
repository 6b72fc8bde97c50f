"""tools/record_rerun.py and trackocc/visualization/rerun_recording.py: recordings are written,
then read back with rerun's dataframe API (entity paths, frames, timeline, poses, cameras,
voxel counts and colours, labels)."""
import os
import os.path as osp
import pickle

import numpy as np
import pyarrow as pa
import pytest
import rerun.dataframe as rr_df

from trackocc.structures import (CAMERA_FOLDERS, CAMERA_NAMES, FREE_CLASS, THING_CLASSES,
                                 load_gt_frame, write_pred_frame)
from trackocc.visualization.palette import class_colors, instance_colors
from trackocc.visualization.rerun_recording import (RecordingFrame, RecordingInputError,
                                                    SequenceRecorder)

from repo_files import load_module

TOOL = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'record_rerun.py')
SIZES = {'CAM_SIDE_LEFT': (96, 48), 'CAM_SIDE_RIGHT': (96, 48)}  # tests/conftest.py; others 96x64


@pytest.fixture(scope='module')
def tool():
    return load_module(TOOL, 'record_rerun_tool')


@pytest.fixture(scope='module')
def preds(tiny_data_root, tmp_path_factory):
    """Predictions of validation sequence 0 = its gt (signs' ids zeroed, ids + 100), frame 1
    left out."""
    folder = tmp_path_factory.mktemp('rerun-preds')
    for frame in (0, 2, 3, 4):
        sem, inst = gt_grids(tiny_data_root, frame)
        write_pred_frame(str(folder / f'{1_000_000 + frame}.npz'), sem,
                         np.where(inst > 0, inst + 100, 0))
    return folder


def gt_grids(root, frame):
    arrays = load_gt_frame(osp.join(root, 'pano_voxel04', 'validation', '000',
                                    f'{frame:03d}_04.npz'))
    sem = arrays['semantics'].astype(np.int64)
    return sem, np.where(np.isin(sem, THING_CLASSES), arrays['instances'], 0).astype(np.int64)


class Recording:
    """A recording read back: its entity paths and, per logged frame, its columns."""

    def __init__(self, path):
        recording = rr_df.load_recording(str(path))
        self.entities = {c.entity_path for c in recording.schema().component_columns()}
        self.table = recording.view(index='frame', contents='/**').select().read_all()
        self.frames = self.table.column('frame').to_pylist()
        self.timestamps = (self.table.column('timestamp').cast(pa.int64()).to_pylist()
                           if self.has('timestamp') else None)

    def has(self, column):
        return column in self.table.column_names

    def cell(self, column, row, width=None):
        """numpy array of ``column`` at ``row`` (None where nothing was logged); ``width``
        splits fixed-size lists into rows (positions, 3x3 matrices)."""
        value = self.table.column(column).combine_chunks()[row]
        if not value.is_valid:
            return None
        values = value.values
        if width is not None:
            return values.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
        return values.to_numpy(zero_copy_only=False)


def test_tiny_sequence_reads_back(tool, tiny_data_root, preds, tmp_path, capsys):
    out = tmp_path / 'rec' / 'val_000.rrd'
    assert tool.main(['--data-root', tiny_data_root, '--pred-dir', str(preds),
                      '--out', str(out)]) == 0
    assert 'rerun ' + str(out) in capsys.readouterr().out
    assert os.listdir(out.parent) == ['val_000.rrd']  # no temporary file left
    rec = Recording(out)
    cams = {f'/world/ego/cameras/{c}' for c in CAMERA_NAMES}
    layers = {f'/world/ego/{a}/{b}' for a in ('gt', 'pred') for b in ('stuff', 'things', 'labels')}
    assert rec.entities >= {'/world', '/world/ego', '/world/ego/vehicle',
                            '/world/ego_trajectory'} | cams | {c + '/image' for c in cams} | layers

    # timeline: the 5 frames, the info's timestamps (us -> ns), the ego moving 2 m per frame
    assert rec.frames == [0, 1, 2, 3, 4]
    assert rec.timestamps == [(1_000_000 + 500_000 * f) * 1000 for f in range(5)]
    np.testing.assert_allclose(np.concatenate([rec.cell('/world/ego:Translation3D', f, 3)
                                               for f in range(5)]),
                               [[2.0 * f, 0, 0] for f in range(5)])
    trajectory = rec.table.column('/world/ego_trajectory:LineStrip3D').to_pylist()[4][0]
    np.testing.assert_allclose(trajectory, [[2.0 * f, 0, 0] for f in range(5)])

    # cameras: intrinsics (column-major 3x3), resolution of the image, camera 2 m above ego
    for cam in CAMERA_NAMES:
        width, height = SIZES.get(cam, (96, 64))
        path = f'/world/ego/cameras/{cam}'
        np.testing.assert_array_equal(rec.cell(f'{path}:Resolution', 0, 2), [[width, height]])
        np.testing.assert_allclose(rec.cell(f'{path}:PinholeProjection', 0, 9),
                                   [[60, 0, 0, 0, 60, 0, width / 2, height / 2, 1]])
        np.testing.assert_allclose(rec.cell(f'{path}:Translation3D', 0, 3), [[0, 0, 2]],
                                   atol=1e-6)
        assert list(rec.cell(f'{path}/image:MediaType', 0)) == ['image/jpeg']
    image = osp.join(tiny_data_root, 'kitti_format', 'training', CAMERA_FOLDERS['CAM_FRONT'],
                     '1000003.jpg')
    with open(image, 'rb') as handle:
        assert rec.cell('/world/ego/cameras/CAM_FRONT/image:Blob', 3)[0].tobytes() == \
            handle.read()

    # voxels of every frame: counts, class ids, colours; instance ids and labels
    colors = class_colors()
    for f in range(5):
        sem, inst = gt_grids(tiny_data_root, f)
        occupied = sem != FREE_CLASS
        for layer, offset in (('gt', 0), ('pred', 100)):
            stuff = f'/world/ego/{layer}/stuff'
            things = f'/world/ego/{layer}/things'
            labels = f'/world/ego/{layer}/labels:Text'
            if layer == 'pred' and f == 1:  # no prediction: its layer is logged empty
                assert len(rec.cell(f'{stuff}:PoseTranslation3D', f, 3)) == 0
                assert len(rec.cell(f'{things}:PoseTranslation3D', f, 3)) == 0
                assert len(rec.cell(labels, f)) == 0
                continue
            stuff_cls = rec.cell(f'{stuff}:ClassId', f)
            np.testing.assert_array_equal(stuff_cls, sem[occupied & (inst == 0)])
            assert len(rec.cell(f'{stuff}:PoseTranslation3D', f, 3)) == len(stuff_cls)
            np.testing.assert_array_equal(rec.cell(f'{stuff}:Color', f) >> 8,
                                          _packed(colors[stuff_cls]))
            ids = rec.cell(f'{things}:instance_id', f)
            np.testing.assert_array_equal(ids, inst[occupied & (inst > 0)] + offset)
            assert len(rec.cell(f'{things}:PoseTranslation3D', f, 3)) == len(ids) > 0
            np.testing.assert_array_equal(rec.cell(f'{things}:Color', f) >> 8,
                                          _packed(instance_colors(ids)))
            assert list(rec.cell(labels, f)) == [f'vehicle {7 + offset}',
                                                 f'pedestrian {9 + offset}']
    # the vehicle's voxel centres move 1 m per frame in the ego frame (tests/conftest.py)
    first, last = (rec.cell('/world/ego/gt/things:PoseTranslation3D', f, 3) for f in (0, 4))
    assert last[:, 0].max() - first[:, 0].max() == pytest.approx(4.0)


def _packed(rgb):
    rgb = np.asarray(rgb, np.uint32)
    return rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]


def test_demo_data_as_points_without_cameras(tool, synthetic_data_root, tmp_path):
    """The synthetic demo set (generator output), predictions-free, points, no cameras."""
    out = tmp_path / 'demo.rrd'
    assert tool.main(['--data-root', synthetic_data_root, '--max-frames', '2', '--no-cameras',
                      '--style', 'points', '--out', str(out)]) == 0
    rec = Recording(out)
    assert rec.frames == [0, 1]
    assert not any('/cameras' in e for e in rec.entities)
    assert rec.has('/world/ego/gt/things:Position3D')
    assert len(rec.cell('/world/ego/gt/stuff:Position3D', 0, 3)) > 1000
    assert len(rec.table.column('/world/ego_trajectory:LineStrip3D').to_pylist()[1][0]) == 2
    # world = the first frame's ego frame: the ego starts at the origin and then moves as far
    # as the info's ego2global says
    with open(osp.join(synthetic_data_root, 'kitti_format', 'waymo_infos_val_jpg.pkl'),
              'rb') as handle:
        poses = [np.asarray(i['ego2global']) for i in pickle.load(handle)['data_list'][:2]]
    moved = np.linalg.inv(poses[0]) @ poses[1]
    np.testing.assert_allclose(rec.cell('/world/ego:Translation3D', 0, 3), [[0, 0, 0]],
                               atol=1e-5)
    np.testing.assert_allclose(rec.cell('/world/ego:Translation3D', 1, 3), [moved[:3, 3]],
                               atol=1e-4)
    np.testing.assert_allclose(rec.cell('/world/ego:TransformMat3x3', 1, 9).reshape(3, 3).T,
                               moved[:3, :3], atol=1e-5)
    assert np.linalg.norm(moved[:3, 3]) > 0.5


def test_several_sequences_and_predictions_only(tool, tiny_data_root, preds, tmp_path, capsys):
    out = tmp_path / 'train.rrd'
    assert tool.main(['--data-root', tiny_data_root, '--split', 'training', '--no-cameras',
                      '--out', str(out)]) == 0
    assert sorted(os.listdir(tmp_path)) == ['train_000.rrd', 'train_001.rrd']
    assert Recording(tmp_path / 'train_001.rrd').frames == [0, 1, 2, 3]
    pred_out = tmp_path / 'pred.rrd'
    assert tool.main(['--pred-dir', str(preds), '--no-gt', '--out', str(pred_out)]) == 0
    assert 'no info pkl' in capsys.readouterr().out
    rec = Recording(pred_out)
    assert rec.frames == [0, 2, 3, 4]
    assert not any(e.startswith('/world/ego/gt') or '/cameras' in e for e in rec.entities)
    assert '/world/ego_trajectory' not in rec.entities and rec.timestamps is None


def test_errors_leave_no_file(tool, tiny_data_root, preds, tmp_path, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    out = tmp_path / 'out' / 'x.rrd'
    assert tool.main(['--pred-dir', str(empty), '--no-gt', '--out', str(out)]) == 2
    assert 'no frames' in capsys.readouterr().err
    assert tool.main(['--data-root', tiny_data_root, '--sequences', '7', '--out',
                      str(out)]) == 2
    assert 'sequences [7]' in capsys.readouterr().err
    # a missing camera image: the error names it
    data = tmp_path / 'data'
    os.makedirs(data / 'kitti_format' / 'training')
    os.symlink(osp.join(tiny_data_root, 'pano_voxel04'), data / 'pano_voxel04')
    os.symlink(osp.join(tiny_data_root, 'kitti_format', 'waymo_infos_val_jpg.pkl'),
               data / 'kitti_format' / 'waymo_infos_val_jpg.pkl')
    assert tool.main(['--data-root', str(data), '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert 'camera image' in err and '1000000.jpg' in err and 'not found' in err
    assert not out.parent.exists() or os.listdir(out.parent) == []


def test_recorder_refuses_empty_and_malformed_input(tmp_path):
    out = tmp_path / 'r.rrd'
    with pytest.raises(ValueError, match='no frame was added'):
        with SequenceRecorder(str(out), name='empty'):
            pass
    sem = np.full((4, 4, 2), FREE_CLASS, np.int64)
    sem[0, 0, 0] = 16  # not a class id
    with pytest.raises(RecordingInputError, match='frame 3.*class ids'):
        with SequenceRecorder(str(out), name='bad') as rec:
            rec.add(RecordingFrame(frame_idx=3, gt=(sem, np.zeros_like(sem))))
    with pytest.raises(RecordingInputError, match='ego2global'):
        with SequenceRecorder(str(out), name='bad') as rec:
            rec.add(RecordingFrame(frame_idx=0, ego2global=np.eye(4)))
            rec.add(RecordingFrame(frame_idx=1))
    assert os.listdir(tmp_path) == []

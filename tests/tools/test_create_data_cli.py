"""tools/create_data.py: bad arguments and empty data are clear errors with a non-zero exit."""
import os
import os.path as osp
import pickle
import sys

import pytest

from trackocc.datasets.synthetic import generate_synthetic_dataset

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..', 'tools'))
import create_data  # noqa: E402


def synthetic(tmp_path, *args):
    return create_data.main(['synthetic', '--out-dir', str(tmp_path / 'out'), '--no-progress',
                             '--frames-per-seq', '1', *args])


@pytest.mark.parametrize('args,message', [
    (('--seed', '-1'), 'argument --seed: expected a non-negative integer, got -1'),
    (('--image-size', '4', '4'), 'argument --image-size: expected at least 8 pixels, got 4'),
    (('--side-height', '3'), 'argument --side-height: expected at least 8 pixels, got 3'),
])
def test_bad_synthetic_arguments(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        synthetic(tmp_path, *args)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_generator_validates_its_arguments(tmp_path):
    for kwargs, message in ((dict(seed=-1), 'seed must be a non-negative integer'),
                            (dict(image_size=(4, 4)), 'image size 4x4 is too small'),
                            (dict(train_seqs=0, val_seqs=0), 'nothing to generate')):
        with pytest.raises(ValueError, match=message):
            generate_synthetic_dataset(str(tmp_path / 'g'), **dict(
                dict(train_seqs=1, val_seqs=0, frames_per_seq=1, progress=False), **kwargs))
    assert os.listdir(tmp_path) == []


def test_no_sequences_and_unwritable_out_dir(tmp_path, capsys):
    assert synthetic(tmp_path, '--train-seqs', '0', '--val-seqs', '0') == 2
    assert 'nothing to generate' in capsys.readouterr().err
    blocker = tmp_path / 'a_file'  # like /sys: the out-dir's folder cannot be created
    blocker.write_text('x')
    out = blocker / 'data'
    assert create_data.main(['synthetic', '--out-dir', str(out), '--no-progress']) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: cannot write the data set to {out}: ') and 'Traceback' not in err
    if os.path.isdir('/sys'):  # sysfs refuses new folders, even to root
        assert create_data.main(['synthetic', '--out-dir', '/sys/trackocc-test',
                                 '--no-progress', '--train-seqs', '1', '--val-seqs', '0',
                                 '--frames-per-seq', '1']) == 2
        assert 'cannot write the data set to /sys/trackocc-test: ' in capsys.readouterr().err


def test_check_of_an_empty_data_set_fails(tmp_path, capsys):
    kitti = tmp_path / 'kitti_format'
    kitti.mkdir()
    for name in ('waymo_infos_train_jpg.pkl', 'waymo_infos_val_jpg.pkl'):
        with open(kitti / name, 'wb') as f:
            pickle.dump(dict(metainfo={}, data_list=[]), f)
    assert create_data.main(['check', '--data-root', str(tmp_path), '--no-progress']) == 1
    out = capsys.readouterr().out
    assert f'PROBLEM {tmp_path}: no frame was checked' in out and '1 problems' in out

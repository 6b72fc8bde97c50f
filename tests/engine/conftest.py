"""Fixtures of the runner tests under tests/engine: a small synthetic training set and the
torch flags a deterministic run changes."""
import pytest
import torch


@pytest.fixture(scope='module')
def tiny_train_data(tmp_path_factory):
    """One training and one validation sequence of 3 frames from the synthetic generator
    (small images), the data root as a config takes it (trailing slash)."""
    from trackocc.datasets.synthetic import generate_synthetic_dataset
    root = tmp_path_factory.mktemp('tiny_train') / 'synthetic-waymo'
    generate_synthetic_dataset(str(root), train_seqs=1, val_seqs=1, frames_per_seq=3, seed=3,
                               image_size=(192, 128), side_height=96, workers=1, progress=False)
    return str(root) + '/'


@pytest.fixture
def restore_torch_flags():
    """randomness.deterministic switches torch's deterministic algorithms on for the process."""
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(flags[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1:]

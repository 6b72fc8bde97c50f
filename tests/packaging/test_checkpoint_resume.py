"""MMEngine checkpoints (message hub, history buffers, numpy scalars, EMA) resume under torch>=2.6,
whose torch.load defaults to weights_only=True, once trackocc is imported."""
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import trackocc  # noqa: F401  (registers the safe globals)
from toy_runner_parts import RecordIterHook, toy_config


def test_runner_checkpoint_resumes_with_weights_only_load(tmp_path):
    work = tmp_path / 'work'
    runner = Runner.from_cfg(Config(toy_config(work, max_iters=2)))
    runner.train()
    ckpt = work / 'iter_2.pth'
    assert ckpt.is_file()
    trained = {k: v.clone() for k, v in runner.model.state_dict().items()}

    # the file really holds non-tensor MMEngine state and loads with weights_only=True
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert 'message_hub' in state and 'ema_state_dict' in state

    RecordIterHook.seen.clear()
    resumed = Runner.from_cfg(Config(toy_config(work, max_iters=4, resume=True)))
    resumed.train()
    assert RecordIterHook.seen == [2, 3]  # continued after iteration 2, did not restart
    final = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=True)
    assert final['meta']['iter'] == 4
    assert set(trained) == set(resumed.model.state_dict())


class NotAllowed:
    pass


class CallsGetattr:
    """Pickles as getattr(<a str>, 'upper'): attribute access trackocc does not allow."""

    def __reduce__(self):
        return (getattr, ('text', 'upper'))


@pytest.mark.parametrize('payload', [NotAllowed(), CallsGetattr()], ids=['class', 'getattr'])
def test_weights_only_load_still_refuses_other_globals(tmp_path, payload):
    path = tmp_path / 'untrusted.pth'
    torch.save({'x': payload}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)

"""MMEngine checkpoints (message hub, history buffers, numpy scalars, EMA) resume under torch>=2.6,
whose torch.load defaults to weights_only=True, once trackocc.engine is imported."""
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import trackocc.engine  # noqa: F401  (registers the safe globals)
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


def test_mismatched_checkpoint_is_reported_with_file_and_keys(tmp_path):
    from trackocc.utils.tool_setup import check_checkpoint_matches
    from toy_runner_parts import ToyRegressor
    model = ToyRegressor()
    good = tmp_path / 'good.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=1)), good)
    check_checkpoint_matches(model, str(good))  # fits: no error

    renamed = {('head.' + k if k == 'linear.bias' else k): v for k, v in model.state_dict().items()}
    bad = tmp_path / 'renamed.pth'
    torch.save(dict(state_dict=renamed), bad)
    with pytest.raises(RuntimeError, match=r'renamed\.pth.*1 missing: linear\.bias.*'
                                           r'1 unexpected: head\.linear\.bias'):
        check_checkpoint_matches(model, str(bad))

    reshaped = dict(model.state_dict(), **{'linear.weight': torch.zeros(3, 2)})
    torch.save(dict(state_dict=reshaped), bad)
    with pytest.raises(RuntimeError, match='other shapes: linear.weight'):
        check_checkpoint_matches(model, str(bad))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        check_checkpoint_matches(model, str(tmp_path / 'nope.pth'))

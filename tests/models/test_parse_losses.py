"""``TrackOcc.parse_losses``: MMEngine's parse in one stacked sum (two kernels instead of two per
loss term, forward and backward), with MMEngine's keys, values and gradients."""
import torch
from mmengine.model import BaseModel

from test_detector import build


def _terms():
    weights = torch.linspace(0.5, 3.0, 5, requires_grad=True)
    losses = {f'frame{i}_loss_x': (weights[i] * (i + 1.7)) ** 2 for i in range(4)}
    losses['acc_metric'] = weights[4] * 2  # logged, not summed (no 'loss' in the key)
    return weights, losses


def test_stacked_parse_equals_mmengine():
    model = build()
    weights, losses = _terms()
    loss, log_vars = model.parse_losses(losses)
    loss.backward()
    ours = weights.grad.clone()
    ref_weights, ref_losses = _terms()
    ref_loss, ref_vars = BaseModel.parse_losses(model, ref_losses)
    ref_loss.backward()
    assert list(log_vars) == list(ref_vars) == ['loss', *losses]
    for key in ref_vars:
        torch.testing.assert_close(log_vars[key], ref_vars[key], msg=key)
    assert torch.equal(ours, ref_weights.grad)  # d(sum)/d(term) = 1 in any order
    assert ours[4] == 0  # the metric is not in the total


def test_other_terms_take_mmengine_parse():
    model = build()
    losses = {'loss_a': torch.ones(3, requires_grad=True),  # not 0-dim: mmengine's mean
              'loss_b': torch.tensor(2.0, dtype=torch.float64)}
    loss, log_vars = model.parse_losses(losses)
    assert float(loss) == 3.0 and float(log_vars['loss_a']) == 1.0
    loss, _ = model.parse_losses({'loss_a': torch.tensor(1.0),
                                  'loss_b': torch.tensor(2.0, dtype=torch.bfloat16)})
    assert float(loss) == 3.0  # mixed dtypes: summed as mmengine does

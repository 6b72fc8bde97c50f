"""Count the work of one training forward pass of a config on the CPU, as a GPU would launch it.

    python docs/benchmark_runs/clip_feature_batch_cpu_2026-12-04/train_op_census.py CONFIG \
        [ATTR=VALUE ...] > census.json

Builds the model (random weights) and one synthetic 3-frame clip, runs ``model.loss`` once
and reports:
- ``forward_ops``: the ATen ops it dispatches that are not views (each is at least one
  kernel launch on a GPU), ``forward_view_ops`` the views, ``by_file`` the ops by the
  innermost trackocc source file;
- ``backward_nodes``: the autograd nodes the backward pass of the terms' plain sum will run
  (each one or more kernels), ``accumulate_grad`` the parameters reached;
- ``parse_losses_ops``: the ops of ``model.parse_losses`` (the total the optimizer steps on),
  and ``backward_nodes_from_parsed_loss`` the nodes of that total's backward pass (what
  training runs). Files made before this was added lack the two.
The 3D convolutions run natively (``SlicedConv3d`` trains on the CPU as 2D convolutions, which
a GPU never does), so the counts are those of the GPU's code path; they are the same on every
machine. ``ATTR=VALUE`` sets model attributes (e.g. ``clip_feature_batch=False``).
Needs ~23 GB of memory for the paper config.
"""
import collections
import json
import sys

from torch.utils._python_dispatch import TorchDispatchMode

from trackocc.analysis.host_ops import _source_line
from training_clip import model_and_clip

VIEWS = {'view', 't', 'permute', 'transpose', 'detach', 'slice', 'select', 'unsqueeze',
         'squeeze', 'expand', 'alias', 'unbind', 'split', 'split_with_sizes', 'chunk',
         'reshape', '_unsafe_view', 'as_strided', 'lift_fresh', 'unflatten', 'flatten'}


class OpCount(TorchDispatchMode):

    def __init__(self):
        super().__init__()
        self.ops = self.views = 0
        self.by_file = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._overloadpacket.__name__ in VIEWS:
            self.views += 1
        else:
            self.ops += 1
            self.by_file[_source_line().split(':')[0]] += 1
        return func(*args, **(kwargs or {}))


def backward_nodes(loss):
    seen, stack = set(), [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
    return collections.Counter(type(f).__name__ for f in seen)


def main():
    model, data = model_and_clip(sys.argv[1])
    settings = dict(arg.split('=', 1) for arg in sys.argv[2:])
    for key, value in settings.items():
        setattr(model, key, json.loads(value.lower()) if value in ('True', 'False')
                else json.loads(value))
    count, parse = OpCount(), OpCount()
    with count:
        losses = model(**data, mode='loss')
    with parse:
        total, _ = model.parse_losses(losses)
    nodes = backward_nodes(sum(losses.values()))
    accumulate = nodes.pop('AccumulateGrad', 0)
    parsed_nodes = backward_nodes(total)
    parsed_nodes.pop('AccumulateGrad', 0)
    print(json.dumps(dict(config=sys.argv[1], settings=settings, forward_ops=count.ops,
                          forward_view_ops=count.views, backward_nodes=sum(nodes.values()),
                          accumulate_grad=accumulate, parse_losses_ops=parse.ops,
                          backward_nodes_from_parsed_loss=sum(parsed_nodes.values()),
                          by_file=dict(count.by_file.most_common())), indent=1))


if __name__ == '__main__':
    main()

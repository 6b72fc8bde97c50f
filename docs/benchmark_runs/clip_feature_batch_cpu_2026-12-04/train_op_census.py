"""Count the work of one training forward pass of a config on the CPU, as a GPU would launch it.

    python docs/benchmark_runs/clip_feature_batch_cpu_2026-12-04/train_op_census.py CONFIG \
        [ATTR=VALUE ...] > census.json

Builds the model (random weights) and one synthetic 3-frame clip, runs ``model.loss`` and
``model.parse_losses`` once with the 3D convolutions on the GPU's code path and reports
``trackocc.analysis.train_ops.count_training_ops`` (also ``tools/analysis_tools/train_ops.py``,
made from this script at the session's end):
- ``forward_ops``: the ATen ops the forward dispatches that are not views (each is at least
  one kernel launch on a GPU), ``forward_view_ops`` the views, ``by_file`` the ops by the
  innermost trackocc source file;
- ``backward_nodes``: the autograd nodes the backward pass of the terms' plain sum will run
  (each one or more kernels), ``accumulate_grad`` the parameters reached;
- ``parse_losses_ops``: the ops of ``model.parse_losses`` (the total the optimizer steps on),
  and ``backward_nodes_from_parsed_loss`` the nodes of that total's backward pass (what
  training runs). Files made before this was added lack the two.
The counts are the same on every machine. ``ATTR=VALUE`` sets model attributes (e.g.
``clip_feature_batch=False``). Needs ~23 GB of memory for the paper config.
"""
import json
import sys

from trackocc.analysis.train_ops import count_training_ops, native_3d_convolutions
from training_clip import model_and_clip


def main():
    model, data = model_and_clip(sys.argv[1])
    settings = dict(arg.split('=', 1) for arg in sys.argv[2:])
    for key, value in settings.items():
        setattr(model, key, json.loads(value.lower()) if value in ('True', 'False')
                else json.loads(value))
    with native_3d_convolutions():
        counts = count_training_ops(model, data)
    print(json.dumps(dict(config=sys.argv[1], settings=settings, **counts), indent=1))


if __name__ == '__main__':
    main()

"""Faster testing: fused batch norms and CUDA graphs of the encoders (docs/benchmark.md)."""
import copy
from typing import Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from trackocc.registry import HOOKS

from ...utils.cuda_graph import DETECTOR_GRAPH_MODULES, graph_counts, graph_modules
from ...utils.fuse_conv_bn import fuse_conv_bn


@HOOKS.register_module()
class FastInferenceHook(Hook):
    """Test a faster copy of the model (``tools/test.py --fast``).

    Before testing (checkpoint loaded, EMA weights swapped in by ``EMAHook``, whose priority
    is higher), the runner's model is replaced by a copy with the batch norms folded into
    their convolutions and, on a GPU, the encoder stages wrapped in
    :class:`trackocc.utils.cuda_graph.CUDAGraphModule` (captured after two frames of a camera
    rig, replayed afterwards). After testing the runner gets its own model back, untouched
    (hooks such as ``EMAHook`` swap parameters of that model, which a fused copy no longer
    matches). Test loops only: validation during training runs the training model.

    Args:
        fuse_conv_bn (bool): fold batch norms. Defaults to True.
        cuda_graph_modules (Sequence[str]): detector attributes to run as CUDA graphs
            (default: image backbone / neck, view transformer, volume encoder, occupancy
            encoder); empty disables graphs.
    """

    priority = 'VERY_LOW'

    def __init__(self, fuse_conv_bn: bool = True,
                 cuda_graph_modules: Sequence[str] = DETECTOR_GRAPH_MODULES) -> None:
        self.fuse = fuse_conv_bn
        self.graph_names = tuple(cuda_graph_modules)
        self._runner_model: Optional[torch.nn.Module] = None

    def before_test(self, runner) -> None:
        self._runner_model = runner.model
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if hasattr(model, 'reset_tracks'):  # a streaming state (events, caches) is not copied
            model.reset_tracks()
        fast = copy.deepcopy(model).eval()
        done = []
        if self.fuse:
            done.append(f'{fuse_conv_bn(fast)} batch norms folded into convolutions')
        device = next(fast.parameters()).device
        if self.graph_names and device.type == 'cuda':
            done.append('CUDA graphs for ' + ', '.join(graph_modules(fast, self.graph_names)))
        elif self.graph_names:
            done.append(f'no CUDA graphs on {device}')
        runner.model = fast
        print_log('FastInferenceHook: testing a copy of the model: ' + '; '.join(done),
                  logger='current')

    def after_test(self, runner) -> None:
        # a graph that was never replayed (e.g. a rig that changes every frame) ran eagerly
        graphs = [f'{name} {n["captures"]} captures / {n["replays"]} replays'
                  for name, n in graph_counts(runner.model).items()]
        if graphs:
            print_log('FastInferenceHook: CUDA graphs: ' + ', '.join(graphs), logger='current')
        if self._runner_model is not None:
            runner.model, self._runner_model = self._runner_model, None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

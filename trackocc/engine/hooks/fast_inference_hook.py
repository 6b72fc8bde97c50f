"""Faster testing: fused batch norms, compiled sub-networks, CUDA graphs of the encoders and
(with a fixed query budget) of the decoder / head, weights held in the autocast dtype,
channels-last convolution stacks, TF32 float32 matmuls (docs/benchmark.md)."""
import copy
from typing import Optional, Sequence, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from trackocc.registry import HOOKS

from ...utils.autocast_weights import AutocastWeights
from ...utils.compile_modules import (compile_modules, dynamic_shape_modules,
                                      float32_matmul_precision)
from ...utils.cuda_graph import (BUDGET_GRAPH_MODULES, DETECTOR_GRAPH_MODULES, RIG_GRAPH_MODULES,
                                 TRACKING_GRAPH_MODULES, check_graph_names,
                                 check_rekey_warmup, graph_counts, graph_modules)
from ...utils.fuse_conv_bn import fuse_conv_bn
from ...utils.memory_format import ChannelsLast


@HOOKS.register_module()
class FastInferenceHook(Hook):
    """Test a faster copy of the model (``tools/test.py --fast``).

    Before testing (checkpoint loaded, EMA weights swapped in by ``EMAHook``, whose priority
    is higher), the runner's model is replaced by a copy with the batch norms folded into
    their convolutions and, on a GPU, the named sub-networks wrapped in
    :class:`trackocc.utils.cuda_graph.CUDAGraphModule` (captured after two frames of a camera
    rig, replayed afterwards). After testing the runner gets its own model back, untouched
    (hooks such as ``EMAHook`` swap parameters of that model, which a fused copy no longer
    matches). Test loops only: validation during training runs the training model.

    Args:
        fuse_conv_bn (bool): fold batch norms. Defaults to True.
        cuda_graph_modules (Sequence[str], optional): detector attributes to run as CUDA
            graphs; empty disables graphs. Default (None): the encoders
            (``DETECTOR_GRAPH_MODULES``: image backbone / neck, view transformer, volume
            encoder, occupancy encoder) and, with a query budget (this hook's or the
            model's own ``query_budget``), ``'pts_bbox_head'`` (the decoder / head) and
            ``'panoptic_merge'`` (the merge, reading the head's graph outputs in place;
            equal to the eager merge, docs/benchmark.md). A given list is used as it is;
            ``'pts_bbox_head'`` or ``'panoptic_merge'`` in it needs a query budget.
        query_budget (int, optional): ``model.query_budget`` of the tested copy (the
            runner's model keeps its own): the head runs on exactly this many thing query
            rows every frame (fresh queries + live tracks, padded and masked), so its shapes
            are fixed and it can be a CUDA graph. A frame with more queries stops the test
            with an error (no track is dropped). Default None: the model's own setting.
        autocast_weights (bool): when the test loop runs under autocast (``test_cfg.fp16``):
            hold the convolution / linear weights that the first test frame runs under
            autocast in the autocast dtype (:class:`trackocc.utils.autocast_weights.
            AutocastWeights`; same results, no per-frame weight casts), float32 restored
            after testing. Without autocast it does not apply (logged, left off).
            Defaults to False.
        channels_last (bool): run the image (backbone, neck, depth net) and volume (volume
            encoder) convolution stacks of the copy channels-last
            (:class:`trackocc.utils.memory_format.ChannelsLast`, entered after the batch
            norms are folded; held autocast weights keep the layout); same results up to
            float rounding, default layout restored after testing. Defaults to False.
        compile_modules (Sequence[str]): sub-modules of the copy (dotted paths, e.g.
            ``occ_encoder.upsampler``) to ``torch.compile`` after the fold and before the
            CUDA graphs capture them (fused elementwise kernels; a layer whose shapes follow
            the camera rig recompiles once at the first new rig). The tracking modules whose
            rows follow the number of tracks (``memory_bank``, ``query_interaction``) compile
            with dynamic shapes unless ``fixed_track_rows``
            (:func:`~trackocc.utils.compile_modules.dynamic_shape_modules`). Defaults to none.
        tf32_matmul (bool): test with float32 matmuls in TF32 (cuDNN runs float32
            convolutions in TF32 already); the previous setting restored after testing.
            Defaults to False.
        stable_outputs (Sequence[str], optional): graphed sub-networks whose outputs stay at
            one address across their captures (``CUDAGraphModule.stable_output``: one device
            copy per output tensor, same results), so the graphs reading them are not captured
            again at each new camera rig. Default (None): the rig-dependent ones among the
            graphed modules (``RIG_GRAPH_MODULES``: ``img_view_transformer``,
            ``occ_encoder``). A given list is used as it is (empty: none); each must be among
            the graphed modules.
        fixed_track_rows (bool): the copy keeps its tracks at the query budget's row count
            (``TrackOcc.fixed_track_rows``: the tracking modules on fixed shapes, same
            results); needs a query budget (this hook's or the model's). Only with it may
            ``cuda_graph_modules`` name the tracking: ``'memory_bank'`` and
            ``'query_interaction'``, or instead ``'track_carry'`` (both of them, the glue
            between them and the ego alignment as one graph), and ``'track_settle'`` (the
            tracker's update after the head and the merge as one graph, instead of
            ``'panoptic_merge'``). Defaults to False.
        graph_rekey_warmup (int, optional): eager calls a graphed sub-network gets at a new
            signature (a new camera rig) once it captured before
            (``CUDAGraphModule.rekey_warmup``; None: the first signature's warm-up, two
            calls). Defaults to 0: captured at the rig's first frame (the same predictions;
            on one H200, 2026-12-03, all frames of 12 x 20-frame sequences at 102.4 FPS
            against 98.7 with two warm-up calls, docs/benchmark.md).
        float32_queries (bool): under autocast, the head's decoder and per-query branches
            run in float32 (``TrackOccHead.float32_queries``; only the voxel-sized mask
            logits in the autocast dtype), so that a track's birth does not hang on bf16
            rounding of the query features. Defaults to True (on one H200, 2026-12-03: the
            OccSTQ guard on 4 x 100-frame sequences 0.09 points instead of 0.22-0.29, at no
            measurable cost; docs/benchmark.md). No effect without autocast.
        fixed_rig_inputs (bool, optional): the copy computes what depends only on the camera
            rig (the bev_pool ranks, the occupancy encoder's camera points and query plan) once
            per rig into fixed-size tensors at fixed addresses and passes them to the view
            transformer and the occupancy encoder as graph inputs
            (``TrackOcc.fixed_rig_inputs``): their CUDA graphs replay for every rig instead
            of capturing again at each new one. Same predictions up to float rounding.
            Default (None): on where the detector takes them (TrackOcc; on one H200,
            2026-12-04, a sequence's first frame 12-13 ms instead of 590-660 ms, every frame
            steady, the OccSTQ guard held; docs/benchmark.md); True: required (a detector
            without them raises); False: off.
        float32_masks (bool): under autocast, the head's mask logits accumulated and kept in
            float32 (``TrackOccHead.float32_masks``), so the merge decides a voxel's class
            and track without their rounding to bf16. Defaults to False: on one H200
            (2026-12-04) it cost 0.11-0.15 ms a frame and left as many voxels unlike fp32
            eager's as without it. No effect without autocast.
    """

    priority = 'VERY_LOW'

    def __init__(self, fuse_conv_bn: bool = True,
                 cuda_graph_modules: Optional[Sequence[str]] = None,
                 query_budget: Optional[int] = None,
                 autocast_weights: bool = False, channels_last: bool = False,
                 compile_modules: Sequence[str] = (), tf32_matmul: bool = False,
                 stable_outputs: Optional[Sequence[str]] = None,
                 fixed_track_rows: bool = False,
                 graph_rekey_warmup: Optional[int] = 0,
                 float32_queries: bool = True,
                 fixed_rig_inputs: Optional[bool] = None,
                 float32_masks: bool = False) -> None:
        if query_budget is not None and (isinstance(query_budget, bool) or
                                         not isinstance(query_budget, int) or
                                         query_budget < 1):
            raise ValueError('FastInferenceHook: query_budget must be None or an int >= 1, got '
                             f'{query_budget!r}')
        if cuda_graph_modules is not None and (
                isinstance(cuda_graph_modules, str) or
                not all(isinstance(n, str) for n in cuda_graph_modules)):
            raise TypeError('FastInferenceHook: cuda_graph_modules must be a list of attribute '
                            f'names, got {cuda_graph_modules!r}')
        if isinstance(compile_modules, str) or \
                not all(isinstance(n, str) for n in compile_modules):
            raise TypeError('FastInferenceHook: compile_modules must be a list of sub-module '
                            f'paths, got {compile_modules!r}')
        if stable_outputs is not None and (
                isinstance(stable_outputs, str) or
                not all(isinstance(n, str) for n in stable_outputs)):
            raise TypeError('FastInferenceHook: stable_outputs must be a list of attribute '
                            f'names, got {stable_outputs!r}')
        self.graph_rekey_warmup = check_rekey_warmup(graph_rekey_warmup,
                                                     'FastInferenceHook: graph_rekey_warmup')
        self.stable_outputs: Optional[Tuple[str, ...]] = \
            None if stable_outputs is None else tuple(stable_outputs)
        self.fixed_track_rows = bool(fixed_track_rows)
        check_graph_names(cuda_graph_modules or (), 'FastInferenceHook')
        tracking = [n for n in TRACKING_GRAPH_MODULES if n in (cuda_graph_modules or ())]
        if tracking and not self.fixed_track_rows:
            raise ValueError(f'FastInferenceHook: {tracking} in cuda_graph_modules need '
                             'fixed_track_rows (without it the number of tracks, and so their '
                             'shapes, change every frame)')
        self.fuse = fuse_conv_bn
        self.cuda_graph_modules: Optional[Tuple[str, ...]] = \
            None if cuda_graph_modules is None else tuple(cuda_graph_modules)
        if self.cuda_graph_modules is not None and query_budget is not None:
            self.graph_names(query_budget)  # a list that cannot work fails here already
        self.query_budget = query_budget
        self.autocast_weights = bool(autocast_weights)
        self.channels_last = bool(channels_last)
        self.compile_modules = tuple(compile_modules)
        self.tf32_matmul = bool(tf32_matmul)
        self.float32_queries = bool(float32_queries)
        self.float32_masks = bool(float32_masks)
        self.fixed_rig_inputs: Optional[bool] = \
            None if fixed_rig_inputs is None else bool(fixed_rig_inputs)
        self._tf32 = None  # the float32_matmul_precision block while testing
        self._runner_model: Optional[torch.nn.Module] = None
        self._held: Optional[AutocastWeights] = None
        self._layout: Optional[ChannelsLast] = None

    def graph_names(self, budget: Optional[int]) -> Tuple[str, ...]:
        """The sub-networks to graph in a model whose query budget is ``budget``: the given
        ``cuda_graph_modules``, by default the encoders and, with a budget, the head and the
        merge."""
        if self.cuda_graph_modules is None:
            return DETECTOR_GRAPH_MODULES + (BUDGET_GRAPH_MODULES if budget is not None else ())
        for name in BUDGET_GRAPH_MODULES:
            if name in self.cuda_graph_modules and budget is None:
                raise ValueError(
                    f"FastInferenceHook: '{name}' in cuda_graph_modules needs a query_budget "
                    "(the hook's or model.query_budget; without one the number of thing "
                    "queries, and so the head's and the merge's input shapes, change every "
                    'frame)')
        return self.cuda_graph_modules

    def stable_output_names(self, names: Sequence[str]) -> Tuple[str, ...]:
        """The graphed modules (of ``names``) that return stable outputs: the given
        ``stable_outputs``, by default the rig-dependent ones among ``names``."""
        if self.stable_outputs is None:
            return tuple(n for n in RIG_GRAPH_MODULES if n in names)
        return self.stable_outputs

    def _check_model(self, model, names: Sequence[str], budget: Optional[int]) -> None:
        """Refuse graph names the model lacks, a budget it cannot take and fixed track rows
        without a budget (``budget``: the hook's or the model's), before the runner's model is
        replaced."""
        missing = [n for n in names if not hasattr(model, n)]
        if missing:
            raise ValueError(f'FastInferenceHook: cuda_graph_modules {missing} are not '
                             f'attributes of {type(model).__name__}')
        if self.fixed_track_rows and budget is None:
            raise ValueError('FastInferenceHook: fixed_track_rows needs a query_budget (the '
                             "hook's or model.query_budget)")
        outside = [n for n in self.stable_output_names(names) if n not in names]
        if outside:
            raise ValueError(f'FastInferenceHook: stable_outputs {outside} are not among the '
                             f'graphed modules {list(names)}')
        if self.fixed_rig_inputs and not hasattr(model, 'fixed_rig_inputs'):
            raise ValueError(f'FastInferenceHook: fixed_rig_inputs needs a detector that can '
                             f'take them (TrackOcc), got {type(model).__name__}')
        if self.query_budget is not None and \
                not isinstance(getattr(type(model), 'query_budget', None), property):
            raise ValueError(f'FastInferenceHook: query_budget needs a detector with a '
                             f'query_budget (TrackOcc), got {type(model).__name__}')

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        own_budget = getattr(model, 'query_budget', None)  # e.g. model.query_budget in a config
        budget = own_budget if self.query_budget is None else self.query_budget
        names = self.graph_names(budget)
        self._check_model(model, names, budget)
        self._held = self._layout = None
        if hasattr(model, 'reset_tracks'):  # a streaming state (events, caches) is not copied
            model.reset_tracks()
        fast = copy.deepcopy(model).eval()
        done = []
        if self.query_budget is not None:
            try:
                fast.query_budget = self.query_budget
            except ValueError as err:
                raise ValueError(f'FastInferenceHook: query_budget: {err}') from err
        if budget is not None:
            done.append(f'query budget {budget} thing query rows' +
                        (" (the model's)" if self.query_budget is None else ''))
        if self.fixed_track_rows:
            fast.fixed_track_rows = True
            done.append('tracks kept at the budget\'s rows')
        if hasattr(fast, 'fixed_rig_inputs'):  # None: on, as the detector can take them
            fast.fixed_rig_inputs = self.fixed_rig_inputs is not False
            if fast.fixed_rig_inputs:
                done.append('camera rig inputs at fixed addresses (one graph for every rig)')
        head = getattr(fast, 'pts_bbox_head', None)
        for option, what in (('float32_queries', 'decoder queries'),
                             ('float32_masks', 'mask logits')):
            on = getattr(self, option)
            if hasattr(head, option):
                setattr(head, option, on)
                if on:
                    done.append(f'{what} in float32 under autocast')
            elif on:
                done.append(f'{option} does not apply (the head has no such option)')
        if self.fuse:
            done.append(f'{fuse_conv_bn(fast)} batch norms folded into convolutions')
        if self.compile_modules:  # after the fold (it replaces modules), before the graphs;
            # a path the model lacks stops here, the runner's model still in place
            dynamic = dynamic_shape_modules(fast)
            try:
                compiled = compile_modules(fast, self.compile_modules, strict=True,
                                           dynamic=dynamic)
            except ValueError as err:
                raise ValueError(f'FastInferenceHook: {err}') from None
            done.append('compiled ' + ', '.join(
                n + (' (dynamic shapes)' if n in dynamic else '') for n in compiled))
        device = next(fast.parameters()).device
        if names and device.type == 'cuda':
            stable = self.stable_output_names(names)
            done.append('CUDA graphs for ' + ', '.join(
                graph_modules(fast, names, stable_outputs=stable,
                              rekey_warmup=self.graph_rekey_warmup)))
            if stable:
                done.append('stable outputs of ' + ', '.join(stable))
        elif names:
            done.append(f'no CUDA graphs on {device} (CUDA only; {", ".join(names)} run '
                        'eagerly)')
        if self.channels_last:  # after the fold (it replaces convolutions), before the probe
            self._layout = ChannelsLast(fast).__enter__()
            done.append(f'{self._layout.count} convolutions channels-last in ' +
                        ', '.join(self._layout.paths))
        if self.autocast_weights:
            self._probe_first_step(fast)
            done.append('autocast weights after the first test frame')
        if self.tf32_matmul:
            self._tf32 = float32_matmul_precision('high')
            self._tf32.__enter__()
            done.append('float32 matmuls in TF32')
        self._runner_model = runner.model
        runner.model = fast
        print_log('FastInferenceHook: testing a copy of the model: ' + '; '.join(done),
                  logger='current')

    def _probe_first_step(self, model) -> None:
        """Route the first ``test_step`` of ``model`` through :meth:`AutocastWeights.probe`:
        the layers that frame runs under the test loop's autocast are then held in its
        dtype. The probe is the real first frame, so the stream is not disturbed."""
        own_step = model.test_step

        def first_step(data):
            del model.test_step  # later batches call the class's test_step
            device = next(model.parameters()).device.type
            if not torch.is_autocast_enabled(device):
                print_log('FastInferenceHook: autocast weights do not apply: the test loop '
                          'runs without autocast (float32; test_cfg.fp16=True or '
                          'tools/test.py --amp runs it under autocast)', logger='current')
                return own_step(data)
            outputs = []
            held = AutocastWeights(model, torch.get_autocast_dtype(device))
            held.probe(lambda: outputs.append(own_step(data)))
            self._held = held.__enter__()  # drops the graphs warmed up with float32 weights
            print_log(f'FastInferenceHook: {held.count} convolution / linear layers held in '
                      f'{held.dtype} (those the first test frame ran under autocast)',
                      logger='current')
            return outputs[0]

        model.test_step = first_step

    def after_test(self, runner) -> None:
        # a graph that was never replayed (e.g. a rig that changes every frame) ran eagerly
        graphs = [f'{name} {n["captures"]} captures / {n["replays"]} replays'
                  for name, n in graph_counts(runner.model).items()]
        if graphs:
            print_log('FastInferenceHook: CUDA graphs: ' + ', '.join(graphs), logger='current')
        if self._runner_model is not None:
            fast = runner.model
            fast.__dict__.pop('test_step', None)  # the probe's, if no test batch ran
            if self._held is not None:
                self._held.__exit__(None, None, None)  # float32 weights back, graphs dropped
                self._held = None
            if self._layout is not None:  # entered before the held weights: left after them
                self._layout.__exit__(None, None, None)
                self._layout = None
            runner.model, self._runner_model = self._runner_model, None
        if self._tf32 is not None:  # the precision before testing back
            self._tf32.__exit__(None, None, None)
            self._tf32 = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

"""Training with the dense sub-networks compiled by ``torch.compile`` (issue 16 item 3).

A training iteration of the paper config is bound by the host on one H200 (docs/benchmark.md:
~6 300 kernels and ~4 200 forward ops and backward nodes an iteration, each launched from
Python or the autograd engine). Inductor fuses the convolution stacks' elementwise chains
(batch norms, activations, residual adds) into fewer kernels; its ``reduce-overhead`` mode also
replays the compiled forward and backward as CUDA graphs (CUDA-graph trees), one launch each.
On one H200 (2026-12-05) the paper config's bf16 iteration took 205-206 ms with the six default
modules compiled against 238-249 ms eager in the same process, in either mode
(docs/benchmark.md).
"""
from typing import Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from trackocc.registry import HOOKS

from ...utils.compile_modules import (CUDAGRAPH_COMPILE_MODES, TRAINING_COMPILE_MODULES,
                                      compile_in_place)


@HOOKS.register_module()
class CompileModulesHook(Hook):
    """``torch.compile`` named sub-modules of the trained model in place before training.

    The modules are compiled with :meth:`torch.nn.Module.compile`, so the model keeps its
    parameter names, state dict keys and optimizer groups (checkpoints load into an eager
    model as before) and a data-parallel wrapper keeps its module. The weight average of an
    EMA hook is a copy made before training starts (``before_run``) and stays eager. In a
    mode that runs CUDA-graph trees (``reduce-overhead``, ``max-autotune``) a step mark
    (``torch.compiler.cudagraph_mark_step_begin``) precedes each training and validation
    iteration, so a graph's outputs are not overwritten while the iteration uses them.
    (MMEngine's own ``compile`` setting compiles the whole ``train_step``, which breaks at
    every host synchronisation of the matching, targets and tracking; this compiles only the
    dense sub-networks.)

    Args:
        modules (Sequence[str]): dotted paths of the model's sub-modules to compile.
            Defaults to the image backbone and neck, the depth net, the volume encoder
            backbone and neck and the mask-feature upsampler (``TRAINING_COMPILE_MODULES``).
        mode (str, optional): ``torch.compile`` mode (None: Inductor's default).
        backend (str, optional): ``torch.compile`` backend (None: Inductor); not with
            ``mode``.
        dynamic (bool, optional): ``torch.compile``'s ``dynamic``. Defaults to None.
    """

    # compiles in before_train, after every hook's before_run (where an EMA hook copies the
    # model) and after the checkpoint is loaded or resumed
    priority = 'LOW'

    def __init__(self, modules: Sequence[str] = TRAINING_COMPILE_MODULES,
                 mode: Optional[str] = None, backend: Optional[str] = None,
                 dynamic: Optional[bool] = None) -> None:
        if isinstance(modules, str) or not modules or \
                not all(isinstance(n, str) for n in modules):
            raise TypeError(f'CompileModulesHook: modules must be a non-empty list of '
                            f'sub-module paths, got {modules!r}')
        if mode is not None and backend is not None:
            raise ValueError('CompileModulesHook: give mode or backend, not both (a mode '
                             'is an Inductor setting)')
        self.modules = tuple(modules)
        self.mode = mode
        self.kwargs = dict(dynamic=dynamic)
        if mode is not None:
            self.kwargs['mode'] = mode
        if backend is not None:
            self.kwargs['backend'] = backend
        self.marks_steps = mode in CUDAGRAPH_COMPILE_MODES

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        done = compile_in_place(model, self.modules, **self.kwargs)
        print_log(f'CompileModulesHook: compiled {", ".join(done) or "nothing new"} '
                  f'(mode {self.mode or "default"})', logger='current')

    def _mark_step(self) -> None:
        if self.marks_steps:
            torch.compiler.cudagraph_mark_step_begin()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._mark_step()

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._mark_step()

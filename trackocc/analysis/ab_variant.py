"""An A/B variant of the fast path inside one process: extra sub-modules compiled and / or
replayed as CUDA graphs, graphed ones returning stable outputs, or model settings (e.g.
``fixed_track_rows``), only while the variant is on.

The host's speed differs between processes on the GPU machine by more than the change under
test (e.g. the merge as a CUDA graph saves a few tenths of a millisecond of a ~9 ms frame; the
host stages differ by 2x between processes), so ``benchmark.py --ab-*`` alternates the fast
mode without (A) and with (B) the variant's modules in one process, and :func:`ab_summary`
compares the steady frames of the A and B runs. Entering a :class:`ModuleVariant` the first
time compiles / wraps its modules; later entries put the same wrappers back (their compiled
code and captured graphs kept), and leaving restores the modules the model had, so A runs what
it ran before B.
"""
from __future__ import annotations

import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn

from trackocc.utils.compile_modules import compile_modules, dynamic_shape_modules
from trackocc.utils.cuda_graph import CUDAGraphModule, graph_modules

AB_SUFFIX = '+ab'


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition('.')
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, module)


def _owner(model: nn.Module, key: str) -> Tuple[object, str, List[CUDAGraphModule]]:
    """The object and attribute name a setting ``key`` names: an attribute of ``model`` or,
    dotted, of one of its sub-modules (e.g. ``occ_encoder.rekey_warmup`` of a graph wrapper),
    and the graph wrappers whose captured graphs the setting changes: those it lies inside
    (``pts_bbox_head.float32_queries`` is the wrapped head's, whose graph must capture
    again); a wrapper's own attribute (``rekey_warmup``) changes no graph."""
    parent_name, _, leaf = key.rpartition('.')
    owner, wrappers = model, []
    for part in parent_name.split('.') if parent_name else ():
        owner = getattr(owner, part)
        if not isinstance(owner, nn.Module):
            raise AttributeError(part)
        if isinstance(owner, CUDAGraphModule):
            wrappers.append(owner)
            owner = owner.module
    if wrappers and wrappers[-1].module is owner and _wrapper_attribute(wrappers[-1], leaf):
        return wrappers.pop(), leaf, wrappers
    return owner, leaf, wrappers


def _wrapper_attribute(wrapper: CUDAGraphModule, name: str) -> bool:
    """Whether ``name`` is the graph wrapper's own attribute (not the wrapped module's)."""
    return name in vars(wrapper) or hasattr(type(wrapper), name)


class ModuleVariant:
    """Sub-modules compiled (``compile_names``, dotted paths) and then wrapped as CUDA graphs
    (``graph_names``, children of ``model``), and graphed children returning stable outputs
    (``stable_names``, :class:`~trackocc.utils.cuda_graph.CUDAGraphModule`
    ``stable_output``), and attributes of the model or, by dotted keys, of its sub-modules
    set to ``settings`` values (e.g. ``dict(fixed_track_rows=True)``,
    ``{'occ_encoder.rekey_warmup': 0}``; an attribute of a graphed module, e.g.
    ``{'pts_bbox_head.float32_queries': True}``, is set on the wrapped module and its graph
    dropped on entering and on leaving, so each side captures its own), and graphed children
    run eagerly instead
    (``ungraph_names``, e.g. the merge when the B runs graph a module that calls it), while
    inside ``with variant:``. ``emulate``: the variant's graphs emulated
    (:class:`~trackocc.utils.cuda_graph.CUDAGraphModule` ``emulate``), as the runs' own.

    Every name must exist, and none of the first two kinds may already be compiled, already
    be graphed, or lie inside a graphed module: the variant would change nothing, or change a
    module a captured graph no longer calls; a stable name must be a graphed child without
    stable outputs; an ungraphed name must be a graphed child; a setting must be an attribute
    the model has (a ValueError names it).
    Checked when built, before anything changes.
    """

    def __init__(self, model: nn.Module, compile_names: Sequence[str] = (),
                 graph_names: Sequence[str] = (), compile_mode: Optional[str] = None,
                 stable_names: Sequence[str] = (), settings: Optional[Dict[str, object]] = None,
                 ungraph_names: Sequence[str] = (), emulate: bool = False):
        if not (compile_names or graph_names or stable_names or settings or ungraph_names):
            raise ValueError('ModuleVariant: no module to compile, graph, make stable or run '
                             'eagerly, and no setting')
        self.model = model
        self.compile_names = list(compile_names)
        self.graph_names = list(graph_names)
        self.stable_names = list(stable_names)
        self.compile_mode = compile_mode
        for name in self.compile_names + self.graph_names:
            self._check(name, graphed=name in self.graph_names)
        for name in self.stable_names:
            wrapper = getattr(model, name, None)
            if not isinstance(wrapper, CUDAGraphModule) or wrapper.stable_output:
                raise ValueError(f'ModuleVariant: stable output {name!r} must be a CUDA graph '
                                 'of every run without stable outputs')
        self.ungraph_names = list(ungraph_names)
        self.emulate = emulate
        for name in self.ungraph_names:
            if not isinstance(getattr(model, name, None), CUDAGraphModule):
                raise ValueError(f'ModuleVariant: {name!r} to run eagerly must be a CUDA graph '
                                 'of every run')
        self._graphs: Dict[str, CUDAGraphModule] = {}  # the ungraphed wrappers while on
        self.settings = dict(settings or {})
        unknown = [k for k in self.settings if not self._has_setting(k)]
        if unknown:
            raise ValueError(f'ModuleVariant: {type(model).__name__} has no setting {unknown}')
        self._saved_settings: Dict[str, object] = {}
        self.names = list(dict.fromkeys(self.compile_names + self.graph_names))
        self._applied: Optional[Dict[str, nn.Module]] = None
        self._original: Optional[Dict[str, nn.Module]] = None
        self.entries = 0

    def _has_setting(self, key: str) -> bool:
        try:
            owner, attr, _ = _owner(self.model, key)
        except AttributeError:  # no such sub-module
            return False
        return hasattr(owner, attr)

    def _check(self, name: str, graphed: bool) -> None:
        if graphed and '.' in name:
            raise ValueError(f'ModuleVariant: {name!r}: CUDA graphs wrap children of the model '
                             '(no dotted path)')
        module = self.model
        for i, part in enumerate(name.split('.')):
            module = getattr(module, part, None)
            if not isinstance(module, nn.Module):
                raise ValueError(f'ModuleVariant: {type(self.model).__name__} has no '
                                 f'sub-module {name!r}')
            if isinstance(module, CUDAGraphModule):
                where = 'is' if i == name.count('.') else f'lies in {part!r}, which is'
                raise ValueError(f'ModuleVariant: {name!r} {where} already a CUDA graph '
                                 'in every run (leave it out of the variant)')
        if name in self.compile_names and hasattr(module, '_orig_mod'):
            raise ValueError(f'ModuleVariant: {name!r} is already compiled in every run')

    def __enter__(self) -> 'ModuleVariant':
        if self._original is not None:
            raise RuntimeError('ModuleVariant: already on')
        self._saved_settings = {}
        try:  # the settings first: one the model refuses leaves everything as it was
            for key, value in self.settings.items():
                owner, attr, wrappers = _owner(self.model, key)
                self._saved_settings[key] = getattr(owner, attr)
                setattr(owner, attr, value)
                for wrapper in wrappers:  # its graph ran the former setting
                    wrapper.drop()
        except Exception:
            self._restore_settings()
            raise
        for name in self.ungraph_names:  # the wrapped module itself (its graph kept for A)
            self._graphs[name] = getattr(self.model, name)
            setattr(self.model, name, self._graphs[name].module)
        self._original = {n: self.model.get_submodule(n) for n in self.names}
        if self._applied is None:  # compiled first, then captured by the graphs
            try:
                if self.compile_names:
                    compile_modules(self.model, self.compile_names, self.compile_mode,
                                    strict=True, dynamic=dynamic_shape_modules(self.model))
                graph_modules(self.model, self.graph_names, emulate=self.emulate)
            except Exception:
                self.__exit__()
                raise
            self._applied = {n: self.model.get_submodule(n) for n in self.names}
        else:  # a dotted name's parent is put back before a graph wraps the parent
            for name in self.names:
                _set_submodule(self.model, name, self._applied[name])
        for name in self.stable_names:  # drops the graph: it captures again
            getattr(self.model, name).stable_output = True
        self.entries += 1
        return self

    def _restore_settings(self) -> None:
        for key, value in reversed(list(self._saved_settings.items())):
            owner, attr, wrappers = _owner(self.model, key)
            setattr(owner, attr, value)
            for wrapper in wrappers:
                wrapper.drop()
        self._saved_settings = {}

    def __exit__(self, *exc) -> None:
        self._restore_settings()
        for name in self.stable_names:
            getattr(self.model, name).stable_output = False
        for name in reversed(self.names):  # graphs unwrapped before their children
            _set_submodule(self.model, name, self._original[name])
        self._original = None
        self._restore_graphs()

    def _restore_graphs(self) -> None:
        for name, wrapper in self._graphs.items():
            setattr(self.model, name, wrapper)
        self._graphs = {}


def ab_labels(mode: str, rounds: int) -> List[Tuple[str, bool]]:
    """``[(label, variant on), ...]`` of a mode's A/B runs: ``mode``, ``mode+ab``, then
    ``mode#2``, ``mode+ab#2``, ... for ``rounds`` rounds."""
    if rounds < 1:
        raise ValueError(f'ab_labels: rounds must be >= 1, got {rounds}')
    out = []
    for r in range(1, rounds + 1):
        tail = f'#{r}' if r > 1 else ''
        out += [(f'{mode}{tail}', False), (f'{mode}{AB_SUFFIX}{tail}', True)]
    return out


def _mean(values: List[float]) -> Optional[float]:
    return statistics.fmean(values) if values else None


def ab_summary(modes: Dict[str, dict], mode: str, rounds: int) -> Dict[str, object]:
    """A against B over the steady frames (``steady_state``) of ``mode``'s runs in ``modes``
    (:func:`ab_labels`): per side the steady FPS and median latency of every run and their
    means, the all-frame FPS (``all_fps``: start-up frames included, e.g. captures at each new
    camera rig), the mean time of a sequence's first frame (``sequence_start_ms``; held-out
    runs), the mean steady stage times, and per stage ``b_minus_a_ms``. Runs that failed
    or had no steady frame are left out of the means (``runs`` says which counted)."""
    sides = {'a': [], 'b': []}
    for label, on in ab_labels(mode, rounds):
        run = modes.get(label) or {}
        if run.get('steady_state'):
            sides['b' if on else 'a'].append((label, run))
    out: Dict[str, object] = {}
    for side, runs in sides.items():
        steady = [(label, run['steady_state']) for label, run in runs]
        stages = sorted({s for _, st in steady for s in st['stage_ms']})
        all_fps = [run['fps'] for _, run in runs if 'fps' in run]
        out[side] = dict(
            runs=[label for label, _ in runs],
            fps=[st['fps'] for _, st in steady], mean_fps=_mean([st['fps'] for _, st in steady]),
            median_ms=[st['latency']['median_ms'] for _, st in steady],
            all_fps=all_fps, mean_all_fps=_mean(all_fps),
            sequence_start_ms=_mean([run['sequence_starts']['mean_ms'] for _, run in runs
                                     if (run.get('sequence_starts') or {}).get('mean_ms')]),
            stage_ms={s: _mean([st['stage_ms'][s] for _, st in steady if s in st['stage_ms']])
                      for s in stages})
    a, b = out['a'], out['b']
    if a['runs'] and b['runs']:
        out['fps_ratio_b_over_a'] = b['mean_fps'] / a['mean_fps']
        if a['all_fps'] and b['all_fps']:
            out['all_fps_ratio_b_over_a'] = b['mean_all_fps'] / a['mean_all_fps']
        out['b_minus_a_ms'] = {s: b['stage_ms'][s] - a['stage_ms'][s]
                               for s in b['stage_ms'] if s in a['stage_ms']}
    return out


def train_ab_summary(modes: Dict[str, dict], mode: str, rounds: int) -> Dict[str, object]:
    """A against B over the training runs of ``mode`` in ``modes`` (:func:`ab_labels`): per
    side the runs' mean iteration times (``iter_ms``), forward and backward + step times,
    their means, and ``iter_ratio_b_over_a``. Runs that failed are left out."""
    sides = {'a': [], 'b': []}
    for label, on in ab_labels(mode, rounds):
        run = modes.get(label) or {}
        if 'iter_time' in run:
            sides['b' if on else 'a'].append((label, run))
    out: Dict[str, object] = {}
    for side, runs in sides.items():
        iters = [run['iter_time']['mean_ms'] for _, run in runs]
        out[side] = dict(runs=[label for label, _ in runs], iter_ms=iters,
                         mean_iter_ms=_mean(iters),
                         forward_ms=_mean([run['forward_ms'] for _, run in runs]),
                         backward_step_ms=_mean([run['backward_step_ms'] for _, run in runs]))
    if out['a']['runs'] and out['b']['runs']:
        out['iter_ratio_b_over_a'] = out['b']['mean_iter_ms'] / out['a']['mean_iter_ms']
    return out

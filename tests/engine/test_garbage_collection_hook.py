"""GarbageCollectionHook: Python's collector off inside the loops, on a schedule between
iterations, and the process's collector state restored at the end."""
import gc
import types
import weakref

import pytest
import torch

from trackocc.engine.hooks import GarbageCollectionHook
from trackocc.registry import HOOKS


class Node:
    """An object that can be part of a reference cycle."""


def make_cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def restore_gc():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if enabled else gc.disable)()


def test_cycles_wait_for_the_schedule_and_the_state_is_restored():
    gc.enable()
    hook = HOOKS.build(dict(type='GarbageCollectionHook', interval=3, full_interval=None))
    runner = types.SimpleNamespace(iter=0)
    hook.before_train(runner)
    assert not gc.isenabled() and gc.get_freeze_count() > 0
    cycle = make_cycle()
    _ = [[] for _ in range(50_000)]  # far past the automatic threshold: no collection
    for i in range(2):
        runner.iter = i
        hook.after_train_iter(runner, i)
        assert cycle() is not None, i
    runner.iter = 2
    hook.after_train_iter(runner, 2)  # the 3rd iteration: the young generations collected
    assert cycle() is None and hook.collections == 1
    hook.after_train(runner)
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_full_collections_and_a_val_loop_inside_training(monkeypatch):
    calls = []
    collect = gc.collect
    monkeypatch.setattr(gc, 'collect', lambda *a: calls.append(a) or collect(*a))
    hook = GarbageCollectionHook(interval=2, generation=0, full_interval=6)
    runner = types.SimpleNamespace(iter=0)
    hook.before_train(runner)
    assert calls == [()]  # one full collection before freezing
    calls.clear()
    for i in range(6):
        runner.iter = i
        hook.after_train_iter(runner, i)
    assert calls == [(0, ), (0, ), ()]  # iterations 2 and 4: generation 0; 6: everything
    calls.clear()
    # validation inside training keeps the training's schedule and restores nothing
    hook.before_val(runner)
    for i in range(4):
        hook.after_val_iter(runner, i)
    hook.after_val(runner)
    assert calls == [] and not gc.isenabled()
    hook.after_train(runner)
    assert calls == [()] and gc.isenabled()


def test_a_test_loop_alone_and_a_disabled_collector_stays_disabled():
    gc.disable()
    hook = GarbageCollectionHook(interval=1, freeze=False)
    runner = types.SimpleNamespace(iter=0)
    hook.before_test(runner)
    assert gc.get_freeze_count() == 0  # freeze=False
    cycle = make_cycle()
    hook.after_test_iter(runner, 0)
    assert cycle() is None
    hook.after_test(runner)
    assert not gc.isenabled()  # as it was found


@pytest.mark.parametrize('kwargs,match', [
    (dict(interval=0), 'interval must be'), (dict(interval=True), 'interval must be'),
    (dict(generation=3), 'generation must be'), (dict(full_interval=0), 'full_interval')])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GarbageCollectionHook(**kwargs)


@pytest.fixture(scope='module')
def tiny_model():
    import os.path as osp
    from trackocc.analysis.model_setup import build_model, load_config
    cfg = load_config(osp.join(osp.dirname(__file__), '..', '..', 'configs', 'trackocc',
                               'trackocc_tiny_synthetic.py'), None)
    return cfg, build_model(cfg, None, 'cpu')


def _tensors_left_in_cycles(step, runs: int = 2) -> list:
    step()  # the first call builds what stays (caches, lazily made buffers)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(runs):
            step()
        gc.collect()
        return [o for o in gc.garbage if isinstance(o, torch.Tensor)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_training_and_streaming_leave_no_tensors_in_reference_cycles(tiny_model):
    # what lets the hook hold the collector back for `interval` iterations: tensors freed by
    # reference counting alone, not waiting in cycles for a collection
    from trackocc.analysis.training import build_train_optim_wrapper, train_iteration
    from trackocc.utils.synthetic_inputs import synthetic_batch
    cfg, model = tiny_model
    model.train()
    optim_wrapper = build_train_optim_wrapper(cfg, model, None)
    clip = synthetic_batch(model, 3, with_gt=True, seed=0)
    assert _tensors_left_in_cycles(lambda: train_iteration(model, optim_wrapper, clip)) == []
    model.eval()
    frames = iter(range(100))

    def stream_frame():
        with torch.no_grad():
            model.test_step(synthetic_batch(model, 1, with_gt=False, seed=next(frames)))

    assert _tensors_left_in_cycles(stream_frame) == []

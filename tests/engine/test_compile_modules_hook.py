"""CompileModulesHook: the dense sub-networks compiled in place for training (issue 16 item 3).

On the CPU the runner trains the tiny config one iteration with and without the hook, the
compiled module traced by Dynamo with its ``eager`` backend (no code generation: seconds, not
minutes); Inductor's modes run on the GPU (docs/benchmark.md)."""
from pathlib import Path

import pytest
import torch
from mmengine.runner import Runner

import trackocc.engine  # noqa: F401  (registers the hooks)
from test_exact_resume_tiny import tiny_cfg
from trackocc.engine.hooks import CompileModulesHook
from trackocc.utils.compile_modules import (TRAINING_COMPILE_MODULES, compile_in_place,
                                            compiled_graphs)

ROOT = Path(__file__).resolve().parents[2]
CFG = ROOT / 'configs/trackocc/trackocc_tiny_synthetic.py'


def one_iteration(data_root, work_dir, hooks):
    """The tiny config trained one iteration by MMEngine's runner with ``hooks`` added."""
    cfg = tiny_cfg(data_root, work_dir, work_dir.name, num_workers=0)
    cfg.train_cfg.max_iters = 1
    cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + hooks
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


@pytest.mark.slow
def test_training_with_compiled_modules_keeps_names_and_values(tiny_train_data, tmp_path,
                                                                restore_torch_flags):
    eager = one_iteration(tiny_train_data, tmp_path / 'eager', [])
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        compiled = one_iteration(tiny_train_data, tmp_path / 'compiled', [dict(
            type='CompileModulesHook', modules=['img_neck', 'volume_encoder_neck'],
            backend='eager')])
    finally:
        torch._dynamo.reset()
    model = compiled.model
    assert compiled_graphs() >= 2  # Dynamo traced the two modules (graph breaks add more)
    assert model.img_neck._compiled_call_impl is not None
    assert model.volume_encoder_neck._compiled_call_impl is not None
    assert model.img_backbone._compiled_call_impl is None
    # the same parameter names and checkpoint keys (no `_orig_mod.`), the same step
    ref = eager.model.state_dict()
    got = model.state_dict()
    assert list(got) == list(ref)
    ckpt = torch.load(tmp_path / 'compiled' / 'iter_1.pth', map_location='cpu',
                      weights_only=False)
    assert list(ckpt['state_dict']) == list(ref)
    for key, value in ref.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_compile_in_place_checks_every_name_first():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    with pytest.raises(ValueError, match="no sub-module '2'"):
        compile_in_place(model, ['0', '2'], backend='eager')
    assert model[0]._compiled_call_impl is None  # nothing compiled before the check
    assert compile_in_place(model, ['0'], backend='eager') == ['0']
    assert compile_in_place(model, ['0'], backend='eager') == []  # once
    assert list(model.state_dict()) == ['0.weight', '0.bias']
    torch._dynamo.reset()


def test_step_marks_in_cuda_graph_modes_only(monkeypatch):
    marks = []
    monkeypatch.setattr(torch.compiler, 'cudagraph_mark_step_begin', lambda: marks.append(1))
    hook = CompileModulesHook(mode='reduce-overhead')
    assert hook.modules == TRAINING_COMPILE_MODULES
    hook.before_train_iter(None, 0)
    hook.before_val_iter(None, 0)
    assert len(marks) == 2
    CompileModulesHook().before_train_iter(None, 0)
    CompileModulesHook(mode='max-autotune-no-cudagraphs').before_train_iter(None, 0)
    assert len(marks) == 2


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(modules='img_neck'), TypeError, 'list of sub-module paths'),
    (dict(modules=[]), TypeError, 'list of sub-module paths'),
    (dict(mode='reduce-overhead', backend='eager'), ValueError, 'not both'),
])
def test_bad_settings_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        CompileModulesHook(**kwargs)


def test_train_tool_adds_the_hook(capsys):
    from repo_files import load_module
    tool = load_module(str(ROOT / 'tools' / 'train.py'), '_train_tool')
    cfg = tool.build_config(tool.parse_args([str(CFG)]))
    assert not any(h['type'] == 'CompileModulesHook' for h in cfg.get('custom_hooks', []))
    cfg = tool.build_config(tool.parse_args([str(CFG), '--compile']))
    assert cfg.custom_hooks[-1] == dict(type='CompileModulesHook', mode=None)
    cfg = tool.build_config(tool.parse_args([str(CFG), '--compile', 'reduce-overhead',
                                             '--compile-modules', 'img_neck']))
    hooks = [h for h in cfg.custom_hooks if h['type'] == 'CompileModulesHook']
    assert hooks == [dict(type='CompileModulesHook', mode='reduce-overhead',
                          modules=['img_neck'])]
    with pytest.raises(SystemExit):
        tool.parse_args([str(CFG), '--compile-modules', 'img_neck'])
    assert '--compile-modules needs --compile' in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_reduce_overhead_training_matches_eager_on_cuda():
    """Inductor's CUDA-graph trees in training, the hook's step mark before each step: a
    convolution stack with a training-mode batch norm trains 4 AdamW steps as its eager twin
    does (float32, TF32 off)."""
    torch.manual_seed(0)

    def net():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                   torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1)).cuda()

    class Holder(torch.nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

    eager = Holder(net())
    compiled = Holder(net())
    compiled.load_state_dict(eager.state_dict())
    hook = CompileModulesHook(modules=['body'], mode='reduce-overhead')
    runner = type('R', (), {'model': compiled})()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        hook.before_train(runner)
        assert compiled.body._compiled_call_impl is not None
        opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (eager, compiled)]
        x = torch.randn(2, 3, 16, 16, device='cuda')
        for step in range(4):
            hook.before_train_iter(runner, step)
            losses = []
            for model, opt in zip((eager, compiled), opts):
                loss = model.body(x * (step + 1)).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss))
            assert losses[1] == pytest.approx(losses[0], rel=1e-4), step
        for key, value in eager.state_dict().items():
            torch.testing.assert_close(compiled.state_dict()[key], value, rtol=1e-4,
                                       atol=1e-5, msg=key)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        torch._dynamo.reset()


def test_a_data_parallel_model_is_compiled_inside_its_wrapper(tmp_path):
    """Under MMEngine's data-parallel wrapper (one gloo rank) the hook compiles the wrapped
    module's sub-modules: the wrapper, its parameters' names and a step through it stay as
    they were."""
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel

    from trackocc.utils.distributed import close_process_group
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                            world_size=1)
    try:
        torch.manual_seed(0)
        inner = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),
                                    torch.nn.Linear(4, 1))
        wrapped = MMDistributedDataParallel(module=inner)
        names = [n for n, _ in wrapped.named_parameters()]
        runner = type('R', (), {'model': wrapped})()
        CompileModulesHook(modules=['0', '2'], backend='eager').before_train(runner)
        assert runner.model is wrapped and wrapped.module is inner
        assert inner[0]._compiled_call_impl is not None
        assert inner[2]._compiled_call_impl is not None
        assert [n for n, _ in wrapped.named_parameters()] == names
        x = torch.randn(5, 3)
        wrapped(x).sum().backward()  # gradients through the wrapper's all-reduce
        assert all(p.grad is not None for p in inner.parameters())
    finally:
        close_process_group()
        torch._dynamo.reset()

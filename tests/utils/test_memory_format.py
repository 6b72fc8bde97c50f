"""ChannelsLast: the tiny detector's convolution stacks run channels-last inside the block, the
stream is the default layout's up to float rounding, and the weights, hooks and CUDA graphs are
restored / dropped on exit; it nests with AutocastWeights either way round."""
import os.path as osp

import pytest
import torch
import torch.nn as nn

from trackocc.utils.autocast_weights import AutocastWeights
from trackocc.utils.cuda_graph import CUDAGraphModule
from trackocc.utils.fuse_conv_bn import fuse_conv_bn
from trackocc.utils.memory_format import (OCC_ENCODER_STACK, TRACKOCC_STACKS, ChannelsLast,
                                          Stack)

ALL_STACKS = TRACKOCC_STACKS[:-1] + (TRACKOCC_STACKS[-1]._replace(restore_outputs=False),
                                     OCC_ENCODER_STACK)

from repo_files import load_module

_helpers = load_module(osp.join(osp.dirname(__file__), '..', 'models', 'test_detector.py'),
                       '_tiny_detector_helpers_cl')
BF16 = torch.bfloat16


def _stream(model, dtype=None, frames=((0, 3), (1, 2))):
    """Stream tiny frames (under CPU autocast to ``dtype``, else float32); per frame the
    head's mask logits at the merge and the predicted voxels."""
    model.reset_tracks()
    records = []
    handle = model.register_merge_observer(lambda tracks, out: records.append(dict(
        masks=out['thing_masks'][-1][0].float().clone(),
        stuff_masks=out['stuff_masks'][-1][0].float().clone())))
    try:
        for seq, num in frames:
            for t in range(num):
                sample = _helpers.make_clip([_helpers.make_frame(t, seq=seq, start=(t == 0))])
                with torch.no_grad(), torch.autocast('cpu', dtype=dtype or BF16,
                                                     enabled=dtype is not None):
                    model.predict(dict(imgs=_helpers.images(1, 1, seed=10 * seq + t)),
                                  [sample])
                pred = sample.video_data_samples[0].pred_occ
                records[-1].update(semantics=pred.semantics.clone(),
                                   instances=pred.instances.clone())
    finally:
        handle.remove()
    return records


def _hooks(model):
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


@pytest.fixture(scope='module')
def fused():
    model = _helpers.build().eval()
    assert fuse_conv_bn(model) > 10  # the order of the fast path: fold first
    return model


def test_float32_stream_matches_and_everything_is_restored(fused):
    model = fused
    want = _stream(model)
    weights = {n: (p, p.data_ptr(), p.data.clone()) for n, p in model.named_parameters()}
    hooks = _hooks(model)
    with ChannelsLast(model, ALL_STACKS) as held:
        assert held.paths == [s.path for s in ALL_STACKS]
        convs = [m for m in model.img_backbone.modules() if isinstance(m, nn.Conv2d)]
        assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
        sliced = model.occ_encoder.input_proj  # SlicedConv3d: native conv3d at inference
        assert sliced.weight.is_contiguous(memory_format=torch.channels_last_3d)
        assert held.count > 40
        # registered after the block's pre-hooks: the inputs they see are converted (what
        # the kernels do with them after that is the backend's choice)
        layouts = {}
        probes = [model.img_backbone.register_forward_pre_hook(lambda _, args: layouts.setdefault(
            'backbone', set()).add(args[0].is_contiguous(memory_format=torch.channels_last))),
            model.volume_encoder_backbone.register_forward_pre_hook(
                lambda _, args: layouts.setdefault('volume', set()).add(
                    args[0].is_contiguous(memory_format=torch.channels_last_3d)))]
        # outputs leaving the stacks are contiguous again (custom ops read them as such)
        depth = []
        probes.append(model.img_view_transformer.depth_net.register_forward_hook(
            lambda _, _a, out: depth.append(out.is_contiguous())))
        probes.append(model.occ_encoder.register_forward_hook(
            lambda _, _a, out: depth.extend(x.is_contiguous() for x in out)))
        got = _stream(model)
    for probe in probes:
        probe.remove()
    assert layouts == dict(backbone={True}, volume={True}) and depth and all(depth)
    assert _hooks(model) == hooks  # every hook removed
    for name, (param, ptr, value) in weights.items():  # the same storage, values, layout
        assert param.data_ptr() == ptr and torch.equal(param, value), name
        assert param.is_contiguous() and param.dtype == torch.float32, name
    for t, (a, b) in enumerate(zip(got, want)):
        for key in ('masks', 'stuff_masks'):  # float32, another summation order only
            scale = b[key].abs().max()
            assert (a[key] - b[key]).abs().max() <= 1e-3 * scale, f'frame {t}: {key}'
        for key in ('semantics', 'instances'):  # an argmax tie may flip a voxel
            assert (a[key] != b[key]).float().mean() < 0.01, f'frame {t}: {key}'


def test_default_leaves_the_occupancy_encoder_alone(fused):
    # measured slower channels-last on an H200: only the image and volume stacks by default,
    # and the volume encoder hands the occupancy encoder contiguous volumes
    model = fused
    seen = []
    probe = model.occ_encoder.register_forward_pre_hook(
        lambda _, args: seen.extend(a.is_contiguous() for a in args
                                    if isinstance(a, torch.Tensor) and a.dim() == 5))
    try:
        with ChannelsLast(model) as held:
            assert 'occ_encoder' not in held.paths
            assert model.occ_encoder.input_proj.weight.is_contiguous()
            _stream(model)
    finally:
        probe.remove()
    assert seen and all(seen)


def test_nests_with_autocast_weights_either_way_round(fused):
    model = fused
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runs = []
    for order in ('autocast_first', 'channels_last_first'):
        held, last = AutocastWeights(model, BF16).probe(
            lambda: _stream(model, BF16, ((2, 1), ))), ChannelsLast(model)
        first, second = (held, last) if order == 'autocast_first' else (last, held)
        with first, second:
            conv = model.img_backbone.conv1
            assert conv.weight.dtype == BF16
            assert conv.weight.is_contiguous(memory_format=torch.channels_last)
            runs.append(_stream(model, BF16))
    for t, (a, b) in enumerate(zip(*runs)):  # same weights, same layout, same kernels
        for key, value in b.items():
            assert torch.equal(a[key], value), f'frame {t}: {key}'
    restored = model.state_dict()
    for key, value in state.items():
        assert restored[key].dtype == value.dtype and torch.equal(restored[key], value), key
        assert restored[key].is_contiguous(), key


def test_graph_wrappers_are_dropped_and_their_modules_hooked():
    """Hooks go on the module a CUDAGraphModule wraps (captured with it); a graph reads the
    weights it was captured with, so entering and leaving drop it."""
    holder = nn.Module()
    holder.img_backbone = CUDAGraphModule(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    holder.eval()
    stacks = [Stack('img_backbone', 2, True, False), Stack('refiner', 3)]  # no refiner: skipped
    block = ChannelsLast(holder, stacks)
    inner = holder.img_backbone.module
    x = torch.randn(1, 3, 6, 6)
    for step in (block.__enter__, lambda: block.__exit__(None, None, None)):
        holder.img_backbone._captured, holder.img_backbone._pending = 'graph', ('key', )
        step()
        assert holder.img_backbone._captured is None and holder.img_backbone._pending is None
        out = holder.img_backbone(x)  # CPU: eager through the wrapper
        entered = step == block.__enter__
        assert out.is_contiguous(memory_format=torch.channels_last) == entered
        assert bool(inner._forward_pre_hooks) == entered
        if entered:
            assert block.paths == ['img_backbone'] and block.count == 1


def test_bad_use_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(RuntimeError, match='inference only'):
        with ChannelsLast(model.train(), [Stack('0', 2)]):
            pass
    with pytest.raises(ValueError, match=r"none of \['img_backbone'"):
        with ChannelsLast(model.eval(), [Stack('img_backbone', 2)]):
            pass
    with pytest.raises(ValueError, match='dims in'):
        ChannelsLast(model, [Stack('0', 1)])
    with pytest.raises(ValueError, match='Stack'):
        ChannelsLast(model, ['0'])
    assert model[0].weight.is_contiguous()

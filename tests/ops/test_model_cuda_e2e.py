"""The paper model on CUDA with the compiled kernels: one 3-frame clip forward + backward in
fp32 / AMP fp16 / AMP bf16 and one streaming test frame (GPU only, paper sizes)."""
import os.path as osp

import pytest
import torch

from trackocc.utils.synthetic_inputs import synthetic_batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device'),
]

CONFIG = osp.join(osp.dirname(__file__), '..', '..', 'configs', 'trackocc',
                  'trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py')
OCC = (200, 200, 16)


@pytest.fixture(scope='module')
def model_and_calls():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from trackocc.registry import MODELS

    from trackocc import ops
    from trackocc.ops import bev_pool, msda_3d
    if not ops.ext_with_cuda():
        pytest.fail('trackocc._ext has no CUDA kernels: build with FORCE_CUDA=1')
    init_default_scope('trackocc')
    cfg = Config.fromfile(CONFIG).model
    cfg.img_backbone.pop('init_cfg', None)  # no download: random weights suffice here
    torch.manual_seed(0)
    model = MODELS.build(cfg).cuda()
    model.init_weights()
    calls = {'bev_pool': 0, 'msda_3d': 0}
    for name, fn_cls in (('bev_pool', bev_pool.BEVPoolV2Function),
                         ('msda_3d', msda_3d.MultiScaleDeformableAttn3DFunction)):

        def counted(*args, _orig=fn_cls.apply, _name=name):
            calls[_name] += 1
            return _orig(*args)
        fn_cls.apply = counted
    yield model, calls
    for fn_cls in (bev_pool.BEVPoolV2Function, msda_3d.MultiScaleDeformableAttn3DFunction):
        del fn_cls.apply  # back to the inherited classmethod


def _finite_grads(model) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize('amp', [None, torch.float16, torch.bfloat16])
def test_clip_forward_backward(model_and_calls, amp):
    """Finite losses under AMP; finite gradients in fp32 / bf16 directly, and in fp16 at the
    loss scale a dynamic loss scaler (AmpOptimWrapper / GradScaler: start 2**16, halve on
    inf/NaN) settles on. On the H100 the fp16 gradients overflowed at scales 2**16 and
    2**10 and were finite at 2**4 and 1: overflow the scaler handles, not a NaN source."""
    model, calls = model_and_calls
    model.train()
    model.zero_grad(set_to_none=True)
    before = dict(calls)
    data = model.data_preprocessor(synthetic_batch(model, 3, with_gt=True), training=True)
    with torch.autocast('cuda', dtype=amp or torch.float32, enabled=amp is not None):
        losses = model(**data, mode='loss')
    bad = {k: float(v) for k, v in losses.items() if not torch.isfinite(v).all()}
    assert not bad, f'non-finite losses under {amp}: {bad}'
    total = sum(v.float() for v in losses.values())
    scale = 2.0 ** 16 if amp == torch.float16 else 1.0
    while True:
        model.zero_grad(set_to_none=True)
        (total * scale).backward(retain_graph=scale > 1)
        if _finite_grads(model) or scale <= 1:
            break
        scale /= 2
    assert _finite_grads(model), f'non-finite gradients under {amp} at loss scale {scale}'
    assert calls['bev_pool'] > before['bev_pool'] and calls['msda_3d'] > before['msda_3d']
    print(f'amp={amp}: total loss {float(total):.3f}, finite gradients at loss scale '
          f'{scale:g}, peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB')


def test_streaming_test_frame(model_and_calls):
    model, calls = model_and_calls
    model.eval()
    data = model.data_preprocessor(synthetic_batch(model, 1, with_gt=True), training=False)
    with torch.no_grad():
        out = model(**data, mode='predict')
    pred = out[0].video_data_samples[0].pred_occ
    assert tuple(pred.semantics.shape) == OCC and pred.semantics.dtype == torch.uint8
    assert tuple(pred.instances.shape) == OCC and pred.instances.dtype == torch.int32


def test_streaming_with_cuda_graphs_matches_eager(model_and_calls):
    """The encoder stages as CUDA graphs (benchmark.py's graph modes) give the eager
    predictions frame after frame (the test runs last: it wraps the shared model's modules
    and unwraps them again)."""
    import numpy as np

    from trackocc.utils.cuda_graph import CUDAGraphModule, graph_modules
    model, _ = model_and_calls
    model.eval()
    data = model.data_preprocessor(synthetic_batch(model, 1, with_gt=False), training=False)
    clip = data['data_samples'][0]
    frame = clip.video_data_samples[0]

    def stream(frames=5):
        model.reset_tracks()
        preds = []
        for i in range(frames):
            ego = np.eye(4)
            ego[0, 3] = 2.0 * i
            frame.set_metainfo(dict(start_of_sequence=i == 0, frame_idx=i, sample_idx=i,
                                    ego2global=ego, timestamp=0.5 * i))
            inputs = dict(data['inputs'], imgs=data['inputs']['imgs'].roll(8 * i, dims=-1))
            with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
                model.predict(inputs, [clip])
            preds.append((frame.pred_occ.semantics.clone(), frame.pred_occ.instances.clone()))
        return preds

    names = ('img_backbone', 'img_neck', 'img_view_transformer', 'volume_encoder_backbone',
             'volume_encoder_neck', 'occ_encoder')
    want = stream()
    graph_modules(model, names)
    try:
        got = stream()
        assert [getattr(model, n).replays for n in names] == [3] * len(names)
    finally:
        for n in names:
            if isinstance(getattr(model, n), CUDAGraphModule):
                setattr(model, n, getattr(model, n).module)
    # other images every frame: a replay that kept stale inputs would not match. Eager runs
    # themselves are not bit-reproducible (float atomics of index_add in the cross-attention),
    # so a few voxels at near-ties may differ
    for i, ((sem, inst), (sem_ref, inst_ref)) in enumerate(zip(got, want)):
        assert (sem != sem_ref).float().mean() < 1e-3, f'frame {i}: semantics differ'
        assert (inst != inst_ref).float().mean() < 1e-3, f'frame {i}: instances differ'


def test_fixed_rig_inputs_one_graph_for_every_rig_with_compiled_layers(model_and_calls):
    """The fast path's rig-dependent graphs (view transformer, occupancy encoder, the latter
    with its first layer compiled by inductor, as benchmark.py's "all") with fixed rig inputs
    stream three camera rigs on one capture each and predict what the model does eagerly
    with them. Its first H200 run (2026-12-04) failed: the capture's eager run got a
    contiguous copy of the sliced query plan, so the compiled layer compiled again inside
    the capture, whose autotuning invalidated it."""
    import numpy as np

    from trackocc.utils.compile_modules import compile_modules
    from trackocc.utils.cuda_graph import RIG_GRAPH_MODULES, CUDAGraphModule, graph_modules
    model, _ = model_and_calls
    model.eval()
    data = model.data_preprocessor(synthetic_batch(model, 1, with_gt=False), training=False)
    clip = data['data_samples'][0]
    frame = clip.video_data_samples[0]
    base = {k: np.array(frame.metainfo[k]) for k in ('cam2img', 'lidar2cam', 'img_aug_matrix')}

    def stream():
        preds = []
        for rig in (0, 1, 2):  # a sequence of two frames per rig
            lidar2cam = base['lidar2cam'].copy()
            lidar2cam[:, :3, 3] += 0.05 * rig  # another vehicle's calibration
            lidar2img = base['img_aug_matrix'] @ base['cam2img'] @ lidar2cam
            for i in range(2):
                ego = np.eye(4)
                ego[0, 3] = 2.0 * i
                frame.set_metainfo(dict(start_of_sequence=i == 0, frame_idx=i,
                                        sample_idx=10 * rig + i, ego2global=ego,
                                        timestamp=0.5 * i, lidar2cam=lidar2cam,
                                        lidar2img=lidar2img.astype(np.float32)))
                with torch.no_grad():
                    model.predict(data['inputs'], [clip])
                preds.append(frame.pred_occ.semantics.clone())
        return preds

    model.fixed_rig_inputs = True
    model.reset_tracks()
    originals = {n: getattr(model, n) for n in RIG_GRAPH_MODULES}
    layer = model.occ_encoder.layers[0]
    try:
        want = stream()
        compile_modules(model, ['occ_encoder.layers.0'], strict=True)
        graph_modules(model, RIG_GRAPH_MODULES, stable_outputs=RIG_GRAPH_MODULES,
                      rekey_warmup=0)
        got = stream()
        counts = {n: (getattr(model, n).captures, getattr(model, n).replays)
                  for n in RIG_GRAPH_MODULES}
        # the first rig's two eager warm-up calls, then one capture for all three rigs
        assert all(c == 1 and r == 4 for c, r in counts.values()), counts
    finally:
        for name, module in originals.items():
            setattr(model, name, module)
        model.occ_encoder.layers[0] = layer
        model.fixed_rig_inputs = False
    assert not isinstance(model.occ_encoder, CUDAGraphModule)
    for i, (sem, sem_ref) in enumerate(zip(got, want)):
        assert (sem != sem_ref).float().mean() < 1e-3, f'frame {i}: semantics differ'

"""The paper model on CUDA with the compiled kernels: one 3-frame clip forward + backward in
fp32 / AMP fp16 / AMP bf16 and one streaming test frame (GPU only, paper sizes)."""
import math
import os.path as osp

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device'),
]

CONFIG = osp.join(osp.dirname(__file__), '..', '..', 'configs', 'trackocc',
                  'trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py')
N_CAMS, IMG, OCC = 5, (256, 704), (200, 200, 16)


def _camera(yaw_deg, height=2.0):
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    fwd, left = torch.tensor([c, s, 0.0]), torch.tensor([-s, c, 0.0])
    rot = torch.stack([-left, torch.tensor([0.0, 0.0, -1.0]), fwd])  # ego -> OpenCV camera
    lidar2cam = torch.eye(4)
    lidar2cam[:3, :3] = rot
    lidar2cam[:3, 3] = -rot @ torch.tensor([1.5, 0.0, height])
    cam2img = torch.eye(4)
    cam2img[:3, :3] = torch.tensor([[400.0, 0.0, IMG[1] / 2], [0.0, 400.0, IMG[0] / 2],
                                    [0.0, 0.0, 1.0]])
    return cam2img, lidar2cam


def _frame(t, start):
    from mmdet3d.structures import Det3DDataSample
    from mmengine.structures import BaseDataElement
    gen = torch.Generator().manual_seed(t)
    cams = [_camera(y) for y in (0.0, 45.0, -45.0, 90.0, -90.0)]
    cam2img = torch.stack([c[0] for c in cams])
    lidar2cam = torch.stack([c[1] for c in cams])
    aug = torch.eye(4).expand(N_CAMS, 4, 4).clone()
    ego = torch.eye(4, dtype=torch.float64)
    ego[0, 3] = 2.0 * t
    meta = dict(sample_idx=t, sequence_id=0, frame_idx=t, timestamp=0.5 * t,
                start_of_sequence=start, ego2global=ego.numpy(), cam2img=cam2img.numpy(),
                lidar2cam=lidar2cam.numpy(), img_aug_matrix=aug.numpy(),
                lidar2img=(aug @ cam2img @ lidar2cam).numpy(), img_shape=IMG,
                num_views=N_CAMS)
    sem = torch.full(OCC, 15, dtype=torch.long)
    sem[:, :, :2] = 13  # road
    sem[:20, :, 2:10] = 10  # buildings
    inst = torch.zeros(OCC, dtype=torch.long)
    for k, (x0, y0, label) in enumerate([(110 + 3 * t, 95, 1), (120, 120, 1), (90, 80, 2)]):
        w = 10 if label == 1 else 2
        sem[x0:x0 + w, y0:y0 + w // 2, 2:6] = label
        inst[x0:x0 + w, y0:y0 + w // 2, 2:6] = 11 + k
    visible = torch.rand(OCC, generator=gen) > 0.2
    frame = Det3DDataSample(metainfo=meta)
    frame.gt_occ = BaseDataElement(
        semantics=sem, instances=inst, mask_camera=visible, mask_lidar=visible,
        infov=torch.ones(OCC, dtype=torch.bool), instance_ids=torch.tensor([11, 12, 13]),
        instance_labels=torch.tensor([1, 1, 2]))
    depth = torch.rand(N_CAMS, *IMG, generator=gen) * 40 + 2
    frame.gt_depth = depth * (torch.rand(N_CAMS, *IMG, generator=gen) > 0.95)
    return frame


def _batch(T, start):
    from mmdet.structures import TrackDataSample
    clip = TrackDataSample()
    clip.video_data_samples = [_frame(t, start and t == 0) for t in range(T)]
    img = torch.randint(0, 256, (T, N_CAMS, 3, *IMG), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(T))
    return dict(inputs=[dict(img=img)], data_samples=[clip])


@pytest.fixture(scope='module')
def model_and_calls():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet3d.registry import MODELS

    import trackocc  # noqa: F401
    from trackocc import ops
    from trackocc.ops import bev_pool, msda_3d
    if not ops.ext_with_cuda():
        pytest.fail('trackocc._ext has no CUDA kernels: build with FORCE_CUDA=1')
    init_default_scope('mmdet3d')
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


@pytest.mark.parametrize('amp', [
    None,
    # fp16 on the H100 (2026-11-25): the match-cost overflow is fixed (matching runs outside
    # autocast, tests/models/test_hungarian_match_amp.py), losses are finite, but this raw
    # backward without loss scaling still yields NaN gradients; AmpOptimWrapper's dynamic loss
    # scale would skip such steps. bf16 is the supported AMP dtype until this is resolved.
    pytest.param(torch.float16, marks=pytest.mark.xfail(
        strict=True, raises=AssertionError, reason='fp16 backward gives NaN gradients (H100)')),
    torch.bfloat16,
])
def test_clip_forward_backward(model_and_calls, amp):
    model, calls = model_and_calls
    model.train()
    model.zero_grad(set_to_none=True)
    before = dict(calls)
    data = model.data_preprocessor(_batch(3, start=True), training=True)
    with torch.autocast('cuda', dtype=amp or torch.float32, enabled=amp is not None):
        losses = model(**data, mode='loss')
    bad = {k: float(v) for k, v in losses.items() if not torch.isfinite(v).all()}
    assert not bad, f'non-finite losses under {amp}: {bad}'
    total = sum(v.float() for v in losses.values())
    # fp16 runs use a loss scale in training (AmpOptimWrapper); the gradients must be finite
    (total * (1024.0 if amp == torch.float16 else 1.0)).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert calls['bev_pool'] > before['bev_pool'] and calls['msda_3d'] > before['msda_3d']
    print(f'amp={amp}: total loss {float(total):.3f}, peak memory '
          f'{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB')


def test_streaming_test_frame(model_and_calls):
    model, calls = model_and_calls
    model.eval()
    data = model.data_preprocessor(_batch(1, start=True), training=False)
    with torch.no_grad():
        out = model(**data, mode='predict')
    pred = out[0].video_data_samples[0].pred_occ
    assert tuple(pred.semantics.shape) == OCC and pred.semantics.dtype == torch.uint8
    assert tuple(pred.instances.shape) == OCC and pred.instances.dtype == torch.int32

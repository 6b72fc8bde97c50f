"""ONNX export of the per-frame network and its onnxruntime (CPU) stream against PyTorch.

The tiny config with deterministic random weights streams 6 frames of a small synthetic
sequence twice: with ``TrackOcc.predict`` and with :class:`OnnxStreamingRunner` around the
exported graph. Per frame the final class and mask logits agree to 1e-4 of the tensor's largest
magnitude, the tracks carry the same ids, and the merged instance grids are equal wherever the
merge's decision is not a float tie. The number of thing queries changes from frame to frame
(new tracks), so the graph's dynamic query axis is exercised.
"""
import copy
import importlib.util
import json
from pathlib import Path

import onnx
import pytest
import torch
from mmengine.runner import Runner

from trackocc.analysis.model_setup import build_model, load_config, quiet_logger
from trackocc.deployment import (INPUT_NAMES, OUTPUT_NAMES, OnnxStreamingRunner,
                                 export_frame_network, frame_geometry, onnx_session)

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / 'configs/trackocc/trackocc_tiny_synthetic.py')
TOOL = ROOT / 'tools/deployment/export_onnx.py'
NUM_FRAMES = 6
CLS_BIAS = -1.5  # the plain init makes every query a track; with it some stay below the birth score
MASK_SCALE = 30.0  # mask logits of a few units, so that the merge keeps real segments
REL_TOL = 1e-4
LOGITS = ('thing_cls', 'thing_masks', 'stuff_cls', 'stuff_masks')


def _abs_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _ambiguous_voxels(out: dict, noise: float, factor: float = 10.0) -> torch.Tensor:
    """(V,) voxels where the panoptic merge decides within ``factor`` x the measured logit
    ``noise`` between the runtimes: the best two ``score * mask_prob`` (whose error is at
    most half the logit error) closer than that, or a mask logit that close to 0 (the
    own-mask border). Exact ties are decided alike by both runtimes (first query wins)."""
    cls = torch.cat([out['thing_cls'][-1][0], out['stuff_cls'][-1][0]])
    logits = torch.cat([out['thing_masks'][-1][0].flatten(1),
                        out['stuff_masks'][-1][0].flatten(1)])
    top2 = (cls.sigmoid().max(-1).values[:, None] * logits.sigmoid()).topk(2, dim=0).values
    gap = top2[0] - top2[1]
    tol = factor * noise
    return ((gap > 0) & (gap <= tol)) | (logits.abs() <= tol).any(0)


def _export_tool():
    spec = importlib.util.spec_from_file_location('export_onnx_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """The tiny-config model (seeded random weights), 6 preprocessed frames of one synthetic
    validation sequence, and the export of tools/deployment/export_onnx.py (its folder)."""
    from trackocc.datasets.synthetic import generate_synthetic_dataset
    tmp = tmp_path_factory.mktemp('onnx')
    root = str(tmp / 'synthetic-waymo') + '/'
    generate_synthetic_dataset(root, train_seqs=0, val_seqs=1, frames_per_seq=NUM_FRAMES,
                               seed=1, image_size=(96, 64), side_height=48, workers=1,
                               progress=False)
    quiet_logger('trackocc_test_onnx')
    cfg = load_config(CFG)
    model = build_model(cfg, None, 'cpu').eval()  # seed 0
    with torch.no_grad():  # the plain init gives mask logits within +-0.2: spread them
        model.pts_bbox_head.cls_embed.bias.add_(CLS_BIAS)
        model.pts_bbox_head.mask_embed[-1].weight.mul_(MASK_SCALE)
    checkpoint = str(tmp / 'weights.pth')
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    out_dir = tmp / 'export'
    assert _export_tool().main([CFG, checkpoint, '--out', str(out_dir), '--data-root', root,
                                '--num-queries', '7']) == 0
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    loader_cfg.dataset.data_root = root
    loader_cfg.update(num_workers=0, persistent_workers=False)
    frames = [model.data_preprocessor(batch, False)
              for _, batch in zip(range(NUM_FRAMES), Runner.build_dataloader(loader_cfg))]
    assert len(frames) == NUM_FRAMES
    return model, frames, out_dir


def test_export_tool_writes_graph_with_dynamic_query_axis(tiny):
    _, _, out_dir = tiny
    assert sorted(p.name for p in out_dir.iterdir()) == ['config.py', 'export_info.json',
                                                         'trackocc_frame.onnx']
    info = json.loads((out_dir / 'export_info.json').read_text())
    assert info['inputs']['thing_query'] == [1, 'num_queries', 64]  # (1, Q, 2E)
    assert info['outputs']['thing_masks'] == [1, 'num_queries', 200, 200, 16]
    assert max(info['example_relative_errors'].values()) <= REL_TOL
    proto = onnx.load(str(out_dir / 'trackocc_frame.onnx'))
    graph = proto.graph
    assert [i.name for i in graph.input] == list(INPUT_NAMES)
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)
    query = next(i for i in graph.input if i.name == 'thing_query')
    assert query.type.tensor_type.shape.dim[1].dim_param == 'num_queries'
    assert not any(n.domain not in ('', 'ai.onnx') for n in graph.node)  # standard ops only
    # no Loop (bev_pool's reference once traced repeat_interleave into one: 25x slower)
    assert 'Loop' not in {n.op_type for n in graph.node}
    # sums with repeated indices as ScatterElements: onnxruntime's ScatterND-add races on them
    assert 'ScatterND' not in {n.op_type for n in graph.node}
    # the mask logits as MatMul: onnxruntime's Einsum was ~5x slower on the paper config
    assert 'Einsum' not in {n.op_type for n in graph.node}
    assert next(o.version for o in proto.opset_import if o.domain == '') >= 17


def test_onnxruntime_stream_matches_pytorch(tiny):
    model, frames, out_dir = tiny
    caught = []
    hook = model.pts_bbox_head.register_forward_hook(lambda m, i, o: caught.append(o))
    ref = []
    try:
        model.reset_tracks()
        with torch.no_grad():
            for batch in frames:
                samples = model.predict(batch['inputs'], copy.deepcopy(batch['data_samples']))
                pending = model.stream_state['pending']
                ref.append((samples[0].video_data_samples[0].pred_occ.instances,
                            pending.obj_idxes.clone(), pending.scores.clone()))
    finally:
        hook.remove()
    assert len(caught) == NUM_FRAMES

    runner = OnnxStreamingRunner(model, str(out_dir / 'trackocc_frame.onnx'))
    num_queries = []
    for t, batch in enumerate(frames):
        samples = runner.predict(batch['inputs'], copy.deepcopy(batch['data_samples']))
        out = runner.last_outputs
        abs_errors = {key: _abs_err(out[key][-1], caught[t][key][-1]) for key in LOGITS}
        errors = {key: err / max(float(caught[t][key][-1].abs().max()), 1e-12)
                  for key, err in abs_errors.items()}
        for key, err in errors.items():
            assert err <= REL_TOL, f'frame {t}: {key} differs by {err:.3g} of its max'
        instances, obj_idxes, scores = ref[t]
        # a track score at a tracker threshold would make the comparison of ids a coin toss
        margin = min(float((scores - th).abs().min())
                     for th in (model.tracker.score_thresh, model.tracker.filter_score_thresh))
        assert margin > 1e-4, f'frame {t}: a track score lies {margin:.2g} from a threshold'
        assert torch.equal(runner.stream_state['pending'].obj_idxes, obj_idxes), f'frame {t}: ids'
        got = samples[0].video_data_samples[0].pred_occ.instances
        differ = got != instances
        if differ.any():  # allowed only where the merge decides within the float noise
            ambiguous = _ambiguous_voxels(caught[t], max(abs_errors.values()))
            ambiguous = ambiguous.view(instances.shape)
            assert not (differ & ~ambiguous).any(), f'frame {t}: instances differ'
            assert int(ambiguous.sum()) <= 0.01 * ambiguous.numel()
        assert set(got.unique().tolist()) == set(instances.unique().tolist())
        num_queries.append(len(obj_idxes))
        print(f'frame {t}: queries {len(obj_idxes)}, live {int((obj_idxes >= 0).sum())}, '
              f'ids {sorted(set(instances.unique().tolist()))}, relative errors '
              + ', '.join(f'{k} {v:.2g}' for k, v in errors.items())
              + f', differing voxels {int(differ.sum())}')
    live = [int((r[1] >= 0).sum()) for r in ref]
    assert len(set(num_queries)) > 1, f'the query count never changed: {num_queries}'
    assert 0 < max(live) < max(num_queries), f'no informative tracking: live {live}'


def test_export_and_runner_errors(tiny, tmp_path):
    model, frames, out_dir = tiny
    batch = frames[0]
    meta = batch['data_samples'][0].video_data_samples[0].metainfo
    imgs = batch['inputs']['imgs']
    with pytest.raises(ValueError, match='opset 17 < 20'):
        export_frame_network(model, frame_geometry(model, meta), imgs[0, 0],
                             str(tmp_path / 'x.onnx'), opset=17)
    assert not (tmp_path / 'x.onnx').exists()
    with pytest.raises(FileNotFoundError, match='no ONNX model'):
        onnx_session(str(tmp_path / 'missing.onnx'))
    bad = dict(meta)
    bad.pop('lidar2img')
    with pytest.raises(KeyError, match='lacks `lidar2img`'):
        frame_geometry(model, bad)
    runner = OnnxStreamingRunner(model, str(out_dir / 'trackocc_frame.onnx'))
    with pytest.raises(ValueError, match='one frame of one sequence'):
        runner.predict(dict(imgs=imgs.expand(1, 2, -1, -1, -1, -1)), batch['data_samples'])
    tool = _export_tool()
    with pytest.raises(SystemExit):
        tool.parse_args([CFG, '--out', str(tmp_path)])  # neither checkpoint nor --random-init
    assert tool.main([CFG, str(tmp_path / 'none.pth'), '--out', str(tmp_path)]) == 2
    model.refiner = torch.nn.Identity()  # stands for the spconv refiner, which has no ONNX form
    try:
        with pytest.raises(ValueError, match='sparse voxel refiner'):
            OnnxStreamingRunner(model, str(out_dir / 'trackocc_frame.onnx'))
    finally:
        model.refiner = None
    model.query_budget = 40
    model.fixed_track_rows = True  # filler rows the network could not mask
    try:
        with pytest.raises(ValueError, match='fixed_track_rows carries filler rows'):
            OnnxStreamingRunner(model, str(out_dir / 'trackocc_frame.onnx'))
    finally:
        model.fixed_track_rows = False
        model.query_budget = None

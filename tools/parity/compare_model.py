"""trackocc's side of the parity run: the model built from the _original-weights config with
the dump's variant, fed the original's own inputs (tools/parity/README.md, issue 12).

The dump's weights are converted with :mod:`trackocc.utils.original_checkpoint`; the model
runs on the original's image tensors and camera matrices (so that pipeline differences do not
reach the model tables), with its random training choices (query drop, false-positive
insertion) replayed from the dump. Forward hooks record the stages under the dump's keys.
"""
import contextlib
import os.path as osp
import shutil
import sys
import tempfile
from types import SimpleNamespace
from typing import Callable, Dict, Optional

import torch
from torch import nn

import compare_tables as ct

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = 'configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ_original-weights.py'
MODEL_BASE = 'configs/_base_/models/trackocc_r50.py'
DATA_BASE = 'configs/_base_/datasets/waymo-trackocc.py'

#: original config variable -> (file, variable) of trackocc's configs
VARIABLE_MAP = {
    '_dim_': [(MODEL_BASE, 'embed_dims')],
    '_pos_dim_': [(MODEL_BASE, 'pos_dims')],
    'numC_Trans': [(MODEL_BASE, 'numC_Trans')],
    'num_queries': [(MODEL_BASE, 'num_thing_queries')],
    'num_stuff_queries': [(MODEL_BASE, 'num_stuff_queries')],
    'data_config.input_size': [(MODEL_BASE, 'input_size'), (DATA_BASE, 'data_config.input_size')],
    # derived from embed_dims here already
    'model.embed_dims': [],
    'model.pts_bbox_head.out_channels': [],
}


def load_config(variant_overrides: dict, data_root: str = None):
    """The _original-weights config with the dump's variant overrides (mapped onto this
    package's variable names, applied to a temporary copy of ``configs/``)."""
    from mmengine.config import Config
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    import small_config
    per_file: Dict[str, dict] = {}
    for key, value in variant_overrides.items():
        if key not in VARIABLE_MAP:
            raise KeyError(f'compare: variant override {key!r} has no counterpart in trackocc '
                           f'configs (known: {sorted(VARIABLE_MAP)})')
        for path, name in VARIABLE_MAP[key]:
            per_file.setdefault(path, {})[name] = tuple(value) if isinstance(value, list) and \
                name.endswith('input_size') else value
    tmp = tempfile.mkdtemp(prefix='parity-configs-')
    shutil.copytree(osp.join(REPO, 'configs'), osp.join(tmp, 'configs'))
    for path, overrides in per_file.items():
        full = osp.join(tmp, path)
        with open(full) as f:
            text = f.read()
        text = small_config.apply_overrides(text, overrides, filename=path)
        with open(full, 'w') as f:
            f.write(text)
    cfg = Config.fromfile(osp.join(tmp, CONFIG))
    shutil.rmtree(tmp, ignore_errors=True)
    # the original's semantic branch is Linear(E, 2 * numC_Trans) -> Linear(.., K); the paper
    # config here has the constructor default 64 (= 2 * 32), which only fits the paper width
    cfg.model.pts_bbox_head.sem_hidden_channels = 2 * int(
        cfg.model.img_view_transformer.out_channels)
    return cfg


def build_model(cfg, state_dict):
    """Model of ``cfg`` holding the converted ``state_dict`` (original layout)."""
    import trackocc  # noqa: F401
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    from trackocc.utils.original_checkpoint import check_against_model, convert_state_dict
    model = MODELS.build(cfg.model)
    result = convert_state_dict(state_dict, source='dump state_dict')
    check_against_model(result.state_dict, model.state_dict(), source='dump state_dict')
    model.load_state_dict(result.state_dict, strict=True)
    return model.float(), result


# ---------------------------------------------------------------------------- inputs
def camera_meta(t: Dict[str, torch.Tensor], p: str) -> dict:
    """Frame metainfo (cam2img, lidar2cam, img_aug_matrix, lidar2img (N, 4, 4)) from the
    original's rots/trans/intrins/post_rots/post_trans of frame prefix ``p``."""
    rots = t[p + 'input/rots'][0].double()
    trans = t[p + 'input/trans'][0].double()
    intr = t[p + 'input/intrins'][0].double()
    prot = t[p + 'input/post_rots'][0].double()
    ptr = t[p + 'input/post_trans'][0].double()
    n = rots.shape[0]
    cam2ego = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    cam2ego[:, :3, :3] = rots
    cam2ego[:, :3, 3] = trans
    lidar2cam = torch.linalg.inv(cam2ego)
    cam2img = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    cam2img[:, :3, :3] = intr
    aug = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    aug[:, :2, :2] = prot[:, :2, :2]
    aug[:, :2, 2] = ptr[:, :2]  # multiplies the depth of (u d, v d, d, 1): see img_aug_matrix
    lidar2img = aug @ cam2img @ lidar2cam
    h, w = t[p + 'input/img'].shape[-2:]
    return dict(cam2img=cam2img.numpy(), lidar2cam=lidar2cam.numpy(),
                img_aug_matrix=aug.numpy(), lidar2img=lidar2img.numpy(),
                img_shape=(int(h), int(w)), num_views=n)


def make_frame(t: Dict[str, torch.Tensor], p: str, seq: int, idx: int, train: bool):
    from trackocc.structures import OccDataSample, OccupancyData
    meta = camera_meta(t, p)
    meta.update(sample_idx=int(t[p + 'meta/sample_idx']) if p + 'meta/sample_idx' in t else idx,
                sequence_id=seq, frame_idx=idx,
                ego2global=t[p + 'meta/ego2global'].double().numpy()
                if p + 'meta/ego2global' in t else None,
                start_of_sequence=bool(t[p + 'meta/start_of_sequence'])
                if p + 'meta/start_of_sequence' in t else idx == 0)
    frame = OccDataSample(metainfo=meta)
    if train:
        inst_cls = t[p + 'input/instid_and_clsid'].long().reshape(-1, 2)
        frame.gt_occ = OccupancyData(
            semantics=t[p + 'input/voxel_semantics'][0].long(),
            instances=t[p + 'input/voxel_instances'][0].long(),
            mask_camera=t[p + 'input/visible_mask'][0].bool(),
            infov=t[p + 'input/infov_mask'][0].bool(),
            instance_ids=inst_cls[:, 0], instance_labels=inst_cls[:, 1])
        frame.gt_depth = t[p + 'input/gt_depth'][0].float()
    return frame


# ---------------------------------------------------------------------------- geometry
def original_lift(t: Dict[str, torch.Tensor], p: str, frustum: torch.Tensor) -> torch.Tensor:
    """(B, N, D, h, w, 3) ego coordinates of ``frustum`` ((D, h, w, 3) pixels u, v and depth)
    with the original's matrices of frame ``p`` in the original's order of float32 operations:
    undo the image augmentation (``post_trans``, then ``post_rots^-1``), scale (u, v) by the
    depth, apply ``rots @ intrins^-1``, add ``trans``, apply ``bda``."""
    rots, trans = t[p + 'input/rots'].float(), t[p + 'input/trans'].float()
    intrins = t[p + 'input/intrins'].float()
    post_rots, post_trans = t[p + 'input/post_rots'].float(), t[p + 'input/post_trans'].float()
    bda = t[p + 'input/bda'].float()
    B, N = trans.shape[:2]
    one = (1, 1, 1)
    x = frustum.float().view(1, 1, *frustum.shape) - post_trans.view(B, N, *one, 3)
    x = torch.inverse(post_rots).view(B, N, *one, 3, 3).matmul(x.unsqueeze(-1))
    x = torch.cat((x[..., :2, :] * x[..., 2:3, :], x[..., 2:3, :]), dim=-2)
    cam2ego = rots.matmul(torch.inverse(intrins)).view(B, N, *one, 3, 3)
    x = cam2ego.matmul(x).squeeze(-1) + trans.view(B, N, *one, 3)
    return bda.view(B, 1, *one, 3, 3).matmul(x.unsqueeze(-1)).squeeze(-1)


def voxel_agreement(vt, ours: torch.Tensor, ref: torch.Tensor) -> Dict[str, float]:
    """How many frustum points fall into another voxel (or in / out of the grid) with our
    coordinates than with ``ref`` (the view transformer's own metres -> voxel rule)."""
    def voxel(c):
        idx = (c.reshape(-1, 3) - vt.grid_lower_bound) / vt.grid_interval
        idx = (idx.trunc() if vt.legacy_voxel_index else idx.floor()).long()
        inside = ((idx >= 0) & (idx < torch.as_tensor(vt.grid_size))).all(-1)
        return idx, inside
    (a, ia), (b, ib) = voxel(ours), voxel(ref)
    differ = (ia != ib) | (ia & ib & (a != b).any(-1))
    return dict(points=float(differ.numel()), differing=float(differ.sum()),
                inside=float((ia | ib).sum()),
                max_abs_m=float((ours.double() - ref.double()).abs().max()))


@contextlib.contextmanager
def original_geometry(model, t: Dict[str, torch.Tensor], prefix: Callable[[], str],
                      report: Dict[str, Dict[str, float]]):
    """Lift the frustum with the original's arithmetic (:func:`original_lift`) while the
    model runs, so that the stage tables compare the network and not float32 rounding of the
    camera geometry; how many points our own geometry puts into another voxel goes into
    ``report[prefix()]``."""
    vt = model.img_view_transformer

    def lift(cam2img, lidar2cam, img_aug_matrix):
        ours = type(vt).get_ego_coords(vt, cam2img, lidar2cam, img_aug_matrix)
        ref = original_lift(t, prefix(), vt.frustum).to(ours)
        report[prefix()] = voxel_agreement(vt, ours, ref)
        return ref
    vt.get_ego_coords = lift
    try:
        yield report
    finally:
        del vt.get_ego_coords


# ---------------------------------------------------------------------------- recording
class StageRecorder:
    """Forward hooks that store our modules' outputs under the dump's stage keys."""

    def __init__(self, model, sampled: Optional[Dict[str, dict]] = None):
        from trackocc.models.trackers import inverse_sigmoid  # noqa: F401
        self.model = model
        self.sampled = sampled or {}  # dump keys stored sampled: keep only those values
        self.prefix = ''
        self.records: Dict[str, torch.Tensor] = {}
        self.handles = []
        hook = self._hook
        m = model
        self.handles += [
            m.img_backbone.register_forward_hook(hook(self._levels('img_backbone'))),
            m.img_neck.register_forward_hook(hook(self._levels('img_neck'))),
            m.img_view_transformer.depth_net.register_forward_hook(hook(self._one('depth_net'))),
            m.img_view_transformer.register_forward_hook(hook(self._view_transformer)),
            m.volume_encoder_backbone.register_forward_hook(
                hook(self._levels('volume_encoder_backbone'))),
            m.volume_encoder_neck.register_forward_hook(hook(self._volume_neck)),
            m.occ_encoder.register_forward_hook(hook(self._occ_encoder)),
            m.occ_encoder.output_proj.register_forward_hook(hook(self._one('head/enhance_projs'))),
            m.occ_encoder.fuse_conv.register_forward_hook(hook(self._one('head/enhance_conv'))),
            m.occ_encoder.upsampler.up0.register_forward_hook(hook(self._one('head/up0'))),
            m.occ_encoder.upsampler.up1.register_forward_hook(hook(self._one('head/up1'))),
            m.img_view_transformer.depth_net.register_forward_pre_hook(
                lambda mod, args: self.put('view_transformer/mlp_input', args[1])),
            m.pts_bbox_head.register_forward_hook(hook(self._head), with_kwargs=False),
        ]
        # the head gets sigmoid(ref_pts): record the carried logits themselves
        run_head = m._run_head

        def recorded_run_head(tracks, *args):
            self.put('head/in/query', tracks.query)
            self.put('head/in/ref_pts', tracks.ref_pts)
            return run_head(tracks, *args)
        m._run_head = recorded_run_head
        self.handles.append(SimpleNamespace(remove=lambda: delattr(m, '_run_head')))
        layers = m.occ_encoder.layers
        for i, layer in enumerate(layers):
            names = [f'occ_encoder/layers/{i}'] + (['occ_encoder'] if i == len(layers) - 1 else [])
            self.handles.append(layer.register_forward_hook(hook(self._many(names))))

    def close(self):
        for h in self.handles:
            h.remove()

    def _hook(self, fn):
        def run(module, args, output):
            fn(output)
        return run

    def put(self, key, value):
        key = self.prefix + key
        info = self.sampled.get(key)
        if info is not None and tuple(value.shape) == tuple(info['shape']):
            self.records[key] = ct.SampledRecord.of(value, info)
        else:
            self.records[key] = value.detach().float().clone()

    def _levels(self, name):
        def fn(out):
            for i, v in enumerate(out):
                self.put(f'{name}/{i}', v)
        return fn

    def _many(self, names):
        def fn(out):
            for n in names:
                self.put(n, out)
        return fn

    def _one(self, name):
        return lambda out: self.put(name, out)

    def _view_transformer(self, out):
        volume, depth = out
        self.put('view_transformer/volume', volume)
        self.put('view_transformer/depth', depth)

    def _volume_neck(self, out):
        compact, feats = out
        self.put('volume_encoder_neck/compact_occ', compact)
        for i, v in enumerate(feats):
            self.put(f'volume_encoder_neck/feats/{i}', v)

    def _occ_encoder(self, out):
        compact_occ, mask_features = out
        self.put('head/decoder_value', compact_occ)
        self.put('head/mask_features', mask_features)

    def _head(self, out):
        for lid in range(len(out['thing_cls'])):
            self.put(f'head/out/cls/{lid}', out['thing_cls'][lid])
            self.put(f'head/out/mask/{lid}', out['thing_masks'][lid])
            self.put(f'head/out/centers/{lid}', out['thing_centers'][lid])
            self.put(f'head/out/stuff_cls/{lid}', out['stuff_cls'][lid])
            self.put(f'head/out/stuff_mask/{lid}', out['stuff_masks'][lid])
        self.put('head/out/seg_pred/0', out['sem_logits'])
        from trackocc.models.trackers import inverse_sigmoid
        self.put('head/out/query_feats', out['thing_embed'])
        # the model's (and the original's) inverse sigmoid, eps-clamped
        self.put('head/out/last_ref_points', inverse_sigmoid(out['thing_ref_pts'].float()))


# ---------------------------------------------------------------------------- runs
def run_stream(model, t: Dict[str, torch.Tensor], frames: int,
               sampled: Optional[Dict[str, dict]] = None):
    """Stream the dump's test frames through ``model.predict`` on the original's inputs.

    Returns (stage records keyed ``test/f{i}/...``, per frame dict(sem, inst, live))."""
    from mmdet.structures import TrackDataSample
    model.eval()
    rec = StageRecorder(model, sampled)
    outs = []
    geometry: Dict[str, Dict[str, float]] = {}
    try:
        with torch.no_grad(), original_geometry(model, t, lambda: rec.prefix, geometry):
            for i in range(frames):
                p = f'test/f{i}/'
                rec.prefix = p
                frame = make_frame(t, p, seq=0, idx=i, train=False)
                sample = TrackDataSample()
                sample.video_data_samples = [frame]
                imgs = t[p + 'input/img'].float()[:, None]
                model.predict(dict(imgs=imgs), [sample])
                pred = frame.pred_occ
                tracks = model._test_state['pending']
                outs.append(dict(
                    sem=pred.semantics.reshape(-1).long(),
                    inst=pred.instances.reshape(-1).long(),
                    live=int((tracks.obj_idxes >= 0).sum()),
                    ids=sorted(int(x) for x in tracks.obj_idxes[tracks.obj_idxes >= 0])))
    finally:
        rec.close()
    rec.records['geometry'] = geometry
    return rec.records, outs


def run_train_clip(model, t: Dict[str, torch.Tensor], seed: int = 0,
                   sampled: Optional[Dict[str, dict]] = None):
    """The dump's 3-frame training clip through ``model.loss`` on the original's inputs,
    dropout off (as the dump ran it), the query drop / false-positive insertion replayed
    from ``train/f{i}/qim/selected_src``. Returns (records, losses)."""
    from mmdet.structures import TrackDataSample
    T = 3
    frames = [make_frame(t, f'train/f{i}/', seq=0, idx=i, train=True) for i in range(T)]
    for i, f in enumerate(frames):
        if f.metainfo.get('ego2global') is None:
            raise KeyError(f'dump lacks train/f{i}/meta/ego2global')
    sample = TrackDataSample()
    sample.video_data_samples = frames
    imgs = torch.stack([t[f'train/f{i}/input/img'][0].float() for i in range(T)])[None]
    model.train()
    # the dump ran its training step with every dropout in eval mode (meta.train
    # .dropout_in_eval), including nn.MultiheadAttention's own attention dropout
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.MultiheadAttention)):
            m.eval()
    qim = model.query_interaction
    calls = {'n': 0}
    original_select = qim.select_active_tracks

    def replay(tracks, active_index=None):
        # the query interaction at the end of frame i is recorded under train/f{i}/
        key = f'train/f{calls["n"]}/qim/selected_src'
        calls['n'] += 1
        if key not in t:
            raise KeyError(f'compare: dump lacks {key} (query drop / FP insertion to replay)')
        return tracks[t[key].long()]

    qim.select_active_tracks = replay
    rec = StageRecorder(model, sampled)
    frame_counter = {'t': -1}

    def on_backbone(module, args):
        frame_counter['t'] += 1
        rec.prefix = f'train/f{frame_counter["t"]}/'
    pre = model.img_backbone.register_forward_pre_hook(on_backbone)
    geometry: Dict[str, Dict[str, float]] = {}
    torch.manual_seed(seed)
    try:
        # values only (no backward): without autograd's saved tensors the clip fits in memory
        with torch.no_grad(), original_geometry(model, t, lambda: rec.prefix, geometry):
            losses = model.loss(dict(imgs=imgs), [sample])
    finally:
        qim.select_active_tracks = original_select
        pre.remove()
        rec.close()
    rec.records['geometry'] = geometry
    return rec.records, {k: v.detach().double() for k, v in losses.items()}

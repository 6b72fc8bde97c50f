"""Run the original TrackOcc on a synthetic sequence and dump every stage (reference side).

Run with the reference environment (tools/parity/setup_reference_env.sh)::

    .venv-ref/bin/python tools/parity/dump_reference.py --original /path/to/TrackOcc \
        --data-root data/synthetic-parity --out parity.pth [--seed 0] [--frames 6] \
        [--config paper|small]

It builds the original model from its own config (variant overrides from small_config.py),
seeds and initialises it like the original's train.py (``set_random_seed`` + ``init_weights``),
and records with forward hooks (the original's code is not edited; CPU stand-ins from
ref_ops.py replace its CUDA-only pieces):

* ``test/...``: streaming inference over ``--frames`` frames of the first validation sequence,
  through the original's test pipeline and ``forward_test``;
* ``train/...``: one 3-frame training clip (the first window of the training split that the
  original's ``filter_empty_gt`` accepts) through the original's training pipeline and
  ``train_step``, with every loss term.

The dump layout, the key names and what was made deterministic are documented in
tools/parity/README.md. The file is written atomically, with a JSON manifest next to it.
"""
import argparse
import hashlib
import importlib
import json
import os
import sys
import time
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import dump_format  # noqa: E402
import ref_ops  # noqa: E402
import small_config  # noqa: E402

CONFIG_REL = 'configs/TrackOcc/trackocc_r50_704x256_3inst_3f_8gpu.py'
#: fields of the track Instances recorded around the memory bank and the query interaction
#: (``pred_masks`` is left out: its rows are the head's mask outputs of the same tracks)
INSTANCE_FIELDS = ('query', 'ref_pts', 'output_embedding', 'obj_idxes', 'matched_gt_idxes',
                   'disappear_time', 'scores', 'track_scores', 'pred_centers', 'pred_logits',
                   'mem_bank', 'mem_padding_mask', 'save_period')
#: record names (under a frame) stored in full whatever their size: model inputs and targets
FULL_PREFIXES = ('input/', 'pipeline/', 'meta/', 'depth_target/', 'stuff/')


def log(msg):
    print(f'[dump {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--original', required=True, help='checkout of the original TrackOcc')
    p.add_argument('--data-root', required=True,
                   help='synthetic data root (tools/create_data.py synthetic --out-dir)')
    p.add_argument('--out', required=True, help='dump file to write (.pth)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--frames', type=int, default=6, help='streamed inference frames')
    p.add_argument('--config', choices=sorted(small_config.VARIANTS), default='paper')
    p.add_argument('--max-elements', type=int, default=1 << 16,
                   help='float tensors larger than this are stored sampled (README)')
    p.add_argument('--skip', choices=('train', 'test'), action='append', default=[],
                   help='leave out a part (for debugging; a complete dump has both)')
    p.add_argument('--checkpoint-out', default=None,
                   help='also write the initial weights as an mmcv checkpoint '
                        '{"meta", "state_dict"} (the original layout)')
    p.add_argument('--cls-bias', type=float, default=-4.0,
                   help='added to the class-logit bias after init_weights (saved in the state '
                        'dict like every weight; default -4). With the plain initialisation '
                        '(--cls-bias 0) every query of the untrained model scores about 0.85, '
                        'becomes a track and never dies: the paper config then holds 200 more '
                        '640k-voxel track masks each frame and runs out of 24 GB at frame 3. '
                        'At -4 about 12%% of the queries are born per frame and tracks die')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    args = p.parse_args(argv)
    if args.frames < 1:
        p.error('--frames must be at least 1')
    if args.max_elements < 1:
        p.error('--max-elements must be positive')
    return args


# ----------------------------------------------------------------------------- environment
def import_original(original):
    """Put the original first on sys.path, install the CPU ops, import and patch it."""
    original = os.path.realpath(original)
    for rel in ('models/detectors/trackocc.py', CONFIG_REL, 'loaders/__init__.py'):
        if not os.path.isfile(os.path.join(original, rel)):
            sys.exit(f'dump_reference: {original} is not a checkout of the original TrackOcc '
                     f'({rel} missing)')
    if original not in sys.path:
        sys.path.insert(0, original)
    ref_ops.install_cpu_ops()
    models = importlib.import_module('models')
    importlib.import_module('loaders')
    got = os.path.realpath(models.__file__)
    if not got.startswith(original + os.sep):
        sys.exit(f'dump_reference: imported the original\'s models from {got}, not from '
                 f'{original} (another "models" package on sys.path?)')
    patched = ref_ops.patch_original_for_cpu()
    return original, patched


def tree_digest(root):
    """sha256 over the original's Python sources and configs (path + content, sorted)."""
    h = hashlib.sha256()
    for sub in ('models', 'loaders', 'configs'):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, sub)):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(('.py', '.cpp', '.cu')):
                    path = os.path.join(dirpath, name)
                    h.update(os.path.relpath(path, root).encode())
                    with open(path, 'rb') as f:
                        h.update(f.read())
    return h.hexdigest()


def build_config(original, data_root, variant):
    """The original config with the variant's and the run's overrides."""
    from mmcv import Config
    path = os.path.join(original, CONFIG_REL)
    with open(path) as f:
        source = f.read()
    data_root = os.path.realpath(data_root)
    kitti = os.path.join(data_root, 'kitti_format') + '/'
    occ = os.path.join(data_root, 'pano_voxel04') + '/'
    for rel in ('kitti_format/waymo_infos_train_jpg.pkl', 'kitti_format/waymo_infos_val_jpg.pkl'):
        if not os.path.isfile(os.path.join(data_root, rel)):
            sys.exit(f'dump_reference: {os.path.join(data_root, rel)} not found (generate the '
                     'data with tools/create_data.py synthetic)')
    run_overrides = {
        # the synthetic frames are already at the released 0.5 s (every 5th frame) rate
        'load_interval': 1,
        'dataset_root': kitti,
        'occupancy_path': occ,
    }
    variant_overrides = small_config.overrides_of(variant)
    text = small_config.apply_overrides(source, {**variant_overrides, **run_overrides}, path)
    cfg = Config.fromstring(text, '.py')
    return cfg, variant_overrides, run_overrides


def quiet_known_noise():
    """Silence init_weights' per-parameter report and warnings known to be harmless here."""
    import logging
    import warnings
    from mmcv.utils import get_logger
    get_logger('mmcv', log_level=logging.WARNING)
    for msg in ('torch.range is deprecated', 'torch.meshgrid: in an upcoming release',
                "User provided device_type of 'cuda', but CUDA is not available"):
        warnings.filterwarnings('ignore', message=msg)


# ----------------------------------------------------------------------------- recording
class Recorder:
    """Collects tensors under '/'-separated keys; large float tensors are sampled."""

    def __init__(self, max_elements):
        import torch
        self.torch = torch
        self.max_elements = max_elements
        self.tensors = OrderedDict()
        self.sampled = OrderedDict()
        self.prefix = None

    def key(self, name):
        if self.prefix is None:
            raise RuntimeError(f'recorded {name!r} outside of a frame')
        return self.prefix + name

    def put(self, name, value, absolute=False, full=None):
        """Record ``value`` (tensor, number, bool, list/tuple/dict of those; None skipped).

        Floating tensors above ``max_elements`` are sampled unless ``full`` (default: the name
        starts with one of FULL_PREFIXES).
        """
        torch = self.torch
        if full is None:
            full = name.startswith(FULL_PREFIXES)
        key = name if absolute else self.key(name)
        if value is None:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                self.put(f'{key}/{k}', v, absolute=True, full=full)
            return
        if isinstance(value, (list, tuple)):
            if value and all(isinstance(v, (bool, int, float)) for v in value):
                self.put(key, torch.tensor(value), absolute=True, full=full)
                return
            for i, v in enumerate(value):
                self.put(f'{key}/{i}', v, absolute=True, full=full)
            return
        if isinstance(value, bool):
            value = torch.tensor(value)
        elif isinstance(value, (int, float)):
            value = torch.tensor(value, dtype=torch.int64 if isinstance(value, int)
                                 else torch.float64)
        elif hasattr(value, '__array__') and not isinstance(value, torch.Tensor):
            value = torch.from_numpy(__import__('numpy').ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise TypeError(f'cannot record {key}: {type(value).__name__}')
        if key in self.tensors:
            raise KeyError(f'{key} recorded twice (a hook fired more often than expected)')
        t = value.detach().cpu()
        if t.is_floating_point() and t.numel() > self.max_elements and not full:
            flat = t.reshape(-1)
            idx = dump_format.sample_index_tensor(flat.numel(), self.max_elements)
            num_nan, num_inf = int(torch.isnan(flat).sum()), int(torch.isinf(flat).sum())
            fin = flat if num_nan + num_inf == 0 else flat[torch.isfinite(flat)]
            absf = fin.abs()
            self.sampled[key] = dict(
                shape=list(t.shape), numel=int(flat.numel()), count=int(idx.numel()),
                multiplier=int(dump_format.sample_multiplier(flat.numel())),
                dtype=str(t.dtype).replace('torch.', ''),
                sum=float(fin.sum(dtype=torch.float64)),
                abs_sum=float(absf.sum(dtype=torch.float64)),
                abs_max=float(absf.max()) if absf.numel() else 0.0,
                num_nan=num_nan, num_inf=num_inf)
            self.tensors[key] = flat[idx].clone()
        else:
            self.tensors[key] = t.clone().contiguous()

    def put_instances(self, name, inst, fields=INSTANCE_FIELDS):
        for f in fields:
            if inst.has(f):
                self.put(f'{name}/{f}', inst.get(f))
        self.put(f'{name}/len', len(inst))


def wrap_method(obj, name, before=None, after=None):
    """Replace ``obj.name`` by a wrapper calling ``before(*a, **k)`` / ``after(result, *a, **k)``."""
    fn = getattr(obj, name)

    def wrapper(*args, **kwargs):
        if before is not None:
            before(*args, **kwargs)
        result = fn(*args, **kwargs)
        if after is not None:
            after(result, *args, **kwargs)
        return result

    setattr(obj, name, wrapper)
    return fn


def install_hooks(model, rec):
    """Forward hooks and method wrappers recording every stage; returns hook handles."""
    import torch.nn as nn
    handles = []
    named = dict(model.named_modules())

    def out_hook(stage):
        def hook(module, inputs, output):
            rec.put(stage, output)
        return hook

    stages = OrderedDict([
        ('img_backbone', 'img_backbone'),
        ('img_neck', 'img_neck'),
        ('img_view_transformer.depth_net', 'depth_net'),
        ('volume_encoder_backbone', 'volume_encoder_backbone'),
        ('pts_bbox_head.transformer', 'occ_encoder'),
        ('pts_bbox_head.enhance_projs', 'head/enhance_projs'),
        ('pts_bbox_head.enhance_conv', 'head/enhance_conv'),
        ('pts_bbox_head.up0', 'head/up0'),
        ('pts_bbox_head.up1', 'head/up1'),
        ('pts_bbox_head.final_conv', 'head/mask_features'),
        ('pts_bbox_head.compact_proj', 'head/decoder_value'),
    ])
    # every sub-layer of the occupancy encoder and of the mask decoder layers
    for prefix, stage in (('pts_bbox_head.transformer.encoder.layers.', 'occ_encoder/layers/'),
                          ('pts_bbox_head.transformer_decoder.layers.', 'decoder/layers/')):
        for name in named:
            rest = name[len(prefix):] if name.startswith(prefix) else None
            if rest is None:
                continue
            parts = rest.split('.')
            if len(parts) == 1 or (len(parts) == 3 and parts[1] in ('attentions', 'norms', 'ffns')):
                stages[name] = stage + '/'.join(parts)
    for name in named:
        for branch in ('reg_branches', 'velo_branches'):
            p = f'pts_bbox_head.{branch}.'
            if name.startswith(p) and name[len(p):].isdigit():
                stages[name] = f'head/{branch}/{name[len(p):]}'
    for name, stage in stages.items():
        if name not in named:
            raise KeyError(f'the original model has no module {name!r}')
        handles.append(named[name].register_forward_hook(out_hook(stage)))

    def neck3d_hook(module, inputs, output):
        compact_occ, feats = output
        rec.put('volume_encoder_neck/compact_occ', compact_occ)  # (B, C, 50, 50, 16)
        rec.put('volume_encoder_neck/feats', list(feats))  # full, 1/2 and 1/4 resolution
    handles.append(model.volume_encoder_neck.register_forward_hook(neck3d_hook))

    def decoder_hook(module, inputs, output):
        outs, refs = output
        rec.put('decoder/out', list(outs))  # per layer (Q, B, C), things then stuff
        rec.put('decoder/ref_points', list(refs))  # per layer (B, Q, 1, 3) in [0, 1]
    handles.append(model.pts_bbox_head.transformer_decoder.register_forward_hook(decoder_hook))

    # view transformer: its input list carries the camera tensors and the mlp input
    def vt_hook(module, inputs, output):
        (x, rots, trans, intrins, post_rots, post_trans, bda, mlp_input) = inputs[0][:8]
        rec.put('view_transformer/mlp_input', mlp_input)
        rec.put('view_transformer/volume', output[0])  # lifted volume (B, C, X, Y, Z)
        rec.put('view_transformer/depth', output[1])   # (B*N, D, h, w) softmax
    handles.append(model.img_view_transformer.register_forward_hook(vt_hook))

    # head: its inputs (track queries entering the frame) and all its outputs
    def head_pre(module, inputs):
        rec.put('head/in/query', inputs[0])
        rec.put('head/in/ref_pts', inputs[1])

    def head_hook(module, inputs, output):
        not_track, cls_list, mask_list, ref_velo_list, query_feats, last_ref = output
        rec.put('head/out/seg_pred', not_track['seg_pred_list'])
        rec.put('head/out/stuff_cls', not_track['stuff_cls_pred_list'])
        rec.put('head/out/stuff_mask', not_track['stuff_mask_pred_list'])
        rec.put('head/out/cls', cls_list)
        rec.put('head/out/mask', mask_list)
        rec.put('head/out/centers', ref_velo_list)
        rec.put('head/out/query_feats', query_feats)
        rec.put('head/out/last_ref_points', last_ref)
    handles.append(model.pts_bbox_head.register_forward_pre_hook(head_pre))
    handles.append(model.pts_bbox_head.register_forward_hook(head_hook))

    # camera projection of the occupancy encoder's reference points
    enc = model.pts_bbox_head.transformer.encoder

    def sampling_after(result, *args, **kwargs):
        ref_cam, mask, depth = result
        rec.put('occ_encoder/reference_points_cam', ref_cam)
        rec.put('occ_encoder/reference_mask', mask)
        rec.put('occ_encoder/reference_depth', depth)
    wrap_method(enc, 'cumstom_point_sampling', after=sampling_after)

    # memory bank and query interaction (Instances in and out)
    def mb_pre(module, inputs):
        rec.put_instances('memory_bank/in', inputs[0])

    def mb_hook(module, inputs, output):
        rec.put_instances('memory_bank/out', output)
    handles.append(model.memory_bank.register_forward_pre_hook(mb_pre))
    handles.append(model.memory_bank.register_forward_hook(mb_hook))

    def qim_pre(module, inputs):
        data = inputs[0]
        ti = data['track_instances']
        rec.put_instances('qim/in', ti)
        # tag each track with its row, to record which rows the (random) selection keeps
        import torch
        ti.set('_parity_src', torch.arange(len(ti)))

    def qim_hook(module, inputs, output):
        rec.put_instances('qim/out', output)

    def select_after(result, data):
        ti = data['track_instances']
        if not ti.has('_parity_src'):
            return  # forward_test's own call on the QIM output
        rec.put('qim/active_src', ti.get('_parity_src')[ti.obj_idxes >= 0])
        rec.put('qim/selected_src', result.get('_parity_src'))
        rec.put('qim/selected_obj_idxes', result.obj_idxes)
    handles.append(model.query_interact.register_forward_pre_hook(qim_pre))
    handles.append(model.query_interact.register_forward_hook(qim_hook))
    wrap_method(model.query_interact, '_select_active_tracks', after=select_after)

    # inference: the tracks that enter the panoptic merge, and the merge output
    def merge_before(active, stuff_logits, stuff_masks, img_metas):
        rec.put('merge/active_obj_idxes', active.obj_idxes)
        rec.put('merge/active_scores', active.scores)

    wrap_method(model, 'merge_panoseg', before=merge_before)

    # training: per-frame prefix, matching, targets
    def single_before(track_instances, img_inputs, curr2next_ego, gt_depth, voxel_semantics,
                      frame_idx=0, visible_mask=None, infov_mask=None, img_metas=None):
        rec.prefix = f'train/f{frame_idx}/'
        rec.put('curr2next_ego', curr2next_ego)
    wrap_method(model, '_forward_single', before=single_before)

    crit = model.criterion

    def init_clip_before(gt_instances):
        for i, gt in enumerate(gt_instances):
            rec.put(f'train/gt/f{i}/obj_ids', gt.obj_ids, absolute=True)
            rec.put(f'train/gt/f{i}/labels', gt.labels, absolute=True)
            rec.put(f'train/gt/f{i}/centers', gt.centers, absolute=True)
    wrap_method(crit, 'initialize_for_single_clip', before=init_clip_before)

    def match_after(result, outputs, mask_camera, dec_lvl, if_step=False):
        rec.put(f'match/l{dec_lvl}/obj_idxes', result.obj_idxes)
        rec.put(f'match/l{dec_lvl}/matched_gt_idxes', result.matched_gt_idxes)
    wrap_method(crit, 'match_for_single_frame', after=match_after)

    def thing_matcher_hook(module, inputs, output):
        rec.put('match/thing_matcher/gt_labels', inputs[3])
        rec.put('match/thing_matcher/src_idx', output[0])
        rec.put('match/thing_matcher/tgt_idx', output[1])
    handles.append(crit.matcher.register_forward_hook(thing_matcher_hook))

    def stuff_matcher_hook(module, inputs, output):
        import torch
        rec.put('stuff/targets', inputs[2].to(torch.int16))
        rec.put('stuff/class_ids', inputs[3])
        rec.put('stuff/indices', [list(pair) for pair in output])
    handles.append(model.pts_bbox_head.matcher.register_forward_hook(stuff_matcher_hook))

    vt = model.img_view_transformer

    def depth_loss_before(depth_labels, depth_preds):
        import torch
        rec.put('depth_target/one_hot', vt.get_downsampled_gt_depth(depth_labels).to(torch.uint8))
    wrap_method(vt, 'get_depth_loss', before=depth_loss_before)

    def forward_train_after(losses, *args, **kwargs):
        for k, v in losses.items():
            rec.put(f'train/loss/{k}', v, absolute=True)
    wrap_method(model, 'forward_train', after=forward_train_after)
    return handles


class PipelineTap:
    """Wraps the transforms of a dataset pipeline to keep what the collected output drops."""

    def __init__(self, dataset):
        self.records = []
        transforms = dataset.pipeline.transforms
        for i, t in enumerate(transforms):
            transforms[i] = self._wrap(t)

    def _wrap(self, transform):
        tap = self
        name = type(transform).__name__

        def call(results):
            out = transform(results)
            if out is not None and name == 'OccWaymoPrepareImageInputs':
                tap.records.append(dict(
                    cam_names=list(out['cam_names']),
                    img_augs={cam: out['img_augs'][cam] for cam in out['cam_names']},
                    canvas=[a.copy() for a in out['canvas']]))
            if out is not None and name == 'OccWaymoLoadAnnotationsBEVDepth':
                tap.records[-1].update(bda=dict(
                    rotate_bda=float(out['rotate_bda']), scale_bda=float(out['scale_bda']),
                    flip_dx=bool(out['flip_dx']), flip_dy=bool(out['flip_dy'])))
            return out
        call.__name__ = name
        return call

    def take(self):
        rec, self.records = self.records, []
        return rec


def record_pipeline(rec, taps, names):
    """Image-augmentation draws, resized uint8 images and BDA draws of each frame."""
    import numpy as np
    for tap in taps:
        rec.put('pipeline/cam_names', [names.index(c) for c in tap['cam_names']])
        augs = []
        for cam in tap['cam_names']:
            resize, resize_dims, crop, flip, rotate = tap['img_augs'][cam]
            augs.append([float(resize[0]), float(resize[1]), float(resize_dims[0]),
                         float(resize_dims[1])] + [float(c) for c in crop]
                        + [float(bool(flip)), float(rotate)])
        rec.put('pipeline/img_augs', np.asarray(augs, dtype=np.float64))
        rec.put('pipeline/canvas', np.stack(tap['canvas']))
        rec.put('pipeline/bda', tap['bda'])


def record_inputs(rec, data, frame=None):
    """The collected model inputs of one frame (frame=None: test, else index into lists)."""
    import numpy as np
    import torch
    names = ('img', 'rots', 'trans', 'intrins', 'post_rots', 'post_trans', 'bda')

    def pick(v):
        return v if frame is None else v[frame]
    img_inputs = pick(data['img_inputs'])
    for n, t in zip(names, img_inputs):
        rec.put(f'input/{n}', t)
    for k in ('gt_depth', 'visible_mask', 'infov_mask', 'voxel_semantics', 'voxel_instances'):
        if k in data:
            rec.put(f'input/{k}', pick(data[k]))
    if 'instid_and_clsid' in data:
        v = pick(data['instid_and_clsid'])
        rec.put('input/instid_and_clsid', v.data[0][0] if hasattr(v, 'data') else v[0])
    metas = data['img_metas'].data[0][0]
    for k in ('index', 'sample_idx', 'start_of_sequence', 'ego2global', 'curr_to_prev_ego_rt',
              'prev_ego_to_global_rt', 'global_to_curr_ego_rt'):
        if k in metas:
            v = pick(metas[k])
            if isinstance(v, (list, np.ndarray)):
                v = torch.as_tensor(np.asarray(v, dtype=np.float64))
            if isinstance(v, (bool, np.bool_)):
                v = bool(v)
            elif isinstance(v, np.integer):
                v = int(v)
            rec.put(f'meta/{k}', v)


# ----------------------------------------------------------------------------- the two parts
def run_test(model, dataset, cams, args, rec, log_times):
    """Stream ``args.frames`` frames of the first validation sequence through forward_test."""
    import torch
    from mmcv.parallel import MMDataParallel, collate
    flags = dataset.flag
    n_first = int((flags == flags[0]).sum())
    if args.frames > n_first:
        sys.exit(f'dump_reference: --frames {args.frames} but the first validation sequence has '
                 f'{n_first} frames (generate more with --frames-per-seq)')
    tap = PipelineTap(dataset)
    dp = MMDataParallel(model, device_ids=[0])
    model.eval()
    sample_idxs = []
    for i in range(args.frames):
        t0 = time.time()
        data = collate([dataset[i]], samples_per_gpu=1)
        rec.prefix = f'test/f{i}/'
        record_pipeline(rec, tap.take(), cams)
        record_inputs(rec, data)
        with torch.no_grad():
            out = dp(return_loss=False, rescale=True, **data)
        res = out[0]
        rec.put('out/pano_inst', res['pano_inst'])
        rec.put('out/pano_sem', res['pano_sem'])
        ti = model.test_track_instances
        rec.put('tracks/obj_idxes', ti.obj_idxes)
        rec.put('tracks/disappear_time', ti.disappear_time)
        rec.put('tracks/max_obj_id', int(model.track_base.max_obj_id))
        live = int((ti.obj_idxes >= 0).sum())
        sample_idxs.append(int(res['sample_idx']))
        log_times.append(('test', i, time.time() - t0))
        log(f'test frame {i} (sample_idx {res["sample_idx"]}): {live} live tracks, '
            f'{len(set(res["pano_inst"].tolist())) - 1} instance ids in the output, '
            f'{time.time() - t0:.1f}s')
    return sample_idxs


def set_dropout_eval(model):
    """Put every dropout (and attention with dropout) in eval mode; returns their names."""
    import torch.nn as nn
    names = []
    for name, m in model.named_modules():
        p = getattr(m, 'p', None) if isinstance(m, nn.modules.dropout._DropoutNd) else \
            getattr(m, 'dropout', None) if isinstance(m, nn.MultiheadAttention) else None
        if type(m).__name__ == 'DropPath':
            p = getattr(m, 'drop_prob', None)
        if p:
            m.eval()
            names.append(name)
    return names


def run_train(model, dataset, cams, args, rec, log_times):
    """One 3-frame training clip through the original's pipeline and train_step."""
    import numpy as np
    import torch
    from mmcv.parallel import MMDataParallel, collate
    tap = PipelineTap(dataset)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    sample = None
    start = 0
    for start in range(len(dataset)):
        tap.take()
        sample = dataset.prepare_train_data(start)
        if sample is not None:
            break
    if sample is None:
        sys.exit('dump_reference: no training window passes the original\'s filter_empty_gt '
                 '(every window has a frame without a visible thing instance)')
    taps = tap.take()
    data = collate([sample], samples_per_gpu=1)
    n = len(data['img_inputs'])
    metas = data['img_metas'].data[0][0]
    rec.put('train/window_start', start, absolute=True)
    rec.put('train/sample_idx', [int(s) for s in metas['sample_idx']], absolute=True)
    for f in range(n):
        rec.prefix = f'train/f{f}/'
        record_pipeline(rec, taps[f:f + 1], cams)
        record_inputs(rec, data, frame=f)
    model.train()
    dropped = set_dropout_eval(model)
    dp = MMDataParallel(model, device_ids=[0])
    t0 = time.time()
    torch.manual_seed(args.seed)
    with torch.no_grad():
        out = dp.train_step(data, None)
    rec.prefix = 'train/'
    rec.put('loss_total', out['loss'])
    log_times.append(('train', n, time.time() - t0))
    log(f'training clip (window start {start}, sample_idx {list(metas["sample_idx"])}): '
        f'total loss {float(out["loss"]):.6f}, {time.time() - t0:.1f}s')
    return dict(window_start=start, sample_idx=[int(s) for s in metas['sample_idx']],
                dropout_in_eval=dropped, log_vars={k: float(v) for k, v in out['log_vars'].items()})


# ----------------------------------------------------------------------------- output
def atomic_write(path, write):
    d = os.path.dirname(os.path.abspath(path)) or '.'
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f'.{os.path.basename(path)}.tmp{os.getpid()}')
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def plain(obj):
    """``obj`` with only builtin types (torch.load(weights_only=True) reads them)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int) or type(obj).__name__.startswith(('int', 'uint')):
        return int(obj)
    if isinstance(obj, float) or type(obj).__name__.startswith('float'):
        return float(obj)
    raise TypeError(f'meta value of type {type(obj).__name__} is not a plain type')


def manifest_of(dump):
    entries = OrderedDict()
    for k, t in dump['tensors'].items():
        s = dump['sampled'].get(k)
        entries[k] = dict(shape=s['shape'] if s else list(t.shape),
                          dtype=str(t.dtype).replace('torch.', ''),
                          stored='sampled' if s else 'full')
        if s:
            entries[k]['count'] = s['count']
    return dict(format=dump['format'], version=dump['version'], meta=dump['meta'],
                state_dict={k: list(v.shape) for k, v in dump['state_dict'].items()},
                tensors=entries)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    original, patched = import_original(args.original)
    import mmcv
    import mmdet
    import mmdet3d
    import numpy as np
    import torch
    from mmdet.apis import set_random_seed
    from mmdet3d.datasets import build_dataset
    from mmdet3d.models import build_model
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_known_noise()

    cfg, variant_overrides, run_overrides = build_config(original, args.data_root, args.config)
    set_random_seed(args.seed)
    model = build_model(cfg.model, train_cfg=cfg.get('train_cfg'), test_cfg=cfg.get('test_cfg'))
    model.init_weights()
    if args.cls_bias:
        with torch.no_grad():
            model.pts_bbox_head.cls_embed.bias.add_(args.cls_bias)
    state_dict = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    n_params = sum(p.numel() for p in model.parameters())
    log(f'built the original TrackOcc ({args.config}: {n_params / 1e6:.2f}M parameters, '
        f'seed {args.seed})')

    cams = list(cfg.data_config['cams'])
    rec = Recorder(args.max_elements)
    install_hooks(model, rec)
    times = []
    meta = OrderedDict(
        created=time.strftime('%Y-%m-%d %H:%M:%S'), seed=args.seed, config=args.config,
        cls_bias=args.cls_bias,
        config_file=CONFIG_REL, variant_overrides=variant_overrides, run_overrides=run_overrides,
        frames=args.frames, max_elements=args.max_elements,
        data_root=os.path.realpath(args.data_root), original=original,
        original_tree_sha256=tree_digest(original),
        versions=dict(python=sys.version.split()[0], torch=torch.__version__,
                      numpy=np.__version__, mmcv=mmcv.__version__, mmdet=mmdet.__version__,
                      mmdet3d=mmdet3d.__version__),
        cpu_patches=patched + [ref_ops.EXT_MODULE + ' (pure PyTorch, tools/parity/ref_ops.py)'],
        precision='float32 on CPU (the config\'s fp16 is not applied)',
        effective_config=cfg.pretty_text)

    if 'test' not in args.skip:
        test_set = build_dataset(cfg.data.test)
        meta['test_sample_idx'] = run_test(model, test_set, cams, args, rec, times)
    if 'train' not in args.skip:
        model.load_state_dict(state_dict)
        train_set = build_dataset(cfg.data.train)
        meta['train'] = run_train(model, train_set, cams, args, rec, times)
    meta['seconds'] = dict(total=round(time.time() - t_start, 1),
                           frames=[[p, i, round(s, 1)] for p, i, s in times])

    dump = dict(format=dump_format.FORMAT, version=dump_format.VERSION, meta=plain(meta),
                state_dict=dict(state_dict), tensors=dict(rec.tensors), sampled=dict(rec.sampled))
    atomic_write(args.out, lambda p: torch.save(dump, p))
    manifest = manifest_of(dump)
    atomic_write(os.path.splitext(args.out)[0] + '.json',
                 lambda p: open(p, 'w').write(json.dumps(manifest, indent=1) + '\n'))
    if args.checkpoint_out:
        ckpt = dict(meta=dict(config=cfg.pretty_text, seed=args.seed, source='dump_reference'),
                    state_dict=OrderedDict(state_dict))
        atomic_write(args.checkpoint_out, lambda p: torch.save(ckpt, p))
    size = os.path.getsize(args.out) / 2 ** 20
    log(f'wrote {args.out} ({size:.1f} MiB, {len(rec.tensors)} tensors, '
        f'{len(rec.sampled)} sampled) in {time.time() - t_start:.0f}s')


if __name__ == '__main__':
    main()

"""What dump_reference.py records inside the original's model (reference side): the
:class:`Recorder` of named tensors (large float tensors sampled as dump_format says) and the
forward hooks / method wrappers that feed it, installed on the original's modules without
editing its code. Runs in the reference environment (torch 1.12, Python 3.8)."""
from collections import OrderedDict

import dump_format

#: fields of the track Instances recorded around the memory bank and the query interaction
#: (``pred_masks`` is left out: its rows are the head's mask outputs of the same tracks)
INSTANCE_FIELDS = ('query', 'ref_pts', 'output_embedding', 'obj_idxes', 'matched_gt_idxes',
                   'disappear_time', 'scores', 'track_scores', 'pred_centers', 'pred_logits',
                   'mem_bank', 'mem_padding_mask', 'save_period')
#: record names (under a frame) stored in full whatever their size: model inputs and targets
FULL_PREFIXES = ('input/', 'pipeline/', 'meta/', 'depth_target/', 'stuff/')



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
    """Replace ``obj.name`` by a wrapper calling ``before(*a, **k)`` and
    ``after(result, *a, **k)``."""
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

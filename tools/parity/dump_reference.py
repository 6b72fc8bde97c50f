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
from dump_hooks import Recorder, install_hooks  # noqa: E402,F401 (Recorder: tests)

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

"""Compare trackocc with a reference dump of the original TrackOcc (issue 12, deliverable 4).

    .venv/bin/python tools/parity/compare.py --dump DUMP [--config small|paper] [--json OUT]
        [--parts pipeline,stages,losses,stream]

Converts the dump's state dict (the original's layout), builds the model from the
_original-weights config with the dump's variant (small_config.py), and prints one table per
part:

* ``pipeline``: our dataset + transforms on the dump's data root and frames against the
  original's pipeline records (normalised images, camera matrices, GT voxels, depth targets);
* ``stages`` (test frame 0 .. F-1 and the training clip): our model on the *original's* input
  tensors, so pipeline differences do not show here; every recorded stage;
* ``losses``: every loss term of the 3-frame training clip (query drop / FP insertion
  replayed from the dump);
* ``stream``: semantics / instance ids agreement and live tracks per frame.

Tolerance (fp32, CPU): tensors and losses max rel diff <= 1e-4 (relative to the reference
tensor's max abs); streamed semantics and ids equal on >= 99.99 % of voxels with the same
number of live tracks. Exit status 1 when a row fails, 2 on bad input.
"""
import argparse
import json
import os
import os.path as osp
import sys
import tempfile
import time

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import compare_model  # noqa: E402
import compare_tables as ct  # noqa: E402
import dump_format  # noqa: E402

PARTS = ('pipeline', 'stages', 'losses', 'stream')
#: our loss names -> the original's (frame{t}_loss_x[_d{l}] -> frame_{t}_loss_x_{l})
LOSS_MAP = {
    'loss_depth': 'loss_depth', 'loss_sem': 'loss_sem_{l}',
    'loss_stuff_mask': 'loss_stuff_mask_{l}',
    'loss_stuff_dice': 'loss_stuff_dice_mask_{l}', 'loss_stuff_cls': 'loss_stuff_class_{l}',
    'loss_cls': 'loss_cls_{l}', 'loss_mask': 'loss_mask_{l}', 'loss_dice': 'loss_dice_{l}',
    'loss_center': 'loss_center_{l}',
}


def log(msg):
    print(f'[compare {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def load_dump(path):
    if not osp.isfile(path):
        raise SystemExit(f'compare: {path}: no such file')
    dump = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(dump, dict) or dump.get('format') != dump_format.FORMAT:
        raise SystemExit(f'compare: {path}: not a parity reference dump '
                         f'(format {dump.get("format") if isinstance(dump, dict) else None!r})')
    if dump.get('version') != dump_format.VERSION:
        raise SystemExit(f'compare: {path}: dump version {dump.get("version")}, this compare '
                         f'reads {dump_format.VERSION}')
    return dump


def stage_table(title, dump, records, prefix):
    """Every float stage of ``prefix`` that both sides recorded (dump order)."""
    t, sampled = dump['tensors'], dump['sampled']
    table = ct.Table(title)
    for key in t:
        if not key.startswith(prefix) or key not in records:
            continue
        ref = t[key]
        if key.endswith('input/img'):
            continue
        name = key[len(prefix):]
        if name.endswith(LOGIT_POINTS) and key not in sampled:
            table.rows.append(_logit_points_row(name, ref, records[key]))
            continue
        table.rows.append(ct.compare_tensor(name, ref, sampled.get(key), records[key]))
    geometry = records.get('geometry', {}).get(prefix)
    if geometry is not None:
        table.rows.insert(0, _geometry_row(geometry))
    return table


def _geometry_row(g):
    """Frustum points that our camera geometry puts into another voxel than the original's
    float32 arithmetic (a discrete outcome, judged by its share); the stages of the table
    ran on the original's coordinates (compare_model.original_geometry)."""
    share = 1 - g['differing'] / max(g['inside'], 1)
    return ct.Row('view_transformer/frustum voxels (our geometry)', g['max_abs_m'],
                  1 - share, share >= ct.AGREE_TOL,
                  f'{int(g["differing"])} of {int(g["inside"])} frustum points in the grid '
                  f'change voxel (coordinates differ by <= {g["max_abs_m"]:.2e} m); the '
                  f'stages below lift with the original\'s arithmetic')


#: reference points kept as logits of the normalised grid position (inverse sigmoid): the
#: model uses sigmoid(x), and near the grid's border (|x| up to 11.5) float32 noise of the
#: metric round trips is amplified by 1 / (p (1 - p)), so they are judged where they act
LOGIT_POINTS = ('ref_pts', 'last_ref_points')


def _logit_points_row(name, ref, ours):
    """Row of a logit-space point tensor, compared as sigmoid (normalised grid position);
    the note gives the logit-space differences."""
    row = ct.compare_tensor(name + ' (sigmoid)', ref.double().sigmoid(), None,
                            ours.detach().double().sigmoid())
    raw = ct.compare_tensor(name, ref, None, ours)
    row.note = f'as logits: max abs diff {raw.max_abs:.3e}, max rel {raw.max_rel:.3e}'
    return row


def missing_stages(dump, records, prefix):
    """Float stage keys of the dump this side does not record (listed, not silently)."""
    skip = ('pipeline/', 'input/', 'meta/', 'merge/', 'out/', 'tracks/', 'match/', 'qim/',
            'memory_bank/', 'gt/', 'depth_target/', 'stuff/')
    return [k[len(prefix):] for k in dump['tensors'] if k.startswith(prefix)
            and k not in records and not k[len(prefix):].startswith(skip)]


def loss_table(dump, losses):
    t = dump['tensors']
    table = ct.Table('Losses of the 3-frame training clip (original inputs, QIM draws replayed)')
    seen = set()
    for name, value in losses.items():
        frame, rest = name.split('_', 1)  # frame{t}, loss_x[_d{l}]
        tidx = int(frame[len('frame'):])
        lid = 0
        if '_d' in rest and rest.rsplit('_d', 1)[1].isdigit():
            rest, lid = rest.rsplit('_d', 1)[0], int(rest.rsplit('_d', 1)[1])
        for our, theirs in LOSS_MAP.items():
            if rest == our or rest == f'{our}_{lid}' or rest.startswith(our + '_') and \
                    rest[len(our) + 1:].isdigit():
                if rest != our:
                    lid = int(rest[len(our) + 1:])
                ref_key = f'train/loss/frame_{tidx}_' + theirs.format(l=lid)
                break
        else:
            table.rows.append(ct.Row(name, note='no counterpart in the original'))
            continue
        if ref_key not in t:
            table.rows.append(ct.Row(name, note=f'{ref_key} not in dump'))
            continue
        seen.add(ref_key)
        row = ct.compare_tensor(ref_key[len('train/loss/'):], t[ref_key].reshape(()), None,
                                value.reshape(()))
        row.note = f'ours {float(value):.6f} ({name}), original {float(t[ref_key]):.6f}'
        table.rows.append(row)
    for key in t:
        if key.startswith('train/loss/') and key not in seen:
            table.rows.append(ct.Row(key[len('train/loss/'):], note='not computed here'))
    total = sum(losses.values())
    row = ct.compare_tensor('loss_total', t['train/loss_total'].reshape(()), None,
                            total.reshape(()))
    row.note = f'ours {float(total):.6f}, original {float(t["train/loss_total"]):.6f}'
    table.rows.append(row)
    return table


def stream_table(dump, outs):
    t = dump['tensors']
    table = ct.Table('Streaming inference (original inputs)',
                     columns=('semantics equal', 'instance ids equal', 'pass'))
    for i, o in enumerate(outs):
        p = f'test/f{i}/'
        sem_ref = t[p + 'out/pano_sem'].long().reshape(-1)
        inst_ref = t[p + 'out/pano_inst'].long().reshape(-1)
        sem_eq = float((sem_ref == o['sem']).double().mean())
        inst_eq = float((inst_ref == o['inst']).double().mean())
        ref_live = int((t[p + 'tracks/obj_idxes'] >= 0).sum())
        ok = sem_eq >= ct.AGREE_TOL and inst_eq >= ct.AGREE_TOL and ref_live == o['live']
        n = sem_ref.numel()
        table.rows.append(ct.Row(
            f'frame {i}', sem_eq, inst_eq, ok,
            f'live tracks ours {o["live"]} / original {ref_live}; voxels differing: '
            f'semantics {int((sem_ref != o["sem"]).sum())}, ids '
            f'{int((inst_ref != o["inst"]).sum())} of {n}'))
    return table


def _pct(x):
    return f'{100 * x:.4f} %'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dump', required=True)
    parser.add_argument('--config', choices=('small', 'paper'), default=None,
                        help='variant (default: the dump\'s); must equal the dump\'s')
    parser.add_argument('--json', default=None, help='write the tables as JSON here')
    parser.add_argument('--parts', default=','.join(PARTS))
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(',') if p]
    for p in parts:
        if p not in PARTS:
            raise SystemExit(f'compare: unknown part {p!r}; expected some of {PARTS}')
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(False)
    dump = load_dump(args.dump)
    meta = dump['meta']
    if args.config and args.config != meta['config']:
        raise SystemExit(f'compare: --config {args.config} but the dump was made with '
                         f'{meta["config"]!r}')
    import small_config
    overrides = small_config.overrides_of(meta['config'])
    if {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()} != \
            meta['variant_overrides']:
        raise SystemExit(f'compare: the dump\'s variant overrides {meta["variant_overrides"]} '
                         f'differ from small_config.py\'s {meta["config"]!r}')
    cfg = compare_model.load_config(overrides)
    model, conv = compare_model.build_model(cfg, dump['state_dict'])
    log(f'converted the dump\'s weights: {conv.summary()}')
    tables = []
    if 'pipeline' in parts:
        import compare_pipeline
        tables += compare_pipeline.pipeline_tables(cfg, dump)
    if 'stages' in parts or 'stream' in parts:
        t0 = time.time()
        records, outs = compare_model.run_stream(model, dump['tensors'], int(meta['frames']),
                                                 dump['sampled'])
        log(f'streamed {meta["frames"]} frames in {time.time() - t0:.0f}s')
        if 'stages' in parts:
            for i in range(int(meta['frames'])):
                p = f'test/f{i}/'
                tab = stage_table(f'Stages, streamed frame {i} (original inputs)', dump,
                                  records, p)
                tables.append(tab)
            miss = missing_stages(dump, records, 'test/f0/')
            if miss:
                log(f'stages of the dump not recorded on this side: {", ".join(miss)}')
        if 'stream' in parts:
            tables.append(stream_table(dump, outs))
    if 'losses' in parts:
        t0 = time.time()
        records, losses = compare_model.run_train_clip(model, dump['tensors'],
                                                       int(meta['seed']), dump['sampled'])
        log(f'training clip in {time.time() - t0:.0f}s')
        for i in range(3):
            tables.append(stage_table(f'Stages, training clip frame {i} (original inputs, '
                                      'train mode)', dump, records, f'train/f{i}/'))
        tables.append(loss_table(dump, losses))
    text = '\n'.join(tab.render() for tab in tables)
    print(text)
    ok = all(tab.ok for tab in tables)
    print(f'PARITY {"PASS" if ok else "FAIL"}: '
          f'{sum(tab.ok for tab in tables)}/{len(tables)} tables within tolerance')
    if args.json:
        out = dict(dump=osp.abspath(args.dump), config=meta['config'], ok=ok,
                   tables=[tab.to_dict() for tab in tables])
        fd, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(args.json)) or '.',
                                   suffix='.tmp')
        with os.fdopen(fd, 'w') as f:
            json.dump(out, f, indent=1, default=float)
        os.replace(tmp, args.json)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())

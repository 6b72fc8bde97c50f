"""Where the tracking's CUDA graphs go wrong (issue 16 item 2): the tiny detector of
tests/models/test_query_budget.py streamed (2 sequences, 5 + 3 frames) with one set of graphs
at a time, each against the eager stream, per frame the share of voxels whose semantics /
instance ids differ and the live tracks; with each replay checked against its module
(``CUDAGraphModule.verify``). Variants: no graph but fixed rows; the head and merge graphed
(passes on an H200); the memory bank / query interaction / carry / settle graphed alone and
together, as CUDA graphs and as CUDA graphs with a device synchronisation after every wrapper
call; on a CPU emulated (RecordedGraph). Run on one H200 on 2026-12-03 (sixth session): the
first ten variants (all but the synchronised carry / memory bank / track_carry) equal to the
eager frames, no replay differing from its module (diag_h200.json); the run had emulated
variants then, the first of which hit a device-side assert that failed every later one.
Run from the project root:
    python docs/benchmark_runs/trackgraph_diag_h200_2026-12-03/diag.py --json F
"""
import argparse
import json
import os
import sys

import torch

sys.path[:0] = ['tests/models', 'tests']
import test_detector  # noqa: E402
from test_query_budget import build_pair  # noqa: E402

from trackocc.utils.cuda_graph import CUDAGraphModule, graph_modules  # noqa: E402

FRAMES = ((0, 5), (1, 3))


def run(model, device):
    """Per frame: semantics and instance ids (CPU copies) and the live tracks output."""
    out, live = [], []
    model.register_merge_observer(
        lambda tracks, _: live.append(int(model.tracker.output_mask(tracks).sum())))
    for seq, num in FRAMES:
        for t in range(num):
            sample = test_detector.make_clip([test_detector.make_frame(t, seq=seq,
                                                                       start=(t == 0))])
            with torch.no_grad():
                model.predict(dict(imgs=test_detector.images(1, 1, seed=10 * seq + t)
                                   .to(device)), [sample])
            pred = sample.video_data_samples[0].pred_occ
            out.append((pred.semantics.cpu(), pred.instances.cpu(), live[-1]))
    return out


def variant(device, fixed, names, emulate=False, sync=False):
    _, model = build_pair()
    model.fixed_track_rows = fixed
    model.to(device)
    wrapped = graph_modules(model, names, emulate=emulate) if names else []
    for name in wrapped:
        getattr(model, name).verify = True
    forward = CUDAGraphModule.forward
    if sync:
        def synced(self, *args, **kwargs):
            result = forward(self, *args, **kwargs)
            torch.cuda.synchronize()
            return result
        CUDAGraphModule.forward = synced
    try:
        frames = run(model, device)
    finally:
        CUDAGraphModule.forward = forward
    graphs = {n: dict(captures=getattr(model, n).captures, replays=getattr(model, n).replays,
                      eager=getattr(model, n).eager_calls,
                      aliased=getattr(model, n).aliased_inputs,
                      mismatches=[list(map(str, m)) for m in getattr(model, n).mismatches][:12])
              for n in wrapped}
    return frames, graphs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', required=True)
    args = parser.parse_args()
    dev = args.device
    real = dev == 'cuda'
    head = ['pts_bbox_head']
    variants = {
        'fixed_rows_eager': (True, [], {}),
        'head_merge': (False, head + ['panoptic_merge'], {}),
        'head_merge_fixed': (True, head + ['panoptic_merge'], {}),
        'memory_bank': (True, ['memory_bank'], {}),
        'query_interaction': (True, ['query_interaction'], {}),
        'true': (True, head + ['panoptic_merge', 'memory_bank', 'query_interaction'], {}),
        'track_carry': (True, ['track_carry'], {}),
        'track_settle': (True, ['track_settle'], {}),
        'carry': (True, head + ['track_carry', 'track_settle'], {}),
    }
    if real:
        for name in ('true', 'carry', 'memory_bank', 'track_carry'):
            fixed, names, _ = variants[name]
            variants[name + '_sync'] = (fixed, names, dict(sync=True))
    else:
        variants = {k: (f, n, dict(emulate=True)) for k, (f, n, _) in variants.items()}
    _, ref_model = build_pair()
    want = run(ref_model.to(dev), dev)
    results = dict(device=torch.cuda.get_device_name() if real else 'cpu',
                   torch=torch.__version__, eager_live=[w[2] for w in want], variants={})
    for name, (fixed, names, kw) in variants.items():
        try:
            got, graphs = variant(dev, fixed, names, **kw)
        except Exception as e:  # report and go on
            results['variants'][name] = dict(error=f'{type(e).__name__}: {e}'[:500])
            print(name, 'ERROR', e, flush=True)
            continue
        sem = [round(float((g[0] != w[0]).float().mean()), 4) for g, w in zip(got, want)]
        inst = [round(float((g[1] != w[1]).float().mean()), 4) for g, w in zip(got, want)]
        results['variants'][name] = dict(sem_diff=sem, inst_diff=inst,
                                         live=[g[2] for g in got], graphs=graphs)
        bad = {n: len(g['mismatches']) for n, g in graphs.items() if g['mismatches']}
        print(f'{name:28s} sem {max(sem):.3f} inst {max(inst):.3f} live '
              f'{[g[2] for g in got]} mismatches {bad}', flush=True)
    tmp = args.json + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, args.json)


if __name__ == '__main__':
    main()

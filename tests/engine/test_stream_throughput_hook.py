"""StreamThroughputHook: every frame counted once, runs of consecutive frames per sequence,
warm-up excluded from the timed frames, counts summed over 2 gloo ranks."""
import json
import math
import multiprocessing
import socket
import traceback

import pytest
import torch
from mmengine.logging import MessageHub

from trackocc.engine.hooks import StreamThroughputHook
from trackocc.structures import OccDataSample, make_sample_idx


class FakeRunner:
    def __init__(self, num_iters, name):
        self.test_dataloader = [None] * num_iters
        self.message_hub = MessageHub.get_instance(name)


def frame(seq, idx):
    return OccDataSample(metainfo=dict(sample_idx=make_sample_idx(1, seq, idx)))


def stream(hook, runner, batches):
    """``batches``: list of lists of (seq, frame) of one test step each."""
    hook.before_test_epoch(runner)
    for i, batch in enumerate(batches):
        hook.after_test_iter(runner, i, None, [frame(*f) for f in batch])
    hook.after_test_epoch(runner, {})


def test_counts_runs_and_message_hub(tmp_path):
    out = tmp_path / 'sub' / 'throughput.json'
    hook = StreamThroughputHook(out_file=str(out))
    runner = FakeRunner(4, 'stream-hook-single')
    # seq 3 frames 0..2, then seq 5 from frame 0, the last step has two frames
    stream(hook, runner, [[(3, 0)], [(3, 1)], [(3, 2)], [(5, 0), (5, 1)]])
    res = json.loads(out.read_text())
    seq3, seq5 = make_sample_idx(1, 3, 0) // 1000, make_sample_idx(1, 5, 0) // 1000
    assert res['frames'] == 5 and res['timed_frames'] == 4 and res['world_size'] == 1
    assert res['frames_per_rank'] == [5]
    assert res['streams'] == [[[seq3, 0, 3], [seq5, 0, 2]]]
    assert res['seconds'] > 0 and res['fps'] == pytest.approx(4 / res['seconds'])
    hub = runner.message_hub
    assert hub.get_info('test/stream_frames') == 5
    assert hub.get_scalar('test/stream_fps').current() == pytest.approx(res['fps'])
    # a new test epoch starts from zero; a gap in the frames starts a new run
    stream(hook, runner, [[(3, 0)], [(3, 2)]])
    res = json.loads(out.read_text())
    assert res['frames'] == 2 and res['streams'] == [[[seq3, 0, 1], [seq3, 2, 1]]]


def test_only_warmup_gives_nan_fps_and_bad_arguments(tmp_path):
    hook = StreamThroughputHook(warmup_iters=3)
    runner = FakeRunner(2, 'stream-hook-warmup')
    stream(hook, runner, [[(1, 0)], [(1, 1)]])
    assert runner.message_hub.get_info('test/stream_frames') == 2
    assert math.isnan(runner.message_hub.get_scalar('test/stream_fps').current())
    with pytest.raises(ValueError, match='warmup_iters must be >= 0'):
        StreamThroughputHook(warmup_iters=-1)
    (tmp_path / 'dir.json').mkdir()
    with pytest.raises(ValueError, match='is a folder'):
        StreamThroughputHook(out_file=str(tmp_path / 'dir.json'))


# rank -> its test steps: rank 0 streams seq 0 (3 frames), rank 1 seqs 1 and 2 (2 + 2 frames)
RANK_BATCHES = {0: [[(0, 0)], [(0, 1)], [(0, 2)]],
                1: [[(1, 0)], [(1, 1)], [(2, 0)], [(2, 1)]]}


def _rank_main(rank, port, out_dir):
    try:
        torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                                             rank=rank, world_size=2)
        hook = StreamThroughputHook(out_file=f'{out_dir}/throughput.json')
        runner = FakeRunner(len(RANK_BATCHES[rank]), f'stream-hook-rank{rank}')
        stream(hook, runner, RANK_BATCHES[rank])
        with open(f'{out_dir}/hub{rank}.json', 'w') as f:
            hub = runner.message_hub
            json.dump(dict(frames=hub.get_info('test/stream_frames'),
                           seconds=float(hub.get_scalar('test/stream_seconds').current()),
                           fps=float(hub.get_scalar('test/stream_fps').current())), f)
        torch.distributed.destroy_process_group()
    except BaseException:
        traceback.print_exc()
        raise SystemExit(1)


def test_two_gloo_ranks_count_every_frame_once(tmp_path):
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    ctx = multiprocessing.get_context('fork')
    procs = [ctx.Process(target=_rank_main, args=(r, port, str(tmp_path))) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    res = json.loads((tmp_path / 'throughput.json').read_text())
    seq = [make_sample_idx(1, s, 0) // 1000 for s in range(3)]
    assert res['world_size'] == 2 and res['frames'] == 7 and res['frames_per_rank'] == [3, 4]
    assert res['timed_frames'] == 2 + 3
    assert res['streams'] == [[[seq[0], 0, 3]], [[seq[1], 0, 2], [seq[2], 0, 2]]]
    assert res['seconds'] == max(res['seconds_per_rank'])
    hubs = [json.loads((tmp_path / f'hub{r}.json').read_text()) for r in (0, 1)]
    assert hubs[0] == hubs[1] and hubs[0]['frames'] == 7  # every rank logs the same numbers

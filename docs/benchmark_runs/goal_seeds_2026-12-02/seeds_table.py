"""Held-out scores of the goal checkpoint on every seed measured, as a markdown table.

Run from this folder: ``python seeds_table.py``. Reads the OccSTQ json files of the runs listed
in ``SOURCES`` (all the goal config, ``prior_from_recipe_iter_1000-a5e9fc77.pth``) and prints,
per seed, OccSTQ / AQ / mIoU, the IoU of each class that has ground truth, and the mean IoU of
the classes the model predicts at all against that of all 14 scored classes.
"""
import json
from pathlib import Path

RUNS = Path(__file__).resolve().parent.parent
# seed -> (where it ran, scores json, json with per_class_iou when the first lacks it)
SOURCES = {
    2: ('CPU', 'piece_tracking_cpu_2026-12-02/cpu_eval_goal_config/occstq.json', None),
    7: ('CPU, pieces offline', 'piece_tracking_cpu_2026-12-02/scores/seed7_goal.json',
        'piece_tracking_cpu_2026-12-02/cpu_eval_seed7/occstq.json'),
    11: ('CPU', 'goal_seeds_2026-12-02/cpu_eval_seed11/occstq.json', None),
    13: ('H200', 'goal_seeds_2026-12-02/gpu_eval/seed13/occstq.json', None),
    17: ('H200', 'goal_seeds_2026-12-02/gpu_eval/seed17/occstq.json', None),
    19: ('H200', 'goal_seeds_2026-12-02/gpu_eval/seed19/occstq.json', None),
    23: ('H200', 'goal_seeds_2026-12-02/gpu_eval/seed23/occstq.json', None),
}
SHOWN = ('vehicle', 'pedestrian', 'cyclist', 'building', 'vegetation', 'road', 'walkable')


def load(seed):
    where, scores, classes = SOURCES[seed]
    data = json.loads((RUNS / scores).read_text())
    data = data.get('predicted_ids', data)
    iou_src = json.loads((RUNS / (classes or scores)).read_text())
    names = iou_src['class_names']
    return where, data, dict(zip(names, iou_src['per_class_iou'])), iou_src['settings']


def main():
    head = ['seed', 'run on', 'OccSTQ', 'AQ', 'mIoU', *SHOWN, 'mean IoU of the 7 learnt',
            'classes at IoU 0']
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    totals = []
    for seed in sorted(SOURCES):
        where, data, iou, settings = load(seed)
        ignored = {settings['class_names'][i] for i in settings['ignore_classes']}
        scored = {k: v for k, v in iou.items() if k not in ignored}
        zero = sorted(k for k, v in scored.items() if v == 0)
        learnt = [scored[k] for k in SHOWN]
        totals.append((data['OccSTQ'], data['AQ'], data['mIoU']))
        row = [str(seed), where, *(f'{100 * data[k]:.2f}' for k in ('OccSTQ', 'AQ', 'mIoU')),
               *(f'{100 * scored[k]:.1f}' for k in SHOWN),
               f'{100 * sum(learnt) / len(learnt):.1f}', f'{len(zero)} of {len(scored)}']
        print('| ' + ' | '.join(row) + ' |')
    n = len(totals)
    mean = [100 * sum(t[i] for t in totals) / n for i in range(3)]
    print(f'\nmean over {n} seeds: OccSTQ {mean[0]:.2f}, AQ {mean[1]:.2f}, mIoU {mean[2]:.2f}; '
          f'OccSTQ >= 25 on {sum(t[0] >= 0.25 for t in totals)}, '
          f'AQ >= 15 on {sum(t[1] >= 0.15 for t in totals)}')


if __name__ == '__main__':
    main()

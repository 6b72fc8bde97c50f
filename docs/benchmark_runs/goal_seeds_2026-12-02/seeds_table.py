"""Held-out scores of a trained model on every seed measured, as markdown tables.

Run from this folder: ``python seeds_table.py [MODEL]`` (default ``goal``) prints, per seed,
OccSTQ / AQ / mIoU, the IoU of each class that has ground truth, and the mean IoU of the
classes the model predicts at all against that of all 14 scored classes;
``python seeds_table.py --per-class A B`` prints every scored class's IoU of model A and B per
seed and their means. Models (:data:`MODELS`): ``goal`` (the goal config,
``prior_from_recipe_iter_1000-a5e9fc77.pth``) and ``stuff-pos-balance`` (the stuff-pos-balance
config, ``stuff_pos_balance_iter_750-76d32869.pth``, ../stuff_pos_balance_h200_2026-12-02/) and
``stuff-pos-balance+refill`` (the same checkpoint, the merge's refill at test time,
../merge_refill_cpu_2026-12-02/).
"""
import json
import sys
from pathlib import Path

RUNS = Path(__file__).resolve().parent.parent
# seed -> (where it ran, scores json, json with per_class_iou when the first lacks it)
GOAL = {
    2: ('CPU', 'piece_tracking_cpu_2026-12-02/cpu_eval_goal_config/occstq.json', None),
    7: ('CPU, pieces offline', 'piece_tracking_cpu_2026-12-02/scores/seed7_goal.json',
        'piece_tracking_cpu_2026-12-02/cpu_eval_seed7/occstq.json'),
    11: ('CPU', 'goal_seeds_2026-12-02/cpu_eval_seed11/occstq.json', None),
    13: ('H200', 'goal_seeds_2026-12-02/gpu_eval/seed13/occstq.json', None),
    17: ('H200', 'goal_seeds_2026-12-02/gpu_eval/seed17/occstq.json', None),
    19: ('H200', 'goal_seeds_2026-12-02/gpu_eval/seed19/occstq.json', None),
    23: ('H200', 'goal_seeds_2026-12-02/gpu_eval/seed23/occstq.json', None),
}
SPB_RUN = 'stuff_pos_balance_h200_2026-12-02/sweep/stage2_stuff-pos-balance_750/'
STUFF_POS_BALANCE = {
    2: ('H200', SPB_RUN + 'curve/iter_750/occstq.json', None),
    **{seed: ('H200', SPB_RUN + f'eval_iter_750_seed{seed}/occstq.json', None)
       for seed in (7, 11, 13, 17, 19, 23)},
}
REFILL_RUN = 'merge_refill_cpu_2026-12-02/'
STUFF_POS_BALANCE_REFILL = {seed: ('CPU', REFILL_RUN + f'seed{seed}_refill/occstq.json', None)
                            for seed in (2, 7, 11, 13)}
MODELS = {'goal': GOAL, 'stuff-pos-balance': STUFF_POS_BALANCE,
          'stuff-pos-balance+refill': STUFF_POS_BALANCE_REFILL}
SHOWN = ('vehicle', 'pedestrian', 'cyclist', 'building', 'vegetation', 'road', 'walkable')


def load(seed, model='goal'):
    where, scores, classes = MODELS[model][seed]
    data = json.loads((RUNS / scores).read_text())
    data = data.get('predicted_ids', data)
    iou_src = json.loads((RUNS / (classes or scores)).read_text())
    names = iou_src['class_names']
    return where, data, dict(zip(names, iou_src['per_class_iou'])), iou_src['settings']


def scored_classes(iou, settings):
    ignored = {settings['class_names'][i] for i in settings['ignore_classes']}
    return {k: v for k, v in iou.items() if k not in ignored}


def seed_table(model):
    head = ['seed', 'run on', 'OccSTQ', 'AQ', 'mIoU', *SHOWN, 'mean IoU of the 7 learnt',
            'classes at IoU 0']
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    totals = []
    for seed in sorted(MODELS[model]):
        where, data, iou, settings = load(seed, model)
        scored = scored_classes(iou, settings)
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


def per_class_table(first, second):
    """Per scored class (and OccSTQ / AQ / mIoU): ``first -> second`` per seed, and means."""
    seeds = sorted(set(MODELS[first]) & set(MODELS[second]))
    rows = {}
    for seed in seeds:
        for model in (first, second):
            _, data, iou, settings = load(seed, model)
            values = {**scored_classes(iou, settings),
                      **{k: data[k] for k in ('OccSTQ', 'AQ', 'mIoU')}}
            for name, value in values.items():
                rows.setdefault(name, {}).setdefault(model, []).append(100 * value)
    print(f'{first} -> {second}')
    print('| class | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | mean |')
    print('|' + '---|' * (len(seeds) + 2))
    for name, per_model in rows.items():
        a, b = per_model[first], per_model[second]
        cells = [f'{x:.1f} -> {y:.1f}' for x, y in zip(a, b)]
        cells.append(f'{sum(a) / len(a):.2f} -> {sum(b) / len(b):.2f}')
        print(f'| {name} | ' + ' | '.join(cells) + ' |')


def main(argv):
    if argv[:1] == ['--per-class']:
        per_class_table(*(argv[1:3] or ['goal', 'stuff-pos-balance']))
    else:
        seed_table(argv[0] if argv else 'goal')


if __name__ == '__main__':
    main(sys.argv[1:])

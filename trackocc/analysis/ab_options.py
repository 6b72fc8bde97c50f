"""The ``--ab-*`` options of ``tools/analysis_tools/benchmark.py``: its graph modes as A/B
rounds in one process (A: the mode as it is; B: with one change of the fast path, made by
:class:`~.ab_variant.ModuleVariant`), their arguments, checks, the B runs' model settings and
the run order."""
import argparse
import ast
from typing import Dict, List, Optional, Tuple

from .ab_variant import ab_labels
from .precision import split_mode

# the switches of the B runs, ``--ab-<field>``: (field, kind, help); kind 'names' takes module
# names, 'flag' is on or off, 'int' a number. The JSON's ``ab`` records them by field.
AB_SWITCHES = (
    ('graph_modules', 'names', 'A/B in one process: every graph mode runs --ab-rounds times as '
     'it is (A) and each time again with these children of the model also replayed as CUDA '
     'graphs (B, "<mode>+ab"); ab_summary in the JSON compares their steady frames (held-out '
     'mode)'),
    ('compile_modules', 'names', 'A/B: sub-modules (dotted paths) torch.compile d in the B '
     'runs only, before their graphs (e.g. query_interaction memory_bank)'),
    ('stable_outputs', 'names', 'A/B: graphed modules (of --graph-modules) that return stable '
     'outputs in the B runs only (see --graph-stable-outputs)'),
    ('fixed_track_rows', 'flag', 'A/B: model.fixed_track_rows in the B runs only (needs '
     '--query-budget)'),
    ('graph_rekey_warmup', 'int', 'A/B: --graph-rekey-warmup N for the graphed modules in the '
     'B runs only'),
    ('ungraph_modules', 'names', 'A/B: modules of --graph-modules run eagerly in the B runs '
     'only (e.g. panoptic_merge, when --ab-graph-modules track_settle graphs the module that '
     'calls it)'),
    ('float32_queries', 'flag', 'A/B: pts_bbox_head.float32_queries (the decoder and '
     'per-query branches in float32 under autocast) in the B runs only'),
    ('float32_masks', 'flag', 'A/B: pts_bbox_head.float32_masks (the mask logits accumulated '
     'and kept in float32 under autocast) in the B runs only'),
    ('graph_keep_memory', 'flag', 'A/B: --graph-keep-memory for the --graph-modules wrappers '
     'in the B runs only (their captures from then on)'),
    ('fixed_rig_inputs', 'flag', 'A/B: model.fixed_rig_inputs in the B runs only'),
    ('setting', 'pairs', 'A/B: model settings KEY=VALUE (a dotted attribute path of the '
     'model, a Python literal) in the B runs only, e.g. clip_image_batch=False; the only '
     'switch that also takes --train (training iterations as A/B rounds)'),
)
AB_FIELDS = tuple(field for field, *_ in AB_SWITCHES)
_KINDS = dict(names=dict(nargs='+', default=[], metavar='NAME'),
              flag=dict(action='store_true'),
              int=dict(type=int, default=None, metavar='N'),
              pairs=dict(nargs='+', default=[], metavar='KEY=VALUE'))


def add_ab_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--ab-*`` arguments (:data:`AB_SWITCHES`) and ``--ab-rounds``."""
    for field, kind, help_text in AB_SWITCHES:
        parser.add_argument('--ab-' + field.replace('_', '-'), help=help_text, **_KINDS[kind])
    parser.add_argument('--ab-rounds', type=int, default=2, metavar='N',
                        help='A/B rounds per graph mode (default 2: A, B, A, B)')


def check_ab_arguments(parser: argparse.ArgumentParser, args) -> None:
    """``parser.error`` for A/B rounds the run cannot take (training, a launcher, no graph
    mode, fewer than one round); the checks that pair an ``--ab-*`` switch with its every-run
    flag stay with those flags."""
    if not ab_on(args):
        return
    try:
        parse_settings(args.ab_setting)
    except ValueError as err:
        parser.error(str(err))
    if args.launcher != 'none':
        parser.error('--ab-* compares runs of one process (no --launcher)')
    if args.train:
        others = [f for f in AB_FIELDS if f != 'setting' and _given(getattr(args, f'ab_{f}'))]
        if others or not args.ab_setting:
            parser.error('--train takes --ab-setting only (training iterations as A/B '
                         f'rounds), got --ab-{(others or ["setting"])[0].replace("_", "-")}')
    elif not any(split_mode(m)[0] == 'graph' for m in args.mode):
        parser.error('--ab-* varies the graph modes: give one in --mode (e.g. graph-bf16)')
    if args.ab_rounds < 1:
        parser.error('--ab-rounds must be >= 1')


def parse_settings(pairs: List[str]) -> Dict[str, object]:
    """``['clip_image_batch=False', 'pts_bbox_head.float32_queries=True']`` -> a dict of
    dotted attribute paths and Python literals (ValueError naming a bad pair)."""
    settings: Dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition('=')
        if not sep or not key.strip():
            raise ValueError(f'--ab-setting takes KEY=VALUE, got {pair!r}')
        try:
            settings[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f'--ab-setting {pair!r}: the value is no Python literal '
                             '(True, 0.5, \'name\', ...)') from None
    return settings


def ab_on(args) -> bool:
    """Whether the graph modes run as A/B rounds: any ``--ab-*`` switch given (a list not
    empty, a flag set, ``--ab-graph-rekey-warmup`` given, 0 included)."""
    return any(_given(getattr(args, f'ab_{field}')) for field in AB_FIELDS)


def _given(value) -> bool:
    """An ``--ab-*`` value that was given: a list not empty, a flag set, a number (0 too)."""
    return value is not None and value is not False and value != []


def ab_record(args) -> Dict[str, object]:
    """The JSON's ``ab``: every switch of the B runs and the rounds."""
    return dict({field: getattr(args, f'ab_{field}') for field in AB_FIELDS},
                rounds=args.ab_rounds)


def ab_settings(args) -> Optional[Dict[str, object]]:
    """The model settings of the B runs (:class:`ModuleVariant` ``settings``): fixed track
    rows, the graphed modules' ``rekey_warmup`` and ``keep_memory``, the head's
    ``float32_queries`` and ``float32_masks``, fixed rig inputs."""
    settings: Dict[str, object] = {}
    if args.ab_fixed_track_rows:
        settings['fixed_track_rows'] = True
    if args.ab_graph_rekey_warmup is not None:
        settings.update({f'{name}.rekey_warmup': args.ab_graph_rekey_warmup
                         for name in args.graph_modules})
    if args.ab_graph_keep_memory:
        settings.update({f'{name}.keep_memory': True for name in args.graph_modules})
    if args.ab_float32_queries:
        settings['pts_bbox_head.float32_queries'] = True
    if args.ab_float32_masks:
        settings['pts_bbox_head.float32_masks'] = True
    if args.ab_fixed_rig_inputs:
        settings['fixed_rig_inputs'] = True
    settings.update(parse_settings(args.ab_setting))
    return settings or None


def run_plan(args) -> List[Tuple[str, str, bool]]:
    """``[(label, mode, variant on), ...]`` in run order: each ``--mode`` once, a graph mode
    (with ``--train`` every mode) as ``--ab-rounds`` A/B rounds with ``--ab-*``
    (:func:`ab_labels`)."""
    plan = []
    for mode in args.mode:
        if ab_on(args) and (args.train or split_mode(mode)[0] == 'graph'):
            plan += [(label, mode, on) for label, on in ab_labels(mode, args.ab_rounds)]
        else:
            plan.append((mode, mode, False))
    return plan

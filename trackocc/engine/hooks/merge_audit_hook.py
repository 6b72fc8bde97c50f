"""Why tracks are or are not in the panoptic output: a per-class audit of the merge over a
streamed test (``tools/test.py --merge-audit FILE``; docs/benchmark.md, "Learning check")."""
import json
from collections import Counter, defaultdict
from typing import Dict, Optional, Sequence

from mmengine.dist import all_gather_object, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from trackocc.registry import HOOKS

from ...utils.output_files import atomic_write_text, check_output_path

# how each merge fate (panoptic_merge.MERGE_FATES) of a track with an id reads in the audit
TRACK_FATES = dict(output='output', not_valid='dormant', low_score='low_score',
                   empty_mask='empty_mask', overlap='overlap')
# the merge fates a stuff query can have (every stuff query is valid)
STUFF_FATES = ('output', 'low_score', 'empty_mask', 'overlap')
# bins of an ``empty_mask`` track-frame's highest voxel mask probability (all below 0.5)
MAX_PROB_BINS = (0.1, 0.2, 0.3, 0.4, 0.5)


def max_prob_bin(prob: float) -> str:
    """The :data:`MAX_PROB_BINS` bin of a probability up to 0.5, e.g. ``'0.3-0.4'`` (a
    logit just below 0 may round to 0.5 in float32: the last bin includes it)."""
    low = 0.0
    for high in MAX_PROB_BINS:
        if prob < high or (high == MAX_PROB_BINS[-1] and prob == high):
            return f'{low:.1f}-{high:.1f}'
        low = high
    raise ValueError(f'max_prob_bin: {prob} is above {MAX_PROB_BINS[-1]}')


class MergeAudit:
    """Counts, per predicted class, what the merge did with every track that has an id.

    ``fates[class][fate]``: track-frames; ``fate`` is ``output`` (in the panoptic output),
    ``dormant`` (kept by the tracker but below its ``filter_score_thresh``, not output),
    ``low_score`` (best class free, or its score not above the merge's ``score_thresh``),
    ``empty_mask`` (no voxel with mask probability >= 0.5) or ``overlap`` (won less than
    ``overlap_thresh`` of its own mask: other predictions took it);
    ``voxels_end_as[class][other]``: for ``overlap`` track-frames, the class most of its
    own-mask voxels end as (free: nobody kept them);
    ``empty_max_prob[class][bin]``: for ``empty_mask`` track-frames, their highest voxel mask
    probability binned by :data:`MAX_PROB_BINS` (how far they are from the 0.5 threshold).

    Stuff queries are counted apart, per best class (``free`` included: queries that predict
    nothing): ``stuff_fates[class][fate]`` query-frames (:data:`STUFF_FATES`),
    ``stuff_max_score[class]`` the highest class score seen (a class whose queries all stay
    at or below the merge's ``score_thresh`` is never output) and
    ``stuff_voxels_end_as[class][other]`` and ``stuff_empty_max_prob[class][bin]`` as for
    tracks (a confident class with an empty mask: how far its mask is from 0.5).
    """

    def __init__(self, class_names: Optional[Sequence[str]] = None) -> None:
        self.class_names = list(class_names) if class_names else None
        self.frames = 0
        self.fates: Dict[int, Counter] = defaultdict(Counter)
        self.voxels_end_as: Dict[int, Counter] = defaultdict(Counter)
        self.empty_max_prob: Dict[int, Counter] = defaultdict(Counter)
        self.stuff_fates: Dict[int, Counter] = defaultdict(Counter)
        self.stuff_voxels_end_as: Dict[int, Counter] = defaultdict(Counter)
        self.stuff_max_score: Dict[int, float] = {}
        self.stuff_empty_max_prob: Dict[int, Counter] = defaultdict(Counter)

    def record(self, model, tracks, out) -> None:
        """Add one frame (a :meth:`TrackOcc.register_merge_observer` callback)."""
        # imported here: ``import trackocc.engine`` stays light (no model code)
        from ...models.heads.panoptic_merge import MERGE_FATES, merge_fates
        self.frames += 1
        result = merge_fates(**model.merge_inputs(tracks, out))
        num_tracks = len(tracks.obj_idxes)
        has_id = (tracks.obj_idxes >= 0).cpu()
        labels = result['labels'][:num_tracks].cpu()[has_id].tolist()
        fates = result['fate'][:num_tracks].cpu()[has_id].tolist()
        voxels_end_as = result['voxels_end_as'][:num_tracks].cpu()[has_id].tolist()
        max_probs = result['max_prob'][:num_tracks].cpu()[has_id].tolist()
        for label, fate, other, prob in zip(labels, fates, voxels_end_as, max_probs):
            name = TRACK_FATES[MERGE_FATES[fate]]
            self.fates[label][name] += 1
            if name == 'overlap':
                self.voxels_end_as[label][other] += 1
            elif name == 'empty_mask':
                self.empty_max_prob[label][max_prob_bin(prob)] += 1
        stuff = {k: result[k][num_tracks:].cpu().tolist()
                 for k in ('labels', 'fate', 'voxels_end_as', 'scores', 'max_prob')}
        for label, fate, other, score, prob in zip(stuff['labels'], stuff['fate'],
                                                   stuff['voxels_end_as'], stuff['scores'],
                                                   stuff['max_prob']):
            name = MERGE_FATES[fate]
            self.stuff_fates[label][name] += 1
            self.stuff_max_score[label] = max(score, self.stuff_max_score.get(label, 0.0))
            if name == 'overlap':
                self.stuff_voxels_end_as[label][other] += 1
            elif name == 'empty_mask':
                self.stuff_empty_max_prob[label][max_prob_bin(prob)] += 1

    def merge(self, others: Sequence['MergeAudit']) -> 'MergeAudit':
        """The sum of this audit and ``others`` (e.g. gathered from the ranks)."""
        total = MergeAudit(self.class_names)
        for audit in (self, *others):
            total.frames += audit.frames
            for table, part in ((total.fates, audit.fates),
                                (total.voxels_end_as, audit.voxels_end_as),
                                (total.empty_max_prob, audit.empty_max_prob),
                                (total.stuff_fates, audit.stuff_fates),
                                (total.stuff_voxels_end_as, audit.stuff_voxels_end_as),
                                (total.stuff_empty_max_prob, audit.stuff_empty_max_prob)):
                for label, counts in part.items():
                    table[label].update(counts)
            for label, score in audit.stuff_max_score.items():
                total.stuff_max_score[label] = max(score,
                                                   total.stuff_max_score.get(label, 0.0))
        return total

    def name(self, label: int) -> str:
        names = self.class_names
        return names[label] if names and 0 <= label < len(names) else str(label)

    def summary(self) -> dict:
        """JSON-ready: ``frames``; per class name the tracks' fate counts,
        ``voxels_end_as`` and ``empty_mask_max_prob`` (every bin, in order); the stuff
        queries' in ``stuff_per_class`` (fate counts, ``max_score``, ``voxels_end_as``,
        ``empty_mask_max_prob``)."""
        bins = [max_prob_bin(low) for low in (0.0, *MAX_PROB_BINS[:-1])]
        per_class = {}
        for label in sorted(self.fates):
            counts = {fate: self.fates[label][fate] for fate in TRACK_FATES.values()}
            per_class[self.name(label)] = dict(
                track_frames=sum(counts.values()), **counts,
                voxels_end_as={self.name(o): n
                               for o, n in self.voxels_end_as[label].most_common()},
                empty_mask_max_prob={b: self.empty_max_prob[label][b] for b in bins})
        stuff_per_class = {}
        for label in sorted(self.stuff_fates):
            counts = {fate: self.stuff_fates[label][fate] for fate in STUFF_FATES}
            stuff_per_class[self.name(label)] = dict(
                query_frames=sum(counts.values()), **counts,
                max_score=round(self.stuff_max_score[label], 4),
                voxels_end_as={self.name(o): n
                               for o, n in self.stuff_voxels_end_as[label].most_common()},
                empty_mask_max_prob={b: self.stuff_empty_max_prob[label][b] for b in bins})
        return dict(frames=self.frames, fates=list(TRACK_FATES.values()), per_class=per_class,
                    stuff_fates=list(STUFF_FATES), stuff_per_class=stuff_per_class)

    def table(self) -> str:
        """The summary as a text table (one row per predicted class)."""
        summary = self.summary()
        fates = summary['fates']
        lines = [f'merge audit over {summary["frames"]} frames: track-frames per predicted '
                 'class and what the merge did with them',
                 f'{"class":<18}{"tracks":>8}' + ''.join(f'{f:>12}' for f in fates)
                 + '  overlap: own voxels end as | empty_mask: max prob']
        for name, row in summary['per_class'].items():
            lost = ', '.join(f'{o} {n}' for o, n in row['voxels_end_as'].items())
            near = ', '.join(f'{b} {n}' for b, n in row['empty_mask_max_prob'].items() if n)
            lines.append(f'{name:<18}{row["track_frames"]:>8}'
                         + ''.join(f'{row[f]:>12}' for f in fates) + f'  {lost} | {near}')
        lines += ['stuff queries per predicted class (free: predicting nothing)',
                  f'{"class":<18}{"queries":>8}' + ''.join(f'{f:>12}' for f in STUFF_FATES)
                  + f'{"max score":>11}  overlap: own voxels end as | empty_mask: max prob']
        for name, row in summary['stuff_per_class'].items():
            lost = ', '.join(f'{o} {n}' for o, n in row['voxels_end_as'].items())
            near = ', '.join(f'{b} {n}' for b, n in row['empty_mask_max_prob'].items() if n)
            lines.append(f'{name:<18}{row["query_frames"]:>8}'
                         + ''.join(f'{row[f]:>12}' for f in STUFF_FATES)
                         + f'{row["max_score"]:>11.3f}  {lost} | {near}')
        return '\n'.join(lines)


@HOOKS.register_module()
class MergeAuditHook(Hook):
    """Audit the panoptic merge of a test loop (:class:`MergeAudit`), over all ranks.

    Observes the model's merge during the test loop only (``register_merge_observer``); at
    its end the ranks' audits are gathered, rank 0 logs the table and writes ``out_file``
    (JSON, atomically). The audit recomputes the merge's decisions once more per frame: a
    diagnostic, not for timing runs.

    Args:
        out_file (str, optional): JSON file of :meth:`MergeAudit.summary`.
    """

    priority = 'NORMAL'

    def __init__(self, out_file: Optional[str] = None) -> None:
        self.out_file = None if out_file is None else \
            check_output_path(out_file, 'MergeAuditHook out_file')
        self.audit: Optional[MergeAudit] = None
        self._handle = None

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'register_merge_observer'):
            raise TypeError(f'MergeAuditHook: {type(model).__name__} has no '
                            'register_merge_observer (a TrackOcc detector is needed)')
        names = (getattr(runner.test_dataloader.dataset, 'metainfo', None) or {}).get('classes')
        self.audit = MergeAudit(names)
        self._handle = model.register_merge_observer(
            lambda tracks, out: self.audit.record(model, tracks, out))

    def after_test(self, runner) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.audit is None:
            return
        parts = all_gather_object(self.audit)
        total = parts[0].merge(parts[1:])
        if is_main_process():
            print_log(total.table(), logger='current')
            if self.out_file:
                atomic_write_text(self.out_file, json.dumps(total.summary(), indent=2))
                print_log(f'MergeAuditHook: wrote {self.out_file}', logger='current')

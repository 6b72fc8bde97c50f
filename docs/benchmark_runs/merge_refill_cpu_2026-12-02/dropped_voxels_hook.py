"""Where the own-mask voxels of the thing tracks that the merge drops go (a diagnostic hook).

Per frame, for every live thing track the merge keeps back for overlap (class and score good,
but it wins less than ``overlap_thresh`` of its own mask), its own voxels (mask probability
>= 0.5) are counted by who won them: itself, a kept thing / stuff prediction (above or below
probability 0.5 there: kept, or left free) or another dropped prediction (left free). Used
from a config that inherits the model's and adds, with this folder on PYTHONPATH::

    custom_imports = dict(imports=['trackocc.engine', 'dropped_voxels_hook'],
                          allow_failed_imports=False)
    custom_hooks = [<the base config's EMAHook>,
                    dict(type='DroppedVoxelsHook', out_file='dropped_voxels.json')]
"""
import json
from collections import Counter

import torch
from mmengine.hooks import Hook

from trackocc.registry import HOOKS
from trackocc.utils.output_files import atomic_write_text


@HOOKS.register_module()
class DroppedVoxelsHook(Hook):

    def __init__(self, out_file):
        self.out_file = out_file
        self.counts = Counter()

    def before_test(self, runner):
        from trackocc.models.heads.panoptic_merge import _merge_decision
        model = runner.model

        def observe(tracks, out):
            kw = model.merge_inputs(tracks, out)
            blocks, d = _merge_decision(kw['cls_logits'], kw['mask_logits'], kw['segment_ids'],
                                        kw['free_class'], kw['score_thresh'],
                                        kw['overlap_thresh'], kw['valid'], None)
            if d is None:
                return
            q = blocks[0].shape[0]
            prob = torch.cat([b.float() for b in blocks]).sigmoid()
            keep = (d.labels != kw['free_class']) & (d.scores > kw['score_thresh']) & kw['valid']
            st = d.stats
            self.counts['frames'] += 1
            for t in torch.nonzero(keep[:q] & ~d.accepted[:q]).flatten().tolist():
                own = prob[t] >= 0.5
                if not own.any():
                    continue
                self.counts['rejected_tracks'] += 1
                self.counts['rejected_own_voxels'] += int(own.sum())
                lost = own & (st.winner != t)
                w = st.winner[lost]
                acc = d.accepted[w]
                thing = w < q
                inown = st.in_own[lost]
                for name, m in (('kept_by_accepted_thing', acc & inown & thing),
                                ('kept_by_accepted_stuff', acc & inown & ~thing),
                                ('free_won_by_accepted_thing_below_0.5', acc & ~inown & thing),
                                ('free_won_by_accepted_stuff_below_0.5', acc & ~inown & ~thing),
                                ('free_won_by_rejected_thing', ~acc & thing),
                                ('free_won_by_rejected_stuff', ~acc & ~thing)):
                    self.counts[name] += int(m.sum())
                self.counts['own_won_by_itself'] += int((own & (st.winner == t)).sum())
            self.counts['accepted_things'] += int(d.accepted[:q].sum())

        self.handle = model.register_merge_observer(observe)

    def after_test(self, runner):
        self.handle.remove()
        atomic_write_text(self.out_file, json.dumps(dict(self.counts), indent=1))
        print('DroppedVoxelsHook', dict(self.counts))

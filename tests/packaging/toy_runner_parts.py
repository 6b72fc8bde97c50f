"""A toy model/dataset registered in trackocc's registries, for runner-level packaging tests
(resume, mim). Imported through `custom_imports` by the configs the tests write."""
import torch
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from mmengine.hooks import Hook

from mmengine.evaluator import BaseMetric

from trackocc.registry import DATASETS, HOOKS, METRICS, MODELS


@HOOKS.register_module(force=True)
class RecordIterHook(Hook):
    """Appends the index of every training iteration it sees to ``RecordIterHook.seen``."""
    seen = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        RecordIterHook.seen.append(runner.iter)


@MODELS.register_module(force=True)
class ToyRegressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        pred = self.linear(inputs)
        if mode == 'loss':
            targets = torch.stack(targets) if isinstance(targets, list) else targets
            return dict(loss=((pred - targets) ** 2).mean())
        return pred


@DATASETS.register_module(force=True)
class ToyPairs(Dataset):
    metainfo = dict()

    def __init__(self, length=8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(length, 2, generator=g)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], targets=self.y[i])


@METRICS.register_module(force=True)
class ToyMSE(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.append(float(torch.stack(list(data_samples)).pow(2).mean()))

    def compute_metrics(self, results):
        return dict(mse=sum(results) / len(results))


def toy_config(work_dir, max_iters, resume=False):
    return dict(
        default_scope='trackocc',
        custom_imports=dict(imports=['trackocc.engine', 'toy_runner_parts'],
                            allow_failed_imports=False),
        model=dict(type='ToyRegressor'),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=dict(type='ToyPairs'), batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate'), num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2), clip_grad=dict(max_norm=35)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4)],
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='EMAHook', momentum=0.01), dict(type='RecordIterHook')],
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0),
        test_dataloader=dict(dataset=dict(type='ToyPairs'), batch_size=2,
                             sampler=dict(type='DefaultSampler', shuffle=False),
                             collate_fn=dict(type='default_collate'), num_workers=0),
        test_evaluator=dict(type='ToyMSE'),
        test_cfg=dict(type='TestLoop'),
        resume=resume,
    )

"""An optimizer constructor whose parameter-wise settings do not cost one group per parameter."""
from typing import List

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from torch.optim import Optimizer

from trackocc.registry import OPTIM_WRAPPER_CONSTRUCTORS


def merge_equal_groups(groups: List[dict]) -> List[dict]:
    """Parameter groups with equal settings (every key but ``params``) merged into one, in the
    order of their first appearance; parameters keep their order within each setting."""
    merged: List[dict] = []
    for group in groups:
        settings = {k: v for k, v in group.items() if k != 'params'}
        for target in merged:
            if {k: v for k, v in target.items() if k != 'params'} == settings:
                target['params'].extend(group['params'])
                break
        else:
            merged.append(dict(settings, params=list(group['params'])))
    return merged


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class MergedGroupsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """MMEngine's default constructor (``paramwise_cfg``: ``custom_keys``, ``lr_mult``,
    ``decay_mult``, norm / bias / DCN rules), with the per-parameter groups it makes merged
    by equal settings.

    With any ``paramwise_cfg`` the default gives every parameter a group of its own (the paper
    config: 393 groups for 2 settings). A foreach / fused optimizer launches its kernels per
    group, so on CUDA each AdamW step was ~10 launches per parameter; merged, the step covers
    all parameters of a setting with a few multi-tensor launches. The update is the same
    element-wise arithmetic on the same parameters with the same settings.

    An optimizer state saved with another grouping (e.g. a run started with
    ``DefaultOptimWrapperConstructor``) is refused with a message naming the fix: its
    parameter schedulers hold per-group values that cannot be mapped safely.
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        super().add_params(params, module, prefix, is_dcn_module)
        if not prefix:  # the top-level call, after the recursion over the children
            params[:] = merge_equal_groups(params)

    def __call__(self, model: nn.Module):
        optim_wrapper = super().__call__(model)
        if hasattr(optim_wrapper.optimizer, 'register_load_state_dict_pre_hook'):  # torch>=2.2
            optim_wrapper.optimizer.register_load_state_dict_pre_hook(_check_group_count)
        return optim_wrapper


def _check_group_count(optimizer: Optimizer, state_dict: dict) -> None:
    saved = len(state_dict.get('param_groups', []))
    if saved != len(optimizer.param_groups):
        raise ValueError(
            f'optimizer state has {saved} parameter groups, this optimizer '
            f'{len(optimizer.param_groups)} (MergedGroupsOptimWrapperConstructor merges the '
            'per-parameter groups by equal settings): to resume a run saved with one group per '
            'parameter, build it as it was, with '
            "--cfg-options optim_wrapper.constructor=DefaultOptimWrapperConstructor")

"""Checkpoints that survive a kill at any moment and resume exactly."""
import os.path as osp
from typing import List, Optional

from mmengine.dist import all_gather_object, get_dist_info, is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.runner import IterBasedTrainLoop

from trackocc.registry import HOOKS

from ..checkpoint_files import (atomic_write_text, remove_stale_temp_files,
                                resolve_resume_checkpoint)
from ..rng_state import get_rng_states, set_rng_states


class _RestoreRngAtFetch:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator`` while a resumed loop replays
    the ``skip`` batches already trained; the fetch of the next batch first restores the
    checkpoint's RNG states, then the loop gets its own iterator back."""

    def __init__(self, loop: IterBasedTrainLoop, states: dict, skip: int) -> None:
        self.loop, self.states, self.skip = loop, states, int(skip)
        self.inner = loop.dataloader_iterator
        self.restored = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.skip > 0:
            self.skip -= 1
            return next(self.inner)
        set_rng_states(self.states)
        self.restored = True
        self.loop.dataloader_iterator = self.inner
        return next(self.inner)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` with crash-safe files and exact resume.

    - Writing: checkpoints (through the ``atomic_local`` file backend, when they go to a local
      folder and no ``backend_args`` are given) and ``last_checkpoint`` are written to a hidden
      temporary file beside the target and renamed over it; outdated checkpoints
      (``max_keep_ckpts``) are removed only after the new one is complete. A kill at any moment
      leaves the previous checkpoint and ``last_checkpoint`` intact.
    - Choosing (``resume=True``): an explicit ``load_from`` must be a complete checkpoint (else
      an error names it); without one, the newest complete ``iter_N.pth``/``epoch_N.pth`` of
      the work dir (and ``out_dir``) is used, broken ones are skipped with a warning naming
      them, ``last_checkpoint`` is only a hint; with no checkpoint at all training starts at 0.
    - Exact resume: each checkpoint stores the RNG states of every rank
      (``meta['rng_states']``, see :mod:`trackocc.engine.rng_state`). ``IterBasedTrainLoop``
      replays the batches already trained through the data loader, which reproduces the
      sampler position and the data workers' RNG; the saved states are restored right before
      the first new batch is fetched (by-epoch loops: before the resumed epoch). Validation
      leaves the training RNG streams as it found them. The data order also needs the
      interrupted run's seed: ``tools/train.py --resume`` takes it from the checkpoint.

    Args: those of :class:`mmengine.hooks.CheckpointHook`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resume_states: Optional[dict] = None
        self._val_states: Optional[dict] = None
        self._restorer: Optional[_RestoreRngAtFetch] = None

    # -- choosing the checkpoint ---------------------------------------------------------
    def _checkpoint_dir(self, runner) -> str:
        """Where the checkpoints go (CheckpointHook.before_train's rule, before it runs)."""
        out_dir = self.out_dir if self.out_dir is not None else runner.work_dir
        if out_dir != runner.work_dir:
            out_dir = osp.join(out_dir, osp.basename(runner.work_dir.rstrip(osp.sep)))
        return out_dir

    def before_run(self, runner) -> None:
        # Runner.load_or_resume (next after this stage) reads these two attributes
        if not runner._resume:
            return
        ckpt = resolve_resume_checkpoint(runner._load_from, runner.work_dir,
                                         [self._checkpoint_dir(runner)])
        if ckpt is None:
            runner.logger.warning(f'resume: no checkpoint in {runner.work_dir}; training '
                                  'starts from the beginning')
            runner._resume = False
        else:
            runner.logger.info(f'resume: continuing from checkpoint {ckpt}')
            runner._load_from = ckpt

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not runner._resume:
            return
        meta = checkpoint.get('meta', {})
        seed = meta.get('seed')
        if seed is not None and seed != runner.seed:
            runner.logger.warning(
                f'resume: the checkpoint was trained with seed {seed}, this run was built with '
                f'seed {runner.seed}: data order and augmentations differ from an uninterrupted '
                'run (tools/train.py --resume takes the seed of the checkpoint)')
        states = meta.get('rng_states')
        rank, world_size = get_dist_info()
        if states is None:
            runner.logger.warning('resume: the checkpoint holds no RNG states; random draws '
                                  'after the resume differ from an uninterrupted run')
        elif len(states) != world_size:
            runner.logger.warning(f'resume: the checkpoint holds the RNG states of '
                                  f'{len(states)} processes, this run has {world_size}; they '
                                  'are not restored')
        else:
            self._resume_states = states[rank]

    # -- restoring the RNG states ----------------------------------------------------------
    def before_train_epoch(self, runner) -> None:
        if self._resume_states is None:
            return
        states, self._resume_states = self._resume_states, None
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop) and loop.iter > 0:
            # IterBasedTrainLoop.run replays `loop.iter` batches right after this stage
            self._restorer = _RestoreRngAtFetch(loop, states, skip=loop.iter)
            loop.dataloader_iterator = self._restorer
        else:
            set_rng_states(states)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._restorer is not None:
            if not self._restorer.restored:
                raise RuntimeError(
                    f'{type(self).__name__}: the resumed train loop did not replay the '
                    f'{runner.iter} batches already trained before iteration {runner.iter + 1}; '
                    'the RNG states of the checkpoint could not be restored at the right '
                    'moment (this MMEngine version resumes IterBasedTrainLoop differently)')
            self._restorer = None

    def before_val(self, runner) -> None:
        self._val_states = get_rng_states()

    def after_val(self, runner) -> None:
        if self._val_states is not None:
            set_rng_states(self._val_states)
            self._val_states = None

    # -- writing ---------------------------------------------------------------------------
    def before_train(self, runner) -> None:
        if self.backend_args is None and self.file_client_args is None and isinstance(
                get_file_backend(self._checkpoint_dir(runner)), LocalBackend):
            self.backend_args = dict(backend='atomic_local')
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            for folder in dict.fromkeys([self.out_dir, runner.work_dir]):
                for path in remove_stale_temp_files(folder):
                    runner.logger.info(f'removed {path}, left by an interrupted save')

    def _rng_states_of_all_ranks(self) -> List[dict]:
        """The training RNG states of every rank (during validation: those before it)."""
        states = self._val_states if self._val_states is not None else get_rng_states()
        return all_gather_object(states)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        # CheckpointHook's bookkeeping, but outdated files are removed after the new one is
        # complete, and last_checkpoint is replaced atomically
        meta = dict(meta, rng_states=self._rng_states_of_all_ranks())
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in outdated:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed are folders
                self.file_backend.rmtree(path)

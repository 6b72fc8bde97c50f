"""Query interaction module (MOTR QIM): select active tracks, update their queries, and
append them to the fresh (detection) queries of the next frame."""
from typing import Optional

import torch
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmengine.model import BaseModule
from torch import nn

from trackocc.registry import MODELS
from trackocc.utils.device_constants import to_device_async
from .track_instances import TrackInstances, cat_tracks


@MODELS.register_module()
class QueryInteractionModule(BaseModule):
    """Track query update with random drop and false-positive insertion (training).

    The decoder output ``e`` of each active track attends to the other active tracks
    (query/key ``pos + e``, value ``e``), passes an FFN, and updates the content half (and
    optionally the positional half) of the track's query with residual FFNs + LayerNorm.

    Args:
        embed_dims (int): E, query content/positional size (query is 2E).
        num_heads (int): heads of the track self-attention. Defaults to 8.
        feedforward_channels (int): hidden size of the FFNs. Defaults to E.
        dropout (float): dropout of attention and FFNs. Defaults to 0.
        random_drop (float): probability to drop an active track when training (0.1).
        fp_ratio (float): per active track, probability to insert the highest-scoring
            inactive query as a false-positive track when training (0.3).
        update_query_pos (bool): also update the positional half. Defaults to True.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 feedforward_channels: int = None,
                 dropout: float = 0.0,
                 random_drop: float = 0.1,
                 fp_ratio: float = 0.3,
                 update_query_pos: bool = True,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        if not (0 <= random_drop < 1 and 0 <= fp_ratio <= 1):
            raise ValueError(f'random_drop must be in [0, 1) and fp_ratio in [0, 1], '
                             f'got {random_drop} and {fp_ratio}')
        hidden = feedforward_channels or embed_dims
        self.embed_dims = embed_dims
        self.random_drop = random_drop
        self.fp_ratio = fp_ratio
        self.update_query_pos = update_query_pos
        drop = dict(type='Dropout', drop_prob=dropout)
        self.self_attn = MultiheadAttention(
            embed_dims, num_heads, attn_drop=dropout, dropout_layer=drop, batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dims)
        # ReLU out of place: in place on a Linear's output (a view) autograd would rebase
        # the view in training (CopySlices); the same values
        ffn = dict(feedforward_channels=hidden, ffn_drop=dropout, dropout_layer=drop,
                   act_cfg=dict(type='ReLU', inplace=False))
        self.ffn = FFN(embed_dims, **ffn)
        self.norm2 = nn.LayerNorm(embed_dims)
        if update_query_pos:
            self.ffn_pos = FFN(embed_dims, **ffn)
            self.norm_pos = nn.LayerNorm(embed_dims)
        self.ffn_feat = FFN(embed_dims, **ffn)
        self.norm_feat = nn.LayerNorm(embed_dims)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    # -- selection ---------------------------------------------------------------------
    def _random_drop(self, active: TrackInstances) -> TrackInstances:
        if self.random_drop <= 0 or len(active) == 0:
            return active
        # drawn on the host (CPU generator, as on a CPU run before): no device
        # synchronisation; the kept rows go to the device in a non-blocking copy
        keep = torch.nonzero(torch.rand(len(active)) > self.random_drop, as_tuple=True)[0]
        if len(keep) == 0:
            return active
        return active[to_device_async(keep, active.scores.device, torch.long)]

    def _add_false_positives(self, inactive: TrackInstances,
                             active: TrackInstances) -> TrackInstances:
        if self.fp_ratio <= 0 or len(active) == 0:
            return active
        # drawn on the host (CPU generator): no device synchronisation
        num_fp = int(torch.bernoulli(torch.full((len(active), ), self.fp_ratio)).sum())
        if len(inactive) == 0 or num_fp == 0:
            return active
        if num_fp < len(inactive):
            inactive = inactive[torch.argsort(inactive.scores)[-num_fp:]]
        return cat_tracks(active, inactive)

    def select_active_tracks(self, tracks: TrackInstances,
                             active_index: Optional[torch.Tensor] = None,
                             inactive_index: Optional[torch.Tensor] = None) -> TrackInstances:
        """Tracks carried to the next frame: ``obj_idxes >= 0`` (+ drop / FP in training).

        ``active_index`` (n,) long: the positions of the active tracks when the caller knows
        them (selecting by index does not synchronise with the device; a bool mask does);
        ``inactive_index``: the other positions, ascending (training's false positives come
        from them), when known too."""
        if active_index is None:
            # one host synchronisation (the number of active tracks); a stable sort puts
            # the active rows, in order, before the inactive ones, also in order
            inactive = tracks.obj_idxes < 0
            num_active = int((~inactive).sum())
            order = torch.argsort(inactive.to(torch.uint8), stable=True)
            active_index, inactive_index = order[:num_active], order[num_active:]
        active = tracks[active_index]
        if self.training:
            if inactive_index is None:
                inactive_index = torch.nonzero(tracks.obj_idxes < 0, as_tuple=True)[0]
            active = self._random_drop(active)
            active = self._add_false_positives(tracks[inactive_index], active)
        return active

    # -- update ------------------------------------------------------------------------
    def update_track_queries(self, tracks: TrackInstances,
                             filler: Optional[torch.Tensor] = None) -> TrackInstances:
        """New ``query`` (Q, 2E) from ``output_embedding`` (Q, E) of the active tracks.

        ``filler`` (Q,) bool: rows that are no track (fixed row count, see
        ``TrackOcc.fixed_track_rows``): the tracks do not attend to them and they keep their
        query, so the tracks' new queries are those of the tracks alone."""
        if len(tracks) == 0:
            return tracks
        dim = self.embed_dims
        pos, feat = tracks.query[:, :dim], tracks.query[:, dim:]
        embed = tracks.output_embedding[None]  # (1, Q, E): tracks attend to each other
        tgt = self.norm1(self.self_attn(
            embed, embed, embed, query_pos=pos[None], key_pos=pos[None],
            key_padding_mask=None if filler is None else filler[None])[0])
        tgt = self.norm2(self.ffn(tgt))
        new_pos = self.norm_pos(self.ffn_pos(tgt, identity=pos)) if self.update_query_pos \
            else pos
        new_feat = self.norm_feat(self.ffn_feat(tgt, identity=feat))
        query = torch.cat([new_pos, new_feat], dim=-1)
        if filler is not None:  # a filler row attends to nothing when no row is a track
            query = torch.where(filler[:, None], tracks.query, query.to(tracks.query.dtype))
        tracks.query = query
        return tracks

    def forward(self, tracks: TrackInstances, init_tracks: TrackInstances,
                active_index: Optional[torch.Tensor] = None,
                with_filler: bool = False,
                inactive_index: Optional[torch.Tensor] = None) -> TrackInstances:
        """Queries of the next frame: ``init_tracks`` followed by the updated active tracks
        (``active_index``, ``inactive_index``: see :meth:`select_active_tracks`).
        ``with_filler`` (inference): ``active_index`` also selects rows that are no track
        (``obj_idxes < 0``) after the active ones, to keep the row count fixed; they are
        carried as filler."""
        carried = self.select_active_tracks(tracks, active_index, inactive_index)
        filler = carried.obj_idxes < 0 if with_filler else None
        return cat_tracks(init_tracks, self.update_track_queries(carried, filler))

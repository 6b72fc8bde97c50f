"""Memory bank of past track embeddings with temporal attention (MOTR)."""
import torch
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmengine.model import BaseModule
from torch import Tensor, nn

from trackocc.registry import MODELS
from .track_instances import TrackInstances


@MODELS.register_module()
class MemoryBank(BaseModule):
    """Each track attends to its own last ``memory_len`` saved embeddings, then the
    current embedding is saved (projected) into the bank.

    Saving: in training every track with score > 0 saves each frame; at inference a
    track saves when its score exceeds ``save_score_thresh`` and its ``save_period``
    countdown is 0, which then restarts at ``save_period``.

    At inference both steps run over all tracks with fixed shapes (no host-device
    synchronisation) and keep the results of the tracks concerned.

    Args:
        embed_dims (int): E.
        memory_len (int): L, saved embeddings per track. Defaults to 4.
        num_heads (int): heads of the temporal attention. Defaults to 8.
        feedforward_channels (int): FFN hidden size. Defaults to E.
        save_score_thresh (float): inference save threshold. Defaults to 0.
        save_period (int): inference frames between saves. Defaults to 3.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 memory_len: int = 4,
                 num_heads: int = 8,
                 feedforward_channels: int = None,
                 save_score_thresh: float = 0.0,
                 save_period: int = 3,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        if memory_len < 1:
            raise ValueError(f'memory_len must be >= 1, got {memory_len}')
        self.embed_dims = embed_dims
        self.memory_len = memory_len
        self.save_score_thresh = save_score_thresh
        self.save_period = save_period
        self.save_proj = nn.Linear(embed_dims, embed_dims)
        self.temporal_attn = MultiheadAttention(embed_dims, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.ffn = FFN(embed_dims, feedforward_channels or embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def temporal_attention(self, tracks: TrackInstances) -> TrackInstances:
        """Refine ``output_embedding`` of tracks whose newest memory slot is filled."""
        if len(tracks) == 0:
            return tracks
        if not self.training:
            return self._temporal_attention_all(tracks)
        valid = ~tracks.mem_padding_mask[:, -1]
        if not valid.any():
            return tracks
        embed = self._attend(tracks.output_embedding[valid], tracks.mem_bank[valid],
                             tracks.mem_padding_mask[valid])
        out = tracks.output_embedding.clone()
        out[valid] = embed
        tracks.output_embedding = out
        return tracks

    def _temporal_attention_all(self, tracks: TrackInstances) -> TrackInstances:
        """:meth:`temporal_attention` without host-device synchronisation (inference): all Q
        tracks attend, those without a filled newest slot keep their embedding."""
        pad = tracks.mem_padding_mask  # (Q, L) bool
        valid = ~pad[:, -1]  # (Q,)
        # rows without memory attend to every slot instead of none (no NaN); discarded below
        embed = self._attend(tracks.output_embedding, tracks.mem_bank, pad & valid[:, None])
        old = tracks.output_embedding
        tracks.output_embedding = torch.where(valid[:, None], embed.to(old.dtype), old)
        return tracks

    def _attend(self, embed: Tensor, memory: Tensor, padding_mask: Tensor) -> Tensor:
        """Each of n tracks attends to its own memory.

        Args:
            embed (Tensor): (n, E) current embeddings.
            memory (Tensor): (n, L, E) saved embeddings.
            padding_mask (Tensor): (n, L) bool, True for empty slots.

        Returns:
            Tensor: (n, E) refined embeddings.
        """
        # a batch of n one-query attentions: (n, 1, E) over (n, L, E)
        embed = self.norm1(self.temporal_attn(embed[:, None], memory, memory,
                                              key_padding_mask=padding_mask))
        return self.norm2(self.ffn(embed))[:, 0]

    def save(self, tracks: TrackInstances) -> TrackInstances:
        """Push the (projected) current embedding into the bank of the saving tracks."""
        if len(tracks) == 0:
            return tracks
        if not self.training:
            return self._save_all(tracks)
        saving = tracks.scores > 0
        if not saving.any():
            return tracks
        new = self.save_proj(tracks.output_embedding[saving])[:, None]
        bank = tracks.mem_bank.clone()
        bank[saving] = torch.cat([bank[saving][:, 1:], new], dim=1)
        tracks.mem_bank = bank
        pad = tracks.mem_padding_mask.clone()
        pad[saving] = torch.cat([pad[saving][:, 1:], pad.new_zeros(int(saving.sum()), 1)], dim=1)
        tracks.mem_padding_mask = pad
        return tracks

    def _save_all(self, tracks: TrackInstances) -> TrackInstances:
        """:meth:`save` at inference without host-device synchronisation: the new bank of
        every track is computed and kept where the track saves."""
        period = tracks.save_period  # (Q,) float, updated in place
        saving = (period == 0) & (tracks.scores > self.save_score_thresh)  # (Q,)
        period.sub_((period > 0).to(period.dtype))
        period.masked_fill_(saving, self.save_period)
        bank, pad = tracks.mem_bank, tracks.mem_padding_mask  # (Q, L, E), (Q, L)
        new = self.save_proj(tracks.output_embedding)[:, None]  # (Q, 1, E)
        rolled = torch.cat([bank[:, 1:], new], dim=1).to(bank.dtype)
        tracks.mem_bank = torch.where(saving[:, None, None], rolled, bank)
        rolled_pad = torch.cat([pad[:, 1:], pad.new_zeros(len(pad), 1)], dim=1)
        tracks.mem_padding_mask = torch.where(saving[:, None], rolled_pad, pad)
        return tracks

    def forward(self, tracks: TrackInstances) -> TrackInstances:
        return self.save(self.temporal_attention(tracks))

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

    Which tracks take part is the same rule in training and inference for the attention
    (tracks whose newest slot is filled) and the original's mode-dependent rule for saving
    (:meth:`_saving`): in training every track with score > 0 saves each frame; at inference a
    track saves when its score exceeds ``save_score_thresh`` and its ``save_period``
    countdown is 0, which then restarts at ``save_period``.

    The maths is one path (:meth:`_attend`, :meth:`_push`); only the rows it runs on differ:

    - training runs it on the selected rows only (one host synchronisation each for the
      attending and the saving rows: their indices). That keeps the original's autograd
      graph: when no row qualifies the attention / projection take no part, so their
      parameters get no gradient and the optimizer leaves them alone (AdamW would still
      decay them on a zero gradient); and it keeps the original's numbers bit for bit.
    - inference runs it on all Q rows with fixed shapes and keeps the results of the selected
      rows (``torch.where``): no host-device synchronisation. The kept rows equal the
      training computation up to the last bits of the matrix products (a different row
      count), tests/models/test_sync_free_inference.py checks it.

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
        # ReLU out of place: in place on a Linear's output (a view) autograd would rebase
        # the view in training (CopySlices); the same values
        self.ffn = FFN(embed_dims, feedforward_channels or embed_dims,
                       act_cfg=dict(type='ReLU', inplace=False))
        self.norm2 = nn.LayerNorm(embed_dims)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def temporal_attention(self, tracks: TrackInstances) -> TrackInstances:
        """Refine ``output_embedding`` of tracks whose newest memory slot is filled."""
        if len(tracks) == 0:
            return tracks
        pad = tracks.mem_padding_mask  # (Q, L) bool
        valid = ~pad[:, -1]  # (Q,)
        old = tracks.output_embedding
        if self.training:
            rows = torch.nonzero(valid, as_tuple=True)[0]  # the one host synchronisation
            if len(rows) == 0:
                return tracks
            out = old.clone()
            out[rows] = self._attend(old[rows], tracks.mem_bank[rows], pad[rows])
        else:
            # rows without memory attend to every slot instead of none (no NaN); not kept
            embed = self._attend(old, tracks.mem_bank, pad & valid[:, None])
            out = torch.where(valid[:, None], embed.to(old.dtype), old)
        tracks.output_embedding = out
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

    def _saving(self, tracks: TrackInstances) -> Tensor:
        """(Q,) bool: the tracks that save this frame; at inference also counts the
        ``save_period`` countdown down (in place) and restarts it for the saving tracks."""
        if self.training:
            return tracks.scores > 0
        period = tracks.save_period  # (Q,) float
        saving = (period == 0) & (tracks.scores > self.save_score_thresh)
        period.sub_((period > 0).to(period.dtype))
        period.masked_fill_(saving, self.save_period)
        return saving

    def _push(self, bank: Tensor, pad: Tensor, embed: Tensor):
        """Push the projection of ``embed`` (n, E) as the newest slot of ``bank`` (n, L, E)
        (the oldest slot drops out); returns the new bank and padding mask (n, L)."""
        new = self.save_proj(embed)[:, None]  # (n, 1, E)
        bank = torch.cat([bank[:, 1:], new], dim=1).to(bank.dtype)
        pad = torch.cat([pad[:, 1:], pad.new_zeros(len(pad), 1)], dim=1)
        return bank, pad

    def save(self, tracks: TrackInstances) -> TrackInstances:
        """Push the (projected) current embedding into the bank of the saving tracks."""
        if len(tracks) == 0:
            return tracks
        saving = self._saving(tracks)
        bank, pad = tracks.mem_bank, tracks.mem_padding_mask  # (Q, L, E), (Q, L)
        if self.training:
            rows = torch.nonzero(saving, as_tuple=True)[0]  # the one host synchronisation
            if len(rows) == 0:
                return tracks
            new_bank, new_pad = bank.clone(), pad.clone()
            new_bank[rows], new_pad[rows] = self._push(
                bank[rows], pad[rows], tracks.output_embedding[rows])
        else:
            rolled, rolled_pad = self._push(bank, pad, tracks.output_embedding)
            new_bank = torch.where(saving[:, None, None], rolled, bank)
            new_pad = torch.where(saving[:, None], rolled_pad, pad)
        tracks.mem_bank, tracks.mem_padding_mask = new_bank, new_pad
        return tracks

    def forward(self, tracks: TrackInstances) -> TrackInstances:
        return self.save(self.temporal_attention(tracks))

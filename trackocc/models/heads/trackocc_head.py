"""TrackOcc head: 4D panoptic queries (thing track queries + stuff queries) decoded against
the compact occupancy volume into class logits, voxel masks, reference points / velocities,
plus the dense semantic logits of the class-weighted semantic loss."""
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from trackocc.registry import MODELS
from trackocc.structures import GRID_SHAPE, PC_RANGE
from ..layers.mask_center_prior import MaskCenterPrior
from ..trackers.ego_motion import denormalize_points
from trackocc.utils.batch_samples import batch_samples
from trackocc.utils.device_constants import device_constant


def mask_logits(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
    """Per-query mask logits: (B, Q, C) x (B, C, X, Y, Z) -> (B, Q, X, Y, Z).

    Eager: ``torch.einsum``, which runs a batched matmul on any memory format of the
    features. Traced (ONNX export): an explicit MatMul over the flattened grid, because
    onnxruntime's CPU Einsum kernel took ~10 s of a ~30 s paper-config frame for this
    product, its MatMul a fraction of that (docs/deployment.md)."""
    if torch.jit.is_tracing():
        B, C = mask_features.shape[:2]
        flat = torch.matmul(mask_embed, mask_features.reshape(B, C, -1))  # (B, Q, XYZ)
        return flat.view(*mask_embed.shape[:2], *mask_features.shape[2:])
    return torch.einsum('bqc,bcxyz->bqxyz', mask_embed, mask_features)


def float32_mask_logits(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
    """:func:`mask_logits` under autocast, accumulated and written in float32:
    (B, Q, C) x (B, C, X, Y, Z) -> float32 (B, Q, X, Y, Z). On CUDA the product of the
    autocast-dtype operands (``torch.bmm(out_dtype=float32)``: no float32 copy of the
    features, the logits without their rounding to the autocast dtype); on other devices
    from float32 copies of the operands."""
    device_type = mask_features.device.type
    B, C = mask_features.shape[:2]
    dtype = torch.get_autocast_dtype(device_type)  # the caller's, before autocast is off
    with torch.autocast(device_type, enabled=False):
        if device_type == 'cuda':
            flat = torch.bmm(mask_embed.to(dtype), mask_features.to(dtype).reshape(B, C, -1),
                             out_dtype=torch.float32)
        else:
            flat = torch.bmm(mask_embed.float(), mask_features.float().reshape(B, C, -1))
    return flat.view(*mask_embed.shape[:2], *mask_features.shape[2:])


@MODELS.register_module()
class TrackOccHead(BaseModule):
    """Mask-classification head of TrackOcc.

    Thing queries come from the detector (fresh + carried track queries, Q_t varies per
    frame, or padded to a fixed budget with ``thing_valid`` marking the real rows, see
    ``TrackOcc.query_budget``); ``num_stuff_queries`` stuff queries are learned here and get
    their reference points from their positional half. Both go through :class:`MaskDecoder`; every
    decoder layer's output gives class logits (sigmoid, C classes, free = C - 1) and voxel
    masks (dot product of a mask embedding with ``mask_features``). Thing queries also get
    their refined reference point in metres and a velocity (``velo_branches``).

    Args:
        num_classes (int): C (16).
        thing_classes (list[int]): classes of tracked instances ([1, 2, 4]).
        embed_dims (int): E, query size (queries are 2E: positional | content).
        in_channels (int): channels of ``compact_occ`` (projected to E by a 1x1x1 conv when
            different). Defaults to E.
        mask_channels (int): channels of ``mask_features``. Defaults to E.
        num_stuff_queries (int): Q_s (50).
        occ_size (list[int]): full-resolution grid (X, Y, Z) of the masks (200, 200, 16).
        pc_range (list[float]): grid range in metres.
        decoder (dict): :class:`MaskDecoder` config (embed_dims is filled in).
        with_velo (bool): predict a 3D velocity per thing query.
        sem_hidden_channels (int): hidden size of the semantic branch (64); 0 disables it.
        loss_sem (dict, optional): ``mmdet.CrossEntropyLoss`` with ``class_weight``; it is
            averaged with the class weights of the targets (torch weighted-mean semantics).
            The class weights are kept in the ``sem_class_weight`` buffer and given to the
            loss as per-voxel weights.
        mask_center_prior (dict, optional): not the original's (an ablation): a
            :class:`MaskCenterPrior` (``init_sigma``, ``min_sigma``, ``max_penalty``,
            ``learn_sigma``) adds a bounded Gaussian log-prior around each thing query's
            predicted centre to its mask logits. None: off.
        loss_stuff (dict): :class:`StuffMaskLoss` config.
        float32_queries (bool): under autocast, run the decoder and the per-query branches
            (class, mask embedding, centre, velocity) in float32 and leave only the
            voxel-sized work (mask logits, centre prior, semantic branch) to the autocast
            dtype: the scores that decide a track's birth without bf16 rounding of the query
            features, for a small share of the head's FLOPs (inference option of the fast
            path; no effect without autocast). Default False.
        float32_masks (bool): under autocast, the mask logits accumulated and kept in
            float32 (:func:`float32_mask_logits`): a voxel's class and track decided by
            the merge without the logits' rounding to the autocast dtype (inference option
            of the fast path; no effect without autocast). Default False.
    """

    def __init__(self,
                 num_classes: int = 16,
                 thing_classes: Sequence[int] = (1, 2, 4),
                 embed_dims: int = 256,
                 in_channels: Optional[int] = None,
                 mask_channels: Optional[int] = None,
                 num_stuff_queries: int = 50,
                 occ_size: Sequence[int] = GRID_SHAPE,
                 pc_range: Sequence[float] = PC_RANGE,
                 decoder: dict = dict(type='MaskDecoder', num_layers=1),
                 with_velo: bool = True,
                 sem_hidden_channels: int = 64,
                 loss_sem: Optional[dict] = None,
                 loss_stuff: dict = dict(type='StuffMaskLoss'),
                 mask_center_prior: Optional[dict] = None,
                 float32_queries: bool = False,
                 float32_masks: bool = False,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        if any(not 0 <= c < num_classes - 1 for c in thing_classes):
            raise ValueError(f'thing_classes {list(thing_classes)} must lie in [0, '
                             f'{num_classes - 1}) (class {num_classes - 1} is free)')
        if len(occ_size) != 3 or len(pc_range) != 6:
            raise ValueError(f'occ_size must be (X, Y, Z) and pc_range 6 numbers, got '
                             f'{occ_size} and {pc_range}')
        self.num_classes = num_classes
        self.float32_queries = float32_queries
        self.float32_masks = float32_masks
        self.thing_classes = list(thing_classes)
        self.embed_dims = embed_dims
        self.num_stuff_queries = num_stuff_queries
        self.occ_size = tuple(int(v) for v in occ_size)
        self.pc_range = [float(v) for v in pc_range]
        self.with_velo = with_velo
        in_channels = in_channels or embed_dims
        mask_channels = mask_channels or embed_dims
        self.mask_channels = mask_channels

        self.value_proj = nn.Identity() if in_channels == embed_dims else nn.Conv3d(
            in_channels, embed_dims, kernel_size=1)
        self.stuff_embedding = nn.Embedding(num_stuff_queries, 2 * embed_dims)
        self.stuff_ref_predictor = nn.Linear(embed_dims, 3)
        self.decoder = MODELS.build(dict(decoder, embed_dims=embed_dims))
        num_layers = self.decoder.num_layers
        self.cls_embed = nn.Linear(embed_dims, num_classes)
        # ReLU out of place: in place on a Linear's output (a view) autograd would rebase
        # the view in training (CopySlices); the same values
        self.mask_embed = nn.Sequential(
            nn.Linear(embed_dims, embed_dims), nn.ReLU(),
            nn.Linear(embed_dims, embed_dims), nn.ReLU(),
            nn.Linear(embed_dims, mask_channels))
        self.velo_branches = nn.ModuleList(
            [nn.Linear(embed_dims, 3) for _ in range(num_layers)]) if with_velo else None
        self.mask_center_prior = None if mask_center_prior is None else MaskCenterPrior(
            embed_dims=embed_dims, occ_size=self.occ_size, pc_range=self.pc_range,
            **mask_center_prior)
        self.sem_head = nn.Sequential(
            nn.Linear(mask_channels, sem_hidden_channels), nn.Softplus(),
            nn.Linear(sem_hidden_channels, num_classes)) if sem_hidden_channels else None

        self.loss_sem = None
        if loss_sem is not None:
            if self.sem_head is None:
                raise ValueError('loss_sem needs the semantic branch (sem_hidden_channels > 0)')
            class_weight = loss_sem.get('class_weight')
            if class_weight is None or len(class_weight) != num_classes:
                raise ValueError(f'loss_sem needs class_weight with {num_classes} values, got '
                                 f'{class_weight}')
            # the class weights are applied as per-voxel weights from this buffer (mmdet would
            # copy the list to the device at every call)
            self.loss_sem = MODELS.build(dict(loss_sem, class_weight=None))
            self.register_buffer('sem_class_weight',
                                 torch.tensor(class_weight, dtype=torch.float32),
                                 persistent=False)
        self.loss_stuff = MODELS.build(
            dict(loss_stuff, num_classes=num_classes, thing_classes=self.thing_classes))

    def init_weights(self) -> None:
        """Xavier-uniform for the head's matrices, xavier-normal inside the decoder layers,
        as the reference. The decoder's reference-point refinement branches
        (``decoder.reg_branches``) were head modules in the reference (handed to its
        decoder as an argument), so they get xavier-uniform as well."""
        super().init_weights()
        reg_branches = getattr(self.decoder, 'reg_branches', None)
        head_owned = {id(p) for p in reg_branches.parameters()} if reg_branches else set()
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for p in self.decoder.parameters():
            if p.dim() > 1 and id(p) not in head_owned:
                nn.init.xavier_normal_(p)
        nn.init.constant_(self.stuff_ref_predictor.bias, 0.)
        if self.mask_center_prior is not None:  # every query starts with the same spread
            self.mask_center_prior.init_weights()

    # -- forward ----------------------------------------------------------------------
    def _check_inputs(self, thing_query: Tensor, thing_ref_pts: Tensor, compact_occ: Tensor,
                      mask_features: Tensor, thing_valid: Optional[Tensor]) -> None:
        B = compact_occ.shape[0]
        if thing_query.dim() != 3 or thing_query.shape[0] != B or \
                thing_query.shape[2] != 2 * self.embed_dims:
            raise ValueError(f'TrackOccHead: thing_query must be (B={B}, Q, '
                             f'{2 * self.embed_dims}), got {tuple(thing_query.shape)}')
        if thing_ref_pts.shape != (*thing_query.shape[:2], 3):
            raise ValueError(f'TrackOccHead: thing_ref_pts must be '
                             f'{(*thing_query.shape[:2], 3)}, got {tuple(thing_ref_pts.shape)}')
        expect = (B, self.mask_channels, *self.occ_size)
        if tuple(mask_features.shape) != expect:
            raise ValueError(f'TrackOccHead: mask_features must be {expect} (occ_size '
                             f'{self.occ_size}), got {tuple(mask_features.shape)}')
        if compact_occ.dim() != 5:
            raise ValueError(f'TrackOccHead: compact_occ must be (B, C, X, Y, Z), got '
                             f'{tuple(compact_occ.shape)}')
        if thing_valid is not None and (thing_valid.dtype != torch.bool or
                                        thing_valid.shape != thing_query.shape[:2]):
            raise ValueError(f'TrackOccHead: thing_valid must be a bool '
                             f'{tuple(thing_query.shape[:2])} mask, got {thing_valid.dtype} '
                             f'{tuple(thing_valid.shape)}')

    def forward(self, thing_query: Tensor, thing_ref_pts: Tensor, compact_occ: Tensor,
                mask_features: Tensor, thing_valid: Optional[Tensor] = None) -> Dict:
        """
        Args:
            thing_query (Tensor): (B, Q_t, 2E) positional | content halves.
            thing_ref_pts (Tensor): (B, Q_t, 3) normalized reference points in [0, 1].
            compact_occ (Tensor): (B, C_in, X', Y', Z') value volume (50 x 50 x 16).
            mask_features (Tensor): (B, C_m, X, Y, Z) full-resolution mask features.
            thing_valid (Tensor, optional): (B, Q_t) bool, False for padding rows: no query
                attends to them in the decoder's self-attention (every other step is per
                query), so the valid rows' outputs do not depend on them; their own outputs
                are meaningless (the caller drops them). None: every row is a query.

        Returns:
            dict; lists have one entry per decoder layer (last = final):
            ``thing_cls`` [(B, Q_t, C)], ``thing_masks`` [(B, Q_t, X, Y, Z)] logits,
            ``thing_centers`` [(B, Q_t, 3 or 6)] metric centre (+ velocity m/s),
            ``stuff_cls`` [(B, Q_s, C)], ``stuff_masks`` [(B, Q_s, X, Y, Z)],
            ``thing_ref_pts`` (B, Q_t, 3) final normalized reference points,
            ``thing_embed`` (B, Q_t, E) final decoder output of the thing queries,
            ``sem_logits`` (B, C, X, Y, Z) or None.
        """
        self._check_inputs(thing_query, thing_ref_pts, compact_occ, mask_features, thing_valid)
        num_thing = thing_query.shape[1]
        device_type = compact_occ.device.type
        float32 = self.float32_queries and torch.is_autocast_enabled(device_type)
        with torch.autocast(device_type, enabled=False) if float32 else nullcontext():
            if float32:
                thing_query, thing_ref_pts, compact_occ = (
                    x.float() for x in (thing_query, thing_ref_pts, compact_occ))
            rows, last_refs = self._query_rows(thing_query, thing_ref_pts, compact_occ,
                                               thing_valid)
        result = dict(thing_cls=[], thing_masks=[], thing_centers=[], stuff_cls=[],
                      stuff_masks=[])
        logits = float32_mask_logits if self.float32_masks and \
            torch.is_autocast_enabled(device_type) else mask_logits
        for out, cls, embed, centers in rows:
            parts = [num_thing, cls.shape[1] - num_thing]
            # one split, not two slices: in the backward pass a split joins the two parts'
            # gradients in one concatenation, where each slice would write a zero-filled
            # (Q, X*Y*Z) gradient and a sum would join them
            thing_masks, stuff_masks = logits(embed, mask_features).split(parts, 1)
            if self.mask_center_prior is not None:
                prior = self.mask_center_prior(out[:, :num_thing], centers[..., :3])
                thing_masks = thing_masks + prior.to(thing_masks.dtype)
            thing_cls, stuff_cls = cls.split(parts, 1)
            result['thing_cls'].append(thing_cls)
            result['thing_masks'].append(thing_masks)
            result['thing_centers'].append(centers)
            result['stuff_cls'].append(stuff_cls)
            result['stuff_masks'].append(stuff_masks)
        result['thing_ref_pts'] = last_refs[:, :num_thing]
        result['thing_embed'] = rows[-1][0][:, :num_thing]
        result['sem_logits'] = self.semantic_logits(mask_features)
        return result

    def _query_rows(self, thing_query: Tensor, thing_ref_pts: Tensor, compact_occ: Tensor,
                    thing_valid: Optional[Tensor]) -> Tuple[List[tuple], Tensor]:
        """The decoder and the per-query branches (:meth:`forward`'s arguments): per
        decoder layer (out (B, Q, E), class logits (B, Q, C), mask embedding (B, Q, C_m),
        thing centres (B, Q_t, 3 or 6)) for the Q = Q_t + Q_s rows, and the last layer's
        reference points (B, Q, 3)."""
        B, num_thing = thing_query.shape[:2]
        E = self.embed_dims
        value = self.value_proj(compact_occ)
        spatial_shapes = device_constant([value.shape[2:]], value.device, torch.long)
        level_start_index = spatial_shapes.new_zeros(1)
        value = value.flatten(2).transpose(1, 2)

        stuff_pos, stuff_feat = self.stuff_embedding.weight.split(E, dim=1)
        stuff_ref = self.stuff_ref_predictor(stuff_pos).sigmoid()
        thing_pos, thing_feat = thing_query.split(E, dim=-1)
        query = torch.cat([thing_feat, stuff_feat.expand(B, -1, -1)], dim=1)
        query_pos = torch.cat([thing_pos, stuff_pos.expand(B, -1, -1)], dim=1)
        ref_pts = torch.cat([thing_ref_pts, stuff_ref.expand(B, -1, -1)], dim=1)

        key_padding_mask = None
        if thing_valid is not None:  # stuff queries are always keys
            key_padding_mask = torch.cat(
                [~thing_valid, thing_valid.new_zeros(B, self.num_stuff_queries)], dim=1)
        outs, refs = self.decoder(query, query_pos, ref_pts, value, spatial_shapes,
                                  level_start_index, key_padding_mask)
        rows = []
        for lid, (out, ref) in enumerate(zip(outs, refs)):
            centers = denormalize_points(ref[:, :num_thing], self.pc_range)
            if self.with_velo:
                centers = torch.cat([centers, self.velo_branches[lid](out[:, :num_thing])], -1)
            rows.append((out, self.cls_embed(out), self.mask_embed(out), centers))
        return rows, refs[-1]

    def semantic_logits(self, mask_features: Tensor) -> Optional[Tensor]:
        """(B, C_m, X, Y, Z) mask features -> (B, C, X, Y, Z) semantic logits (None
        without the semantic branch)."""
        if self.sem_head is None:
            return None
        return self.sem_head(mask_features.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)

    # -- losses -----------------------------------------------------------------------
    def loss(self, outs: Dict, semantics: Tensor, visible: Tensor,
             visible_idx: Optional[List[Tensor]] = None,
             present: Optional[List[Optional[Sequence[int]]]] = None,
             checks=None) -> Dict[str, Tensor]:
        """Stuff mask-classification loss (every decoder layer) and semantic loss.

        Args:
            outs (dict): output of :meth:`forward`.
            semantics (Tensor): (B, X, Y, Z) gt class ids.
            visible (Tensor): (B, X, Y, Z) bool voxels that count (``mask_camera``).
            visible_idx (list[Tensor], optional): per sample the (V,) flat indices of
                ``visible`` when the caller has them (saves their host synchronisation).
            present (list, optional): per sample the class ids of its visible voxels when
                the host knows them (saves the stuff targets' host synchronisation).
            checks (HostCountChecks, optional): collects the checks of ``present``.

        Returns:
            dict: ``loss_stuff_{cls,mask,dice}_d{l}`` per layer and ``loss_sem``.
        """
        B = semantics.shape[0]
        if tuple(semantics.shape[1:]) != self.occ_size or semantics.shape != visible.shape:
            raise ValueError(f'TrackOccHead.loss: semantics {tuple(semantics.shape)} and '
                             f'visible {tuple(visible.shape)} must both be (B, '
                             f'{", ".join(map(str, self.occ_size))})')
        semantics = semantics.long()
        visible = visible.bool()
        losses = {}
        sem_flat, vis_flat = semantics.reshape(B, -1), visible.reshape(B, -1)
        # all layers at once: one host round trip for their matching
        layers = self.loss_stuff.forward_layers(
            list(outs['stuff_cls']), [m.flatten(2) for m in outs['stuff_masks']], sem_flat,
            vis_flat, visible_idx, present, checks)
        for lid, layer in enumerate(layers):
            losses.update({f'{k}_d{lid}': v for k, v in layer.items()})
        if self.loss_sem is not None:
            logits = outs['sem_logits'].float().permute(0, 2, 3, 4, 1).reshape(
                B, -1, self.num_classes)
            # voxels that do not count weigh 0 (no bool-mask indexing, no host sync)
            valid = vis_flat & (sem_flat >= 0) & (sem_flat < self.num_classes)
            labels = torch.where(valid, sem_flat, 0)
            weight = self.sem_class_weight[labels] * valid  # (B, X*Y*Z)
            terms = [self.loss_sem(sample, labels[b], weight=weight[b],
                                   avg_factor=weight[b].sum().clamp(min=1e-6))
                     for b, sample in enumerate(batch_samples(logits))]
            losses['loss_sem'] = terms[0] if B == 1 else torch.stack(terms).sum() / B
        return losses

"""Tables of the parity comparison: per-tensor max abs / max relative differences against a
reference dump entry (full or sampled, tools/parity/README.md) and their rendering."""
import math
import os.path as osp
import sys
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import dump_format  # noqa: E402

#: fp32 CPU tolerance of tensors and losses, relative to the tensor's max abs
REL_TOL = 1e-4
#: share of voxels whose streamed semantics / ids must agree
AGREE_TOL = 0.9999


@dataclass
class Row:
    key: str
    max_abs: float = float('nan')
    max_rel: float = float('nan')
    ok: bool = False
    note: str = ''


@dataclass
class Table:
    title: str
    rows: List[Row] = field(default_factory=list)
    columns: tuple = ('max abs diff', 'max rel diff', 'pass')

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def render(self) -> str:
        lines = [f'### {self.title}', '',
                 f'| key | {" | ".join(self.columns)} | note |',
                 '|---|' + '---|' * (len(self.columns) + 1)]
        for r in self.rows:
            lines.append(f'| `{r.key}` | {_fmt(r.max_abs)} | {_fmt(r.max_rel)} | '
                         f'{"pass" if r.ok else "FAIL"} | {r.note} |')
        passed = sum(r.ok for r in self.rows)
        lines += ['', f'{passed}/{len(self.rows)} pass', '']
        return '\n'.join(lines)

    def to_dict(self) -> dict:
        return dict(title=self.title, ok=self.ok, rows=[asdict(r) for r in self.rows])


def _fmt(x) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return '-'
    if isinstance(x, float) and 0.01 <= abs(x) < 1e4:
        return f'{x:.4f}'
    return f'{x:.3e}'


@dataclass
class SampledRecord:
    """Our tensor of ``shape`` kept only at the dump's sample indices (``values``, 1-D), for
    stages the dump stores sampled: the full tensors of a paper-size clip do not fit in memory
    together."""
    shape: tuple
    values: torch.Tensor

    @classmethod
    def of(cls, tensor: torch.Tensor, sampled: dict) -> 'SampledRecord':
        idx = dump_format.sample_index_tensor(int(sampled['numel']), int(sampled['count']),
                                              int(sampled['multiplier']))
        return cls(tuple(tensor.shape), tensor.detach().reshape(-1)[idx].float().clone())


def compare_tensor(key: str, ref: torch.Tensor, sampled: Optional[dict], ours,
                   tol: float = REL_TOL) -> Row:
    """Row for ``ours`` (full tensor, or a :class:`SampledRecord`) against the dump entry
    ``ref`` (full, or ``sampled`` per dump_format); relative = max abs diff / max abs of the
    reference tensor."""
    if isinstance(ours, SampledRecord):
        shape = tuple(sampled['shape']) if sampled is not None else tuple(ref.shape)
        if sampled is None or ours.shape != shape:
            return Row(key, note=f'shape {ours.shape} vs reference {shape}')
        ours_s = ours.values.double()
        ref_s = ref.double().reshape(-1)
        scale = float(sampled['abs_max'])
        note = f'{int(sampled["count"])} of {int(sampled["numel"])} sampled'
        return _rows_diff(key, ref_s, ours_s, scale, note, tol)
    ours = ours.detach().double()
    if sampled is not None:
        shape = tuple(sampled['shape'])
        if tuple(ours.shape) != shape:
            return Row(key, note=f'shape {tuple(ours.shape)} vs reference {shape}')
        idx = dump_format.sample_index_tensor(int(sampled['numel']), int(sampled['count']),
                                              int(sampled['multiplier']))
        ours_s = ours.reshape(-1)[idx]
        ref_s = ref.double().reshape(-1)
        scale = float(sampled['abs_max'])
        note = f'{int(sampled["count"])} of {int(sampled["numel"])} sampled'
    else:
        if tuple(ours.shape) != tuple(ref.shape):
            return Row(key, note=f'shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}')
        ours_s, ref_s = ours.reshape(-1), ref.double().reshape(-1)
        scale = float(ref_s.abs().max()) if ref_s.numel() else 0.0
        note = ''
    return _rows_diff(key, ref_s, ours_s, scale, note, tol)


def _rows_diff(key, ref_s, ours_s, scale, note, tol) -> Row:
    """Row of two 1-D float64 value sets (``scale``: the reference's max abs)."""
    if ref_s.numel() == 0:
        return Row(key, 0.0, 0.0, True, 'empty')
    finite = torch.isfinite(ref_s) & torch.isfinite(ours_s)
    if not bool(finite.all()):
        a, b = ref_s[~finite], ours_s[~finite]
        same = bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
        note += f' {int((~finite).sum())} non-finite' + ('' if same else ' DIFFER')
        if not same:
            return Row(key, float('inf'), float('inf'), False, note.strip())
    diff = (ours_s[finite] - ref_s[finite]).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float('inf'))
    return Row(key, max_abs, max_rel, max_rel <= tol, note.strip())


def compare_exact(key: str, ref: torch.Tensor, ours: torch.Tensor) -> Row:
    """Integer / bool tensors: equal elementwise (max abs diff, share of unequal)."""
    if tuple(ref.shape) != tuple(ours.shape):
        return Row(key, note=f'shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}')
    ne = (ref.long() != ours.long())
    max_abs = float((ref.double() - ours.double()).abs().max()) if ref.numel() else 0.0
    return Row(key, max_abs, float(ne.double().mean()) if ref.numel() else 0.0,
               not bool(ne.any()), 'exact; rel = share unequal')

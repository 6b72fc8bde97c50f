"""tools/test.py's checkpoint check: an empty, random or truncated file gets a clear message
naming it (not torch's "_use_new_zipfile_serialization" hint)."""
import os

import pytest
import torch

from trackocc.utils.tool_setup import check_checkpoint_matches


def test_non_checkpoint_files_are_named(tmp_path):
    model = torch.nn.Linear(3, 2)
    good = tmp_path / 'good.pth'
    torch.save(dict(state_dict=model.state_dict()), good)
    check_checkpoint_matches(model, str(good))
    data = good.read_bytes()
    cases = {'empty.pth': (b'', r'empty\.pth is empty \(0 bytes\): not a PyTorch checkpoint'),
             'random.pth': (os.urandom(4096), r'random\.pth \(4096 bytes\) is not a PyTorch '
                                              r'checkpoint.*corrupt or truncated'),
             'half.pth': (data[:len(data) // 2], r'half\.pth .* is not a PyTorch checkpoint')}
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(RuntimeError, match=message) as exc:
            check_checkpoint_matches(model, str(tmp_path / name))
        assert '_use_new_zipfile_serialization' not in str(exc.value)

"""trackocc.utils.distributed: the process group's end."""
import torch.distributed as dist

from trackocc.utils.distributed import close_process_group


def test_close_process_group_without_a_group_does_nothing():
    assert not dist.is_initialized()
    close_process_group()
    assert not dist.is_initialized()


def test_close_process_group_ends_the_group(tmp_path):
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                            world_size=1)
    try:
        assert dist.is_initialized()
        close_process_group()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

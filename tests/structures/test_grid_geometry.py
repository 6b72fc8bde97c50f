"""grid_geometry: occupancy size and pc_range from a grid config, clear errors otherwise."""
import pytest

from trackocc.structures import GRID_SHAPE, PC_RANGE, grid_geometry


def test_paper_grid():
    size, pc_range = grid_geometry(dict(x=(-40, 40, 0.4), y=(-40, 40, 0.4), z=(-1, 5.4, 0.4)))
    assert size == GRID_SHAPE and pc_range == list(PC_RANGE)


@pytest.mark.parametrize('cfg,match', [
    (dict(x=(-40, 40, 0.4), y=(-40, 40, 0.4)), "grid_config\\['z'\\] must be"),
    (dict(x=(-40, 40, 0.3), y=(-40, 40, 0.4), z=(-1, 5.4, 0.4)),
     "grid_config\\['x'\\] = .* whole voxels"),
    (dict(x=(-40, 40, 0.4), y=(40, -40, 0.4), z=(-1, 5.4, 0.4)),
     "grid_config\\['y'\\] = .* whole voxels"),
])
def test_bad_grid_names_owner_and_axis(cfg, match):
    with pytest.raises(ValueError, match=f'TrackOcc: {match}'):
        grid_geometry(cfg, 'TrackOcc')

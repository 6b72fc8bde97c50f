"""OccupancyVisualizer and its renders on small constructed voxel grids."""
import uuid

import numpy as np
import pytest
import torch
from mmengine.structures import BaseDataElement
from PIL import Image

from trackocc.registry import VISUALIZERS
from mmdet3d.structures import Det3DDataSample
from mmdet.structures import TrackDataSample
from trackocc.visualization import (OccupancyVisualizer, bev_columns, class_colors,
                                    instance_colors, isometric_canvas_size, render_bev,
                                    render_isometric, write_gif)
from trackocc.visualization.palette import FADE_COLOR

FREE, VEHICLE, ROAD, BUILDING = 15, 1, 13, 10
SHAPE = (40, 40, 8)


def empty_grid(shape=SHAPE):
    return np.full(shape, FREE, np.int64), np.zeros(shape, np.int64)


def bev_pixel(img, i, j, scale, num_x=SHAPE[0], num_y=SHAPE[1]):
    """Colour at the centre of voxel column (i, j) in a BEV image (forward up, left left)."""
    return img[(num_x - 1 - i) * scale + scale // 2, (num_y - 1 - j) * scale + scale // 2]


def test_bev_top_voxel_class_colour_and_orientation():
    sem, _ = empty_grid()
    sem[:, :, 0] = ROAD
    sem[30, 5, 1:6] = BUILDING          # top voxel k=5 at (30, 5): building
    sem[30, 5, 6] = FREE
    img = render_bev(sem, scale=4, height_shading=0, ego=False, draw_ids=False)
    assert img.shape == (160, 160, 3) and img.dtype == np.uint8
    colors = class_colors()
    assert tuple(bev_pixel(img, 30, 5, 4)) == tuple(colors[BUILDING])
    assert tuple(bev_pixel(img, 3, 33, 4)) == tuple(colors[ROAD])
    # forward (large i) is up, left (large j) is left: column (30, 5) is up-right of centre
    rows, cols = np.nonzero((img == colors[BUILDING]).all(axis=2))
    assert rows.max() < 80 and cols.min() > 80
    # height shading darkens by depth below the top of the grid
    shaded = render_bev(sem, scale=4, height_shading=0.5, ego=False, draw_ids=False)
    expect_road = np.round(colors[ROAD] * (1 - 0.5 * (1 - 1 / 8)))
    np.testing.assert_allclose(bev_pixel(shaded, 3, 33, 4), expect_road, atol=1)
    expect_building = np.round(colors[BUILDING] * (1 - 0.5 * (1 - 6 / 8)))
    np.testing.assert_allclose(bev_pixel(shaded, 30, 5, 4), expect_building, atol=1)


def test_bev_columns_visibility_and_instances():
    sem, inst = empty_grid()
    sem[:, :, 0] = ROAD
    sem[10:14, 10:12, 1:4] = VEHICLE
    inst[10:14, 10:12, 1:4] = 7
    visible = np.zeros(SHAPE, bool)
    visible[:20] = True
    cols = bev_columns(sem, inst, visible)
    assert cols.top_k[11, 11] == 3 and cols.top_class[11, 11] == VEHICLE
    assert cols.top_instance[11, 11] == 7 and cols.top_instance[0, 0] == 0
    assert cols.top_k[0, 0] == 0 and cols.visible[5, 5] and not cols.visible[30, 5]
    img = render_bev(sem, inst, visible, scale=4, height_shading=0, ego=False,
                     draw_ids=False, outlines=False, instance_tint=1.0)
    assert tuple(bev_pixel(img, 11, 11, 4)) == tuple(instance_colors(7))
    # invisible road fades towards light grey (hatch lines darker, sample a non-hatch pixel)
    faded = np.round(0.45 * class_colors()[ROAD] + 0.55 * FADE_COLOR)
    np.testing.assert_allclose(img[(39 - 30) * 4 + 1, (39 - 5) * 4 + 1], faded, atol=1)
    with pytest.raises(ValueError, match='instances has shape'):
        bev_columns(sem, inst[:, :, :4])


def test_instance_colours_stable_across_frames():
    colors_a = instance_colors(np.array([3, 17, 1234, 3]))
    colors_b = instance_colors(np.array([1234, 3]))
    np.testing.assert_array_equal(colors_a[0], colors_a[3])
    np.testing.assert_array_equal(colors_a[2], colors_b[0])
    many = instance_colors(np.arange(2, 202))
    assert len({tuple(c) for c in many}) == 200  # distinct ids, distinct colours
    # the same track id at two positions in two frames is drawn in the same colour
    frames = []
    for pos in (5, 25):
        sem, inst = empty_grid()
        sem[pos:pos + 3, 8:10, 0:2], inst[pos:pos + 3, 8:10, 0:2] = VEHICLE, 42
        sem[30, 30, 0:2], inst[30, 30, 0:2] = VEHICLE, 43 + pos
        frames.append(render_bev(sem, inst, scale=4, ego=False, draw_ids=False,
                                 outlines=False))
    np.testing.assert_array_equal(bev_pixel(frames[0], 6, 9, 4), bev_pixel(frames[1], 26, 9, 4))
    assert not np.array_equal(bev_pixel(frames[0], 30, 30, 4), bev_pixel(frames[1], 30, 30, 4))


def test_isometric_zbuffer_nearest_voxel_wins():
    sem, _ = empty_grid()
    near, far = (5, 5, 5), (6, 6, 4)  # same footprint for unit=2, height=2; near is in front
    sem[near], sem[far] = VEHICLE, BUILDING
    both = render_isometric(sem, unit=2, height=2)
    sem_near, _ = empty_grid()
    sem_near[near] = VEHICLE
    only_near = render_isometric(sem_near, unit=2, height=2)
    assert both.shape == isometric_canvas_size(SHAPE, 2, 2) + (3,)
    np.testing.assert_array_equal(both, only_near)
    assert (both == class_colors()[VEHICLE]).all(axis=2).any()  # the lit top face
    sem_far, _ = empty_grid()
    sem_far[far] = BUILDING
    assert (render_isometric(sem_far, unit=2, height=2) == class_colors()[BUILDING]).all(
        axis=2).any()
    with pytest.raises(ValueError, match='even'):
        render_isometric(sem, unit=3)


def make_frame(frame_idx, car_x, gt=True, pred=True, img_path=None, seq=1003):
    sem, inst = empty_grid()
    sem[:, :, 0] = ROAD
    sem[car_x:car_x + 4, 18:21, 1:3], inst[car_x:car_x + 4, 18:21, 1:3] = VEHICLE, 5
    sample = Det3DDataSample(metainfo=dict(sample_idx=1_000_000 + (seq % 1000) * 1000 + frame_idx,
                                           sequence_id=seq, frame_idx=frame_idx))
    if img_path is not None:
        sample.set_metainfo(dict(img_path=img_path, cam_names=['CAM_FRONT', 'CAM_SIDE_LEFT']))
    if gt:
        visible = np.ones(SHAPE, bool)
        visible[:, :5] = False
        sample.gt_occ = BaseDataElement(semantics=torch.from_numpy(sem),
                                        instances=torch.from_numpy(inst),
                                        mask_camera=torch.from_numpy(visible),
                                        infov=torch.ones(SHAPE, dtype=torch.bool))
    if pred:
        sample.pred_occ = BaseDataElement(semantics=torch.from_numpy(sem.astype(np.uint8)),
                                          instances=torch.from_numpy(inst.astype(np.int32) * 3))
    return sample


def new_visualizer(**kwargs):
    return OccupancyVisualizer.get_instance(f'vis-{uuid.uuid4().hex[:8]}', **kwargs)


def test_visualizer_registered_and_figure_layout(tmp_path):
    vis = VISUALIZERS.build(dict(type='OccupancyVisualizer', name=f'v-{uuid.uuid4().hex[:8]}'))
    assert isinstance(vis, OccupancyVisualizer)
    both = vis.render_frame(make_frame(0, 10))
    gt_only = vis.render_frame(make_frame(0, 10, pred=False))
    assert both.shape[1] > gt_only.shape[1] + 100  # a second column of panels
    assert both.shape[0] == gt_only.shape[0]
    gt = dict(semantics=make_frame(0, 10).gt_occ.semantics.numpy())
    bev_only = new_visualizer(draw_3d=False).render_panels(gt, None, 'gt')
    assert vis.render_panels(gt, None, 'gt').shape[0] > bev_only.shape[0] + 100
    with pytest.raises(ValueError, match='nothing to draw'):
        vis.render_frame(make_frame(0, 10, gt=False, pred=False))
    flat = make_frame(0, 10, gt=False)
    flat.pred_occ.semantics = flat.pred_occ.semantics.reshape(-1)
    with pytest.raises(ValueError, match='flat'):
        vis.render_frame(flat)
    # a TrackDataSample of one frame is unwrapped
    track = TrackDataSample()
    track.video_data_samples = [make_frame(0, 10)]
    np.testing.assert_array_equal(vis.render_frame(track), both)


def test_visualizer_camera_strip_and_outputs(tmp_path):
    paths = []
    for n, (w, h, color) in enumerate(((96, 64, (200, 30, 30)), (96, 48, (30, 30, 200)))):
        path = tmp_path / f'cam{n}.jpg'
        Image.new('RGB', (w, h), color).save(path, quality=95)
        paths.append(str(path))
    vis = new_visualizer(vis_backends=[dict(type='LocalVisBackend')], save_dir=str(tmp_path))
    vis.legend = lambda: np.full((1, 1, 3), 255, np.uint8)  # figure height = the renders'
    with_cams = vis.render_frame(make_frame(1, 12, img_path=paths))
    without = vis.render_frame(make_frame(1, 12))
    assert with_cams.shape[0] > without.shape[0] + 50
    # the camera strip sits under the title: left cell is the side-left camera (blue)
    strip = with_cams[40:200]
    blue = (strip[..., 2] > 150) & (strip[..., 0] < 80)
    red = (strip[..., 0] > 150) & (strip[..., 2] < 80)
    assert blue.any() and red.any()
    assert np.nonzero(blue)[1].mean() < np.nonzero(red)[1].mean()
    missing = vis.render_frame(make_frame(1, 12, img_path=[str(tmp_path / 'nope.jpg')]))
    assert missing.shape == without.shape  # unreadable images: drawn without the strip
    out_file = tmp_path / 'out' / 'frame.png'
    drawn = vis.add_datasample('test sample', make_frame(1, 12), out_file=str(out_file))
    assert np.asarray(Image.open(out_file)).shape == drawn.shape
    vis.add_datasample('val sample', make_frame(1, 12), step=7)
    assert (tmp_path / 'vis_data' / 'vis_image' / 'val sample_7.png').is_file()


def test_sequence_gif_one_frame_per_input(tmp_path):
    vis = new_visualizer()
    frames = [make_frame(f, 5 + 4 * f) for f in range(4)]
    out = tmp_path / 'seq.gif'
    assert vis.render_sequence_gif(frames, str(out), duration=0.2, max_width=400) == 4
    with Image.open(out) as gif:
        assert gif.n_frames == 4 and gif.size[0] == 400
        assert gif.info['duration'] == 200
    with pytest.raises(ValueError, match='.gif'):
        vis.render_sequence_gif(frames, str(tmp_path / 'seq.png'))
    with pytest.raises(ValueError, match='no frames'):
        write_gif([], str(tmp_path / 'empty.gif'))

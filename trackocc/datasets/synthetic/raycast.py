"""Ray casting through the ego-frame voxel grid (numba): camera images, LiDAR, visibility.

Rays march voxel by voxel (Amanatides-Woo DDA) through the render grid (label grid padded by
``moff`` voxels in x and y). Every label voxel a ray passes through, and the first occupied
voxel it hits, is marked in the visibility mask (``mask_camera`` / ``mask_lidar``). Rays that
leave the grid continue to the analytic ground plane or the sky, so images and points extend
beyond the labelled volume, as in real data.
"""
import numba
import numpy as np

from ...structures.occ_classes import BUILDING, FREE, PEDESTRIAN, ROAD, VEHICLE
from .constants import GROUND_TOP_Z, SKY_HORIZON, SKY_ZENITH
from .streets import MARK_WHITE, MARK_YELLOW, P_Z0, ground_class, hash01

_INF = 1e30


@numba.njit(cache=True)
def march(sem, gmin, vs, o, d, tmax, vis, moff, mark):
    """March one ray (origin o, unit direction d) -> (t, i, j, k, axis, t_exit).

    ``i < 0`` when nothing is hit before leaving the grid or ``tmax``; ``axis`` is the axis of
    the voxel face the ray entered the hit voxel through (-1 if it started inside).
    """
    nx, ny, nz = sem.shape
    gx = (o[0] - gmin[0]) / vs
    gy = (o[1] - gmin[1]) / vs
    gz = (o[2] - gmin[2]) / vs
    i, j, k = int(np.floor(gx)), int(np.floor(gy)), int(np.floor(gz))
    if i < 0 or j < 0 or k < 0 or i >= nx or j >= ny or k >= nz:
        return 0.0, -1, -1, -1, -1, 0.0
    si = 1 if d[0] > 0 else -1
    sj = 1 if d[1] > 0 else -1
    sk = 1 if d[2] > 0 else -1
    adx, ady, adz = abs(d[0]), abs(d[1]), abs(d[2])
    tdx = vs / adx if adx > 1e-12 else _INF
    tdy = vs / ady if ady > 1e-12 else _INF
    tdz = vs / adz if adz > 1e-12 else _INF
    tmx = ((i + 1 - gx) if si > 0 else (gx - i)) * tdx if adx > 1e-12 else _INF
    tmy = ((j + 1 - gy) if sj > 0 else (gy - j)) * tdy if ady > 1e-12 else _INF
    tmz = ((k + 1 - gz) if sk > 0 else (gz - k)) * tdz if adz > 1e-12 else _INF
    lx, ly, lz = vis.shape
    t = 0.0
    axis = -1
    while True:
        if mark:
            li, lj = i - moff, j - moff
            if 0 <= li < lx and 0 <= lj < ly and k < lz:
                vis[li, lj, k] = 1
        if sem[i, j, k] != FREE:
            return t, i, j, k, axis, t
        if tmx <= tmy and tmx <= tmz:
            t = tmx
            tmx += tdx
            i += si
            axis = 0
        elif tmy <= tmz:
            t = tmy
            tmy += tdy
            j += sj
            axis = 1
        else:
            t = tmz
            tmz += tdz
            k += sk
            axis = 2
        if t > tmax or i < 0 or j < 0 or k < 0 or i >= nx or j >= ny or k >= nz:
            return t, -1, -1, -1, -1, t


@numba.njit(cache=True)
def _surface_color(cls, ins, gxp, gyp, gzp, normal_z, shade, dist, colors, params):
    """Shaded, textured, fogged RGB of a surface point (global gx, gy, gz)."""
    tex = 0.86 + 0.28 * hash01(int(np.floor(gxp * 5)), int(np.floor(gyp * 5)),
                               int(np.floor(gzp * 5)))
    r = colors[cls, 0] * tex
    g = colors[cls, 1] * tex
    b = colors[cls, 2] * tex
    if ins > 0:  # per-instance tint: brightness and a slight hue change
        bright = 0.8 + 0.4 * hash01(ins, 11, 3)
        r *= bright * (0.88 + 0.24 * hash01(ins, 1, 5))
        g *= bright * (0.88 + 0.24 * hash01(ins, 2, 5))
        b *= bright * (0.88 + 0.24 * hash01(ins, 3, 5))
    if cls == ROAD and normal_z > 0.5:
        _, mk = ground_class(params, gxp, gyp)
        if mk == MARK_WHITE:
            r, g, b = 225.0 * tex, 225.0 * tex, 220.0 * tex
        elif mk == MARK_YELLOW:
            r, g, b = 215.0 * tex, 180.0 * tex, 40.0 * tex
    height = gzp - params[P_Z0]  # above the road surface
    if cls == BUILDING and normal_z < 0.5:  # windows on facades
        w = (gxp + gyp) % 2.7
        if 1.1 < height % 3.2 < 2.4 and w < 1.4:
            r, g, b = r * 0.45, g * 0.5, b * 0.65
    elif cls == VEHICLE and normal_z < 0.5 and 1.0 < height < 1.45:  # window band
        r, g, b = r * 0.5, g * 0.5, b * 0.55
    elif cls == PEDESTRIAN and height < 0.85:  # trousers darker than the shirt
        r, g, b = r * 0.55, g * 0.55, b * 0.55
    r *= shade
    g *= shade
    b *= shade
    f = 1.0 - np.exp(-dist / 600.0)  # light haze
    return (r * (1 - f) + SKY_HORIZON[0] * f, g * (1 - f) + SKY_HORIZON[1] * f,
            b * (1 - f) + SKY_HORIZON[2] * f)


@numba.njit(cache=True)
def render_camera(sem, inst, gmin, vs, moff, cam_o, cam_r, intr, sun, ego, params, colors,
                  img, vis, do_img, do_vis, shadows):
    """Cast one ray per pixel of a pinhole camera.

    cam_o (3,) camera centre and cam_r (3, 3) camera->ego rotation (OpenCV axes); intr =
    (fx, fy, cx, cy); img (H, W, 3) uint8 RGB written when ``do_img``; vis (200, 200, 16)
    uint8 camera visibility updated when ``do_vis``; ``shadows``: cast a ray to the sun (unit
    vector ``sun``, ego frame) from every hit.
    """
    H, W = img.shape[0], img.shape[1]
    fx, fy, cx, cy = intr[0], intr[1], intr[2], intr[3]
    c, s, tx, ty, tz = ego[0], ego[1], ego[2], ego[3], ego[4]
    d = np.empty(3)
    sp = np.empty(3)
    for v in range(H):
        for u in range(W):
            xc = (u + 0.5 - cx) / fx
            yc = (v + 0.5 - cy) / fy
            n = np.sqrt(xc * xc + yc * yc + 1.0)
            for a in range(3):
                d[a] = (cam_r[a, 0] * xc + cam_r[a, 1] * yc + cam_r[a, 2]) / n
            t, i, j, k, axis, t_exit = march(sem, gmin, vs, cam_o, d, 1e9, vis, moff, do_vis)
            if not do_img:
                continue
            px = cam_o[0] + t * d[0]
            py = cam_o[1] + t * d[1]
            pz = cam_o[2] + t * d[2]
            if i >= 0:
                cls = sem[i, j, k]
                ins = inst[i, j, k]
                nvec0, nvec1, nvec2 = 0.0, 0.0, 0.0
                if axis == 0:
                    nvec0 = -1.0 if d[0] > 0 else 1.0
                elif axis == 1:
                    nvec1 = -1.0 if d[1] > 0 else 1.0
                elif axis == 2:
                    nvec2 = -1.0 if d[2] > 0 else 1.0
                else:
                    nvec0, nvec1, nvec2 = -d[0], -d[1], -d[2]
                lit = max(0.0, nvec0 * sun[0] + nvec1 * sun[1] + nvec2 * sun[2])
                if lit > 0.0 and shadows:  # shadow ray towards the sun
                    sp[0] = px + 1e-3 * nvec0
                    sp[1] = py + 1e-3 * nvec1
                    sp[2] = pz + 1e-3 * nvec2
                    if march(sem, gmin, vs, sp, sun, 60.0, vis, moff, False)[1] >= 0:
                        lit = 0.0
                shade = 0.55 + 0.45 * lit
                col = _surface_color(cls, ins, tx + c * px - s * py, ty + s * px + c * py,
                                     pz + tz, nvec2, shade, t, colors, params)
            elif d[2] < -1e-6:  # ground beyond the grid
                tg = (GROUND_TOP_Z - cam_o[2]) / d[2]
                px = cam_o[0] + tg * d[0]
                py = cam_o[1] + tg * d[1]
                gxp = tx + c * px - s * py
                gyp = ty + s * px + c * py
                cls, _ = ground_class(params, gxp, gyp)
                col = _surface_color(cls, 0, gxp, gyp, tz + GROUND_TOP_Z, 1.0,
                                     0.55 + 0.45 * sun[2], tg, colors, params)
            else:  # sky
                e = min(1.0, max(0.0, d[2] * 2.5))
                col = (SKY_HORIZON[0] * (1 - e) + SKY_ZENITH[0] * e,
                       SKY_HORIZON[1] * (1 - e) + SKY_ZENITH[1] * e,
                       SKY_HORIZON[2] * (1 - e) + SKY_ZENITH[2] * e)
            img[v, u, 0] = np.uint8(min(255.0, max(0.0, col[0])))
            img[v, u, 1] = np.uint8(min(255.0, max(0.0, col[1])))
            img[v, u, 2] = np.uint8(min(255.0, max(0.0, col[2])))


@numba.njit(cache=True)
def cast_lidar(sem, gmin, vs, moff, origin, elev, azim, max_range, noise, keep, params, ego,
               intensity, out, vis):
    """Spinning LiDAR: one ray per (elevation, azimuth); writes points (N, 6) -> count.

    out rows: x, y, z (ego frame), intensity, elongation, 0. ``noise`` (B*A,) range noise in
    metres, ``keep`` (B*A,) bool drop-out mask. vis (200, 200, 16) uint8 LiDAR visibility.
    """
    c, s, tx, ty = ego[0], ego[1], ego[2], ego[3]
    d = np.empty(3)
    n = 0
    for b in range(elev.shape[0]):
        ce, se = np.cos(elev[b]), np.sin(elev[b])
        for a in range(azim.shape[0]):
            r = b * azim.shape[0] + a
            d[0] = ce * np.cos(azim[a])
            d[1] = ce * np.sin(azim[a])
            d[2] = se
            t, i, j, k, axis, t_exit = march(sem, gmin, vs, origin, d, max_range, vis, moff,
                                             True)
            if i >= 0:
                cls = sem[i, j, k]
            elif d[2] < -1e-6:
                t = (GROUND_TOP_Z - origin[2]) / d[2]
                if t > max_range:
                    continue
                cls, _ = ground_class(params, tx + c * (origin[0] + t * d[0]) -
                                      s * (origin[1] + t * d[1]),
                                      ty + s * (origin[0] + t * d[0]) +
                                      c * (origin[1] + t * d[1]))
            else:
                continue
            if not keep[r] or t < 1.0:
                continue
            t = t + noise[r]
            out[n, 0] = origin[0] + t * d[0]
            out[n, 1] = origin[1] + t * d[1]
            out[n, 2] = origin[2] + t * d[2]
            out[n, 3] = intensity[cls] * (0.75 + 0.5 * hash01(r, n, 17))
            out[n, 4] = 0.1 * hash01(n, r, 23)
            out[n, 5] = 0.0
            n += 1
    return n

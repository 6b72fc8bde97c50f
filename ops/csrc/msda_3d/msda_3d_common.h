// 3D multi-scale deformable attention: trilinear sampling math shared by CPU and CUDA code.
//
// A location (x, y, z) in [0, 1] of a level of shape (X, Y, Z) maps to voxel coordinates
// (x * X - 0.5, y * Y - 0.5, z * Z - 0.5) (align_corners=False); corners outside the volume
// contribute zero. Keys of a level are stored (X, Y, Z) C-order with a stride of M * Dh
// elements between consecutive keys (value layout (B, S, M, Dh)).
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TRACKOCC_HD __host__ __device__ __forceinline__
#define TRACKOCC_UNROLL _Pragma("unroll")
#else
#define TRACKOCC_HD inline
#define TRACKOCC_UNROLL
#endif

namespace trackocc {

// The eight corners of one trilinear sample: key offsets, weights, and the derivatives of the
// weights with respect to the voxel coordinates (x, y, z). Invalid corners have weight 0.
template <typename acc_t, typename index_t = int64_t>
struct TrilinearCorners {
  index_t key[8];
  acc_t w[8];
  acc_t dw[8][3];
  bool valid[8];
  bool any;
};

template <typename acc_t, typename index_t>
TRACKOCC_HD void trilinear_corners(acc_t x, acc_t y, acc_t z, index_t X, index_t Y, index_t Z,
                                   TrilinearCorners<acc_t, index_t>& t) {
  t.any = x > acc_t(-1) && y > acc_t(-1) && z > acc_t(-1) && x < acc_t(X) && y < acc_t(Y) &&
          z < acc_t(Z);
  const acc_t fx0 = std::floor(x), fy0 = std::floor(y), fz0 = std::floor(z);
  // clamp before the integer conversion so that far-away locations cannot overflow it
  const index_t x0 = static_cast<index_t>(t.any ? fx0 : acc_t(-2)),
                y0 = static_cast<index_t>(t.any ? fy0 : acc_t(-2)),
                z0 = static_cast<index_t>(t.any ? fz0 : acc_t(-2));
  const acc_t lx = x - fx0, ly = y - fy0, lz = z - fz0;
  const acc_t wx[2] = {acc_t(1) - lx, lx}, wy[2] = {acc_t(1) - ly, ly},
              wz[2] = {acc_t(1) - lz, lz};
  const acc_t sgn[2] = {acc_t(-1), acc_t(1)};
TRACKOCC_UNROLL
  for (int n = 0; n < 8; ++n) {
    const int i = n >> 2, j = (n >> 1) & 1, k = n & 1;
    const index_t xi = x0 + i, yj = y0 + j, zk = z0 + k;
    const bool ok = t.any && xi >= 0 && xi < X && yj >= 0 && yj < Y && zk >= 0 && zk < Z;
    t.valid[n] = ok;
    t.key[n] = ok ? (xi * Y + yj) * Z + zk : 0;
    t.w[n] = ok ? wx[i] * wy[j] * wz[k] : acc_t(0);
    t.dw[n][0] = ok ? sgn[i] * wy[j] * wz[k] : acc_t(0);
    t.dw[n][1] = ok ? wx[i] * sgn[j] * wz[k] : acc_t(0);
    t.dw[n][2] = ok ? wx[i] * wy[j] * sgn[k] : acc_t(0);
  }
}

// Sampled value of one channel; `v` points at key 0 of the level for that channel.
template <typename scalar_t, typename acc_t, typename index_t>
TRACKOCC_HD acc_t trilinear_value(const scalar_t* v, index_t key_stride,
                                  const TrilinearCorners<acc_t, index_t>& t) {
  acc_t out = 0;
TRACKOCC_UNROLL
  for (int n = 0; n < 8; ++n)
    if (t.valid[n]) out += t.w[n] * static_cast<acc_t>(v[t.key[n] * key_stride]);
  return out;
}

// Sampled value and its gradient with respect to the voxel coordinates (x, y, z).
template <typename scalar_t, typename acc_t, typename index_t>
TRACKOCC_HD acc_t trilinear_value_grad(const scalar_t* v, index_t key_stride,
                                       const TrilinearCorners<acc_t, index_t>& t,
                                       acc_t grad_xyz[3]) {
  acc_t out = 0;
  grad_xyz[0] = grad_xyz[1] = grad_xyz[2] = 0;
TRACKOCC_UNROLL
  for (int n = 0; n < 8; ++n) {
    if (!t.valid[n]) continue;
    const acc_t val = static_cast<acc_t>(v[t.key[n] * key_stride]);
    out += t.w[n] * val;
    grad_xyz[0] += t.dw[n][0] * val;
    grad_xyz[1] += t.dw[n][1] * val;
    grad_xyz[2] += t.dw[n][2] * val;
  }
  return out;
}

}  // namespace trackocc

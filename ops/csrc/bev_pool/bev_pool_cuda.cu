// BEVPoolv2 CUDA kernels (fp32 / fp16 / bf16 / fp64; accumulation in float or double).
//
// The output is channel-first (B, C, V), V = Z * Y * X, a voxel rank is b * V + v; depth is
// (B, N, D, h, w) and a point is one depth bin of one feature pixel.
// maps:     one thread per point and per interval fills two int32 maps (-1 = none):
//           voxel -> interval and depth element -> point (kept for the backward). Entry 0 is
//           a flag, set when the ranks break the contract below.
// forward:  one block per tile of consecutive voxels sums the tile's intervals into shared
//           memory (a warp per interval, lanes over channels) and writes the tile once,
//           coalesced, zeros included (no separate zero fill).
// backward, two passes without atomics (deterministic, every element stored once):
//   1. blocks of 32 consecutive intervals stage their output-gradient columns in shared
//      memory (neighbouring intervals are neighbouring voxels: coalesced reads of the
//      channel-first gradient); a warp per interval, lanes over channels, stores each point's
//      depth gradient (a warp reduction) and its feature-gradient term d * g (a row).
//   2. one block per feature pixel, warps over its depth bins, lanes over channels: the
//      depth gradient of every depth element (0 where no point) and the pixel's feature
//      gradient, the sum of its points' rows in a fixed order.
// The warps walk a run of points 32 at a time: lane j loads point j's indices and depth, and
// the loop over the run broadcasts them, so the loads of a run overlap instead of chaining.
// Rank contract (voxel_pooling_prepare builds it): the intervals partition the points in
// order, ranks_feat[p] is the pixel of depth element ranks_depth[p], a depth element belongs
// to at most one point, a voxel ends at most one interval, and every rank is in range. A
// violation makes the kernels write NaN (output and gradients) instead of a wrong result.
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>

#include "bev_pool.h"

namespace trackocc {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 32;      // intervals per block in backward pass 1
constexpr int kBwdWarps = 8;   // warps per block in both backward passes
constexpr int kRegChunks = 4;  // 32-channel chunks a backward lane keeps in registers
constexpr int kFwdThreads = 256;

inline unsigned int num_blocks(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t nan_value() {
  return static_cast<scalar_t>(NAN);
}

__global__ void bev_pool_maps_kernel(int n_points, int n_intervals, int64_t n_voxels,
                                     int64_t n_depth, int D, int HW,
                                     const int* __restrict__ ranks_depth,
                                     const int* __restrict__ ranks_feat,
                                     const int* __restrict__ ranks_bev,
                                     const int* __restrict__ starts,
                                     const int* __restrict__ lengths, int* __restrict__ maps) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int* vox_map = maps + 1;
  int* pt_map = vox_map + n_voxels;
  bool bad = false;
  if (t < n_points) {
    const int o = ranks_depth[t];
    if (o < 0 || o >= n_depth) {
      bad = true;
    } else {
      const int bn = o / (D * HW), yx = o % HW;  // depth element (bn, d, yx) -> pixel
      bad = ranks_feat[t] != bn * HW + yx;
      bad = (atomicExch(pt_map + o, static_cast<int>(t)) != -1) || bad;
    }
  }
  if (t == 0 && n_intervals == 0 && n_points > 0) bad = true;  // points in no interval
  if (t < n_intervals) {
    // the intervals partition the points in order
    const int s = starts[t], e = s + lengths[t];
    bad = bad || lengths[t] < 1 || (t == 0 && s != 0) ||
          (t == n_intervals - 1 && e != n_points) || (t + 1 < n_intervals && starts[t + 1] != e);
    const int r = (s >= 0 && s < n_points) ? ranks_bev[s] : -1;
    if (r < 0 || r >= n_voxels) bad = true;
    else bad = (atomicExch(vox_map + r, static_cast<int>(t)) != -1) || bad;
  }
  if (bad) maps[0] = 1;
}

constexpr unsigned kFull = 0xffffffffu;

// shared-memory tile of (c, tile + 1) accumulators, the +1 against bank conflicts
template <typename scalar_t, typename acc_t>
__global__ void bev_pool_fwd_kernel(int c, int V, int tile, const scalar_t* __restrict__ depth,
                                    const scalar_t* __restrict__ feat,
                                    const int* __restrict__ ranks_depth,
                                    const int* __restrict__ ranks_feat,
                                    const int* __restrict__ starts,
                                    const int* __restrict__ lengths,
                                    const int* __restrict__ maps, scalar_t* __restrict__ out) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* out_s = reinterpret_cast<acc_t*>(smem_raw);
  const int ld = tile + 1;
  const int64_t b = blockIdx.y;
  const int v0 = blockIdx.x * tile;
  const int n = min(tile, V - v0);
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int e = threadIdx.x; e < c * ld; e += blockDim.x) out_s[e] = 0;
  __syncthreads();
  const int* vox_map = maps + 1 + b * V + v0;
  for (int t0 = warp * 32; t0 < n; t0 += warps * 32) {  // the warp's 32 voxels
    const int i_lane = t0 + lane < n ? vox_map[t0 + lane] : -1;
    for (unsigned busy = __ballot_sync(kFull, i_lane >= 0); busy; busy &= busy - 1) {
      const int j = __ffs(busy) - 1;
      const int i = __shfl_sync(kFull, i_lane, j);
      acc_t* col = out_s + t0 + j;  // channel k at col[k * ld]
      const int s = starts[i], e = s + lengths[i];
      for (int pc = s; pc < e; pc += 32) {
        int rf = 0;
        acc_t d = 0;
        if (pc + lane < e) {
          rf = ranks_feat[pc + lane];
          d = static_cast<acc_t>(depth[ranks_depth[pc + lane]]);
        }
        const int cnt = min(32, e - pc);
        for (int q = 0; q < cnt; ++q) {
          const scalar_t* f = feat + static_cast<int64_t>(__shfl_sync(kFull, rf, q)) * c;
          const acc_t dq = __shfl_sync(kFull, d, q);
          for (int k = lane; k < c; k += 32) col[k * ld] += dq * static_cast<acc_t>(f[k]);
        }
      }
    }
  }
  __syncthreads();
  const bool bad = maps[0] != -1;
  scalar_t* o = out + b * c * V + v0;
  for (int e = threadIdx.x; e < c * tile; e += blockDim.x) {
    const int k = e / tile, t = e - k * tile;
    if (t < n)
      o[static_cast<int64_t>(k) * V + t] =
          bad ? nan_value<scalar_t>() : static_cast<scalar_t>(out_s[k * ld + t]);
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFull, v, off);
  return v;
}

// pass 1: per point, the depth gradient dot[p] = <g(voxel), feat(pixel)> and the feature
// gradient term rows[p, :] = depth[p] * g(voxel)
template <typename scalar_t, typename acc_t>
__global__ void bev_pool_bwd_points_kernel(int n_intervals, int c, int V,
                                           const scalar_t* __restrict__ grad_out,
                                           const scalar_t* __restrict__ depth,
                                           const scalar_t* __restrict__ feat,
                                           const int* __restrict__ ranks_depth,
                                           const int* __restrict__ ranks_feat,
                                           const int* __restrict__ ranks_bev,
                                           const int* __restrict__ starts,
                                           const int* __restrict__ lengths,
                                           acc_t* __restrict__ dot, acc_t* __restrict__ rows) {
  __shared__ acc_t g_s[32][kTile + 1];  // (channel of the chunk, interval of the tile)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i0 = blockIdx.x * kTile;
  const int tile = min(kTile, n_intervals - i0);
  // lane l stages interval i0 + l
  int64_t g_off = 0;
  if (lane < tile) {
    const int r = ranks_bev[starts[i0 + lane]];
    const int b = r / V;
    g_off = static_cast<int64_t>(b) * c * V + (r - b * V);
  }
  for (int k0 = 0; k0 < c; k0 += 32) {
    __syncthreads();  // the previous chunk is consumed
    for (int kk = warp; kk < 32; kk += kBwdWarps)
      if (lane < tile && k0 + kk < c)
        g_s[kk][lane] = static_cast<acc_t>(grad_out[g_off + static_cast<int64_t>(k0 + kk) * V]);
    __syncthreads();
    const int k = k0 + lane;
    for (int j = warp; j < tile; j += kBwdWarps) {
      const acc_t gk = k < c ? g_s[lane][j] : acc_t(0);
      const int s = starts[i0 + j], e = s + lengths[i0 + j];
      for (int pc = s; pc < e; pc += 32) {
        int rf = 0;
        acc_t d = 0;
        if (pc + lane < e) {
          rf = ranks_feat[pc + lane];
          d = static_cast<acc_t>(depth[ranks_depth[pc + lane]]);
        }
        acc_t own = 0;  // lane q's point's part of the depth gradient
        const int cnt = min(32, e - pc);
        for (int q = 0; q < cnt; ++q) {
          const int64_t f_off = static_cast<int64_t>(__shfl_sync(kFull, rf, q)) * c;
          const acc_t dq = __shfl_sync(kFull, d, q);
          const acc_t part = warp_sum(k < c ? gk * static_cast<acc_t>(feat[f_off + k]) : acc_t(0));
          if (lane == q) own = part;
          if (k < c) rows[static_cast<int64_t>(pc + q) * c + k] = dq * gk;
        }
        if (pc + lane < e) dot[pc + lane] = k0 == 0 ? own : dot[pc + lane] + own;
      }
    }
  }
}

// pass 2: per feature pixel, the depth gradients of its depth bins and its feature gradient
template <typename scalar_t, typename acc_t>
__global__ void bev_pool_bwd_pixels_kernel(int D, int HW, int c, int64_t n_voxels,
                                           const int* __restrict__ maps,
                                           const acc_t* __restrict__ dot,
                                           const acc_t* __restrict__ rows,
                                           scalar_t* __restrict__ grad_depth,
                                           scalar_t* __restrict__ grad_feat) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* acc_s = reinterpret_cast<acc_t*>(smem_raw);  // (warps, c): each warp's row sum
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t f = blockIdx.x;  // feature pixel (bn, yx)
  const int64_t bn = f / HW, yx = f - bn * HW;
  const int* pt_map = maps + 1 + n_voxels;
  const bool bad = maps[0] != -1;
  for (int k = threadIdx.x; k < warps * c; k += blockDim.x) acc_s[k] = 0;
  __syncthreads();
  acc_t* mine = acc_s + warp * c;
  acc_t acc[kRegChunks];  // channels lane + 32 * r in registers, the rest in shared memory
#pragma unroll
  for (int r = 0; r < kRegChunks; ++r) acc[r] = 0;
  // the warp's depth bins are d0, d0 + warps, ...: in passes of 32, lane j holds bin j's point
  for (int d0 = warp; d0 < D; d0 += warps * 32) {
    const int d = d0 + warps * lane;
    const int64_t o = (bn * D + d) * HW + yx;
    const int p = d < D ? pt_map[o] : -1;
    if (d < D)
      grad_depth[o] = bad ? nan_value<scalar_t>()
                          : static_cast<scalar_t>(p >= 0 ? dot[p] : acc_t(0));
    for (unsigned busy = __ballot_sync(kFull, p >= 0); busy; busy &= busy - 1) {
      const acc_t* row = rows + static_cast<int64_t>(__shfl_sync(kFull, p, __ffs(busy) - 1)) * c;
#pragma unroll
      for (int r = 0; r < kRegChunks; ++r)
        if (lane + 32 * r < c) acc[r] += row[lane + 32 * r];
      for (int k = lane + 32 * kRegChunks; k < c; k += 32) mine[k] += row[k];
    }
  }
#pragma unroll
  for (int r = 0; r < kRegChunks; ++r)
    if (lane + 32 * r < c) mine[lane + 32 * r] = acc[r];
  __syncthreads();
  for (int k = threadIdx.x; k < c; k += blockDim.x) {
    acc_t sum = 0;
    for (int w = 0; w < warps; ++w) sum += acc_s[w * c + k];
    grad_feat[f * c + k] = bad ? nan_value<scalar_t>() : static_cast<scalar_t>(sum);
  }
}

}  // namespace

void bev_pool_v2_forward_cuda(const at::Tensor& depth, const at::Tensor& feat,
                              const at::Tensor& ranks_depth, const at::Tensor& ranks_feat,
                              const at::Tensor& ranks_bev, const at::Tensor& interval_starts,
                              const at::Tensor& interval_lengths, at::Tensor& out,
                              at::Tensor& maps) {
  const at::cuda::OptionalCUDAGuard guard(depth.device());
  const int c = static_cast<int>(feat.size(4));
  const int n_points = static_cast<int>(ranks_depth.numel());
  const int n_intervals = static_cast<int>(interval_starts.numel());
  const int V = static_cast<int>(out.size(2) * out.size(3) * out.size(4));
  const int64_t n_voxels = out.size(0) * static_cast<int64_t>(V);
  if (n_voxels == 0 || c == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  if (n_points > 0 || n_intervals > 0) {
    bev_pool_maps_kernel<<<num_blocks(std::max(n_points, n_intervals)), kThreads, 0, stream>>>(
        n_points, n_intervals, n_voxels, depth.numel(), static_cast<int>(depth.size(2)),
        static_cast<int>(depth.size(3) * depth.size(4)), ranks_depth.data_ptr<int>(),
        ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(), interval_starts.data_ptr<int>(),
        interval_lengths.data_ptr<int>(), maps.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_forward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    // the widest voxel tile whose accumulators fit 48 KB of shared memory
    int tile = 256;
    while (tile > 32 && static_cast<size_t>(c) * (tile + 1) * sizeof(acc_t) > 48 * 1024)
      tile /= 2;
    const size_t smem = static_cast<size_t>(c) * (tile + 1) * sizeof(acc_t);
    TORCH_CHECK(smem <= 48 * 1024, "bev_pool_v2: ", c, " feature channels do not fit the "
                "CUDA forward's shared memory");
    const dim3 grid((V + tile - 1) / tile, static_cast<unsigned int>(out.size(0)));
    bev_pool_fwd_kernel<scalar_t, acc_t><<<grid, kFwdThreads, smem, stream>>>(
        c, V, tile, depth.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(),
        ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(),
        interval_starts.data_ptr<int>(), interval_lengths.data_ptr<int>(),
        maps.data_ptr<int>(), out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void bev_pool_v2_backward_cuda(const at::Tensor& grad_out, const at::Tensor& depth,
                               const at::Tensor& feat, const at::Tensor& ranks_depth,
                               const at::Tensor& ranks_feat, const at::Tensor& ranks_bev,
                               const at::Tensor& interval_starts,
                               const at::Tensor& interval_lengths, const at::Tensor& maps,
                               at::Tensor& grad_depth, at::Tensor& grad_feat) {
  const at::cuda::OptionalCUDAGuard guard(depth.device());
  const int c = static_cast<int>(feat.size(4));
  const int D = static_cast<int>(depth.size(2));
  const int HW = static_cast<int>(depth.size(3) * depth.size(4));
  const int V = static_cast<int>(grad_out.size(2) * grad_out.size(3) * grad_out.size(4));
  const int64_t n_voxels = grad_out.size(0) * static_cast<int64_t>(V);
  const int64_t n_pixels = depth.size(0) * depth.size(1) * static_cast<int64_t>(HW);
  const int n_intervals = static_cast<int>(interval_starts.numel());
  if (n_pixels == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    const auto acc = depth.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    at::Tensor dot = at::empty({ranks_depth.numel()}, acc);
    at::Tensor rows = at::empty({ranks_depth.numel(), static_cast<int64_t>(c)}, acc);
    if (n_intervals > 0 && c > 0) {
      bev_pool_bwd_points_kernel<scalar_t, acc_t>
          <<<(n_intervals + kTile - 1) / kTile, kBwdWarps * 32, 0, stream>>>(
              n_intervals, c, V, grad_out.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
              feat.data_ptr<scalar_t>(), ranks_depth.data_ptr<int>(),
              ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(),
              interval_starts.data_ptr<int>(), interval_lengths.data_ptr<int>(),
              dot.data_ptr<acc_t>(), rows.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    // each warp's row sums live in shared memory: fewer warps for very wide features
    const size_t row = static_cast<size_t>(c) * sizeof(acc_t);
    TORCH_CHECK(row <= 48 * 1024, "bev_pool_v2: ", c, " feature channels do not fit the CUDA "
                "backward's shared memory");
    int warps = kBwdWarps;
    while (warps > 1 && warps * row > 48 * 1024) warps /= 2;
    bev_pool_bwd_pixels_kernel<scalar_t, acc_t>
        <<<static_cast<unsigned int>(n_pixels), warps * 32, warps * row, stream>>>(
            D, HW, c, n_voxels, maps.data_ptr<int>(), dot.data_ptr<acc_t>(),
            rows.data_ptr<acc_t>(), grad_depth.data_ptr<scalar_t>(),
            grad_feat.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace trackocc

// BEVPoolv2 CUDA kernels (fp32 / fp16 / bf16 / fp64; accumulation in float or double).
//
// The output is channel-first (B, C, V), V = Z * Y * X, a voxel rank is b * V + v; depth is
// (B, N, D, h, w) and a point is one depth bin of one feature pixel.
// maps:     one thread per interval fills two int32 maps (-1 = none): voxel -> interval, and
//           depth element -> voxel rank of its interval (kept for the backward). Entry 0 is a
//           flag, set when the ranks break the contract below.
// forward:  one thread per voxel writes all C channels of it, zeros where no interval ends
//           there: neighbouring threads write neighbouring voxels of a channel, and there is
//           no separate zero fill of the output.
// backward: one block per feature pixel, its warps over the pixel's depth bins, lanes over
//           channels. A depth bin's gradient is a warp reduction and the pixel's feature
//           gradient a fixed-order sum over the warps: every gradient element is stored once
//           (no atomics, no zero fill) and the result is deterministic.
// Rank contract (voxel_pooling_prepare builds it): ranks_feat[p] is the pixel of depth
// element ranks_depth[p], a depth element belongs to at most one pooled point, a voxel ends at
// most one interval, and every rank is in range. A violation makes the kernels write NaN
// (output and gradients) instead of a silently wrong result.
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>

#include "bev_pool.h"

namespace trackocc {
namespace {

constexpr int kThreads = 256;
constexpr int kFwdChannels = 16;  // channels a forward thread accumulates at once
constexpr int kBwdWarps = 8;      // warps per feature pixel in the backward

inline unsigned int num_blocks(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t nan_value() {
  return static_cast<scalar_t>(NAN);
}

__global__ void bev_pool_maps_kernel(int n_intervals, int64_t n_voxels, int64_t n_depth, int D,
                                     int HW, const int* __restrict__ ranks_depth,
                                     const int* __restrict__ ranks_feat,
                                     const int* __restrict__ ranks_bev,
                                     const int* __restrict__ starts,
                                     const int* __restrict__ lengths, int* __restrict__ maps) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_intervals) return;
  int* vox_map = maps + 1;
  int* pt_map = vox_map + n_voxels;
  const int s = starts[i], e = s + lengths[i];
  const int r = ranks_bev[s];
  bool bad = r < 0 || r >= n_voxels;
  if (!bad) bad = atomicExch(vox_map + r, static_cast<int>(i)) != -1;
  for (int p = s; p < e; ++p) {
    const int o = ranks_depth[p];
    if (o < 0 || o >= n_depth) {
      bad = true;
      continue;
    }
    const int bn = o / (D * HW), yx = o % HW;  // depth element (bn, d, yx) -> pixel (bn, yx)
    bad = bad || ranks_feat[p] != bn * HW + yx;
    bad = (atomicExch(pt_map + o, r) != -1) || bad;
  }
  if (bad) maps[0] = 1;
}

template <typename scalar_t, typename acc_t>
__global__ void bev_pool_fwd_kernel(int64_t n_voxels, int c, int V,
                                    const scalar_t* __restrict__ depth,
                                    const scalar_t* __restrict__ feat,
                                    const int* __restrict__ ranks_depth,
                                    const int* __restrict__ ranks_feat,
                                    const int* __restrict__ starts,
                                    const int* __restrict__ lengths,
                                    const int* __restrict__ maps, scalar_t* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_voxels) return;
  const int64_t b = idx / V;
  scalar_t* o = out + b * c * V + (idx - b * V);  // channel k at o[k * V]
  const int i = maps[1 + idx];
  if (maps[0] != -1 || i < 0) {
    const scalar_t fill = maps[0] != -1 ? nan_value<scalar_t>() : scalar_t(0);
    for (int k = 0; k < c; ++k) o[static_cast<int64_t>(k) * V] = fill;
    return;
  }
  const int s = starts[i], e = s + lengths[i];
  for (int k0 = 0; k0 < c; k0 += kFwdChannels) {
    acc_t sum[kFwdChannels];
#pragma unroll
    for (int j = 0; j < kFwdChannels; ++j) sum[j] = 0;
    for (int p = s; p < e; ++p) {
      const acc_t d = static_cast<acc_t>(depth[ranks_depth[p]]);
      const scalar_t* f = feat + static_cast<int64_t>(ranks_feat[p]) * c + k0;
#pragma unroll
      for (int j = 0; j < kFwdChannels; ++j)
        if (k0 + j < c) sum[j] += d * static_cast<acc_t>(f[j]);
    }
#pragma unroll
    for (int j = 0; j < kFwdChannels; ++j)
      if (k0 + j < c) o[static_cast<int64_t>(k0 + j) * V] = static_cast<scalar_t>(sum[j]);
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

template <typename scalar_t, typename acc_t>
__global__ void bev_pool_bwd_kernel(int D, int HW, int c, int V, int64_t n_voxels,
                                    const scalar_t* __restrict__ grad_out,
                                    const scalar_t* __restrict__ depth,
                                    const scalar_t* __restrict__ feat,
                                    const int* __restrict__ maps,
                                    scalar_t* __restrict__ grad_depth,
                                    scalar_t* __restrict__ grad_feat) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* acc_s = reinterpret_cast<acc_t*>(smem_raw);  // (warps, c): each warp's feature sum
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t f = blockIdx.x;  // feature pixel (bn, yx)
  const int64_t bn = f / HW, yx = f - bn * HW;
  const int* pt_map = maps + 1 + n_voxels;
  const bool bad = maps[0] != -1;
  for (int k = threadIdx.x; k < warps * c; k += blockDim.x) acc_s[k] = 0;
  __syncthreads();
  const scalar_t* fr = feat + f * c;
  acc_t* mine = acc_s + warp * c;
  // the warp's depth bins are d0, d0 + warps, ...: in passes of 32, lane j holds the voxel
  // and depth of the pass's bin j
  for (int d0 = warp; d0 < D; d0 += warps * 32) {
    const int d = d0 + warps * lane;
    const int64_t o = (bn * D + d) * HW + yx;
    int r = -1;
    acc_t dv = 0;
    if (d < D) {
      r = pt_map[o];
      dv = static_cast<acc_t>(depth[o]);
    }
    acc_t own = 0;
    const int bins = min(32, (D - d0 + warps - 1) / warps);
    for (int j = 0; j < bins; ++j) {
      const int rj = __shfl_sync(0xffffffffu, r, j);
      if (rj < 0) continue;  // uniform within the warp
      const acc_t dj = __shfl_sync(0xffffffffu, dv, j);
      const int64_t b = rj / V;
      const scalar_t* g = grad_out + b * c * V + (rj - b * V);
      acc_t dot = 0;
      for (int k = lane; k < c; k += 32) {
        const acc_t gk = static_cast<acc_t>(g[static_cast<int64_t>(k) * V]);
        dot += gk * static_cast<acc_t>(fr[k]);
        mine[k] += dj * gk;
      }
      dot = warp_sum(dot);
      if (lane == j) own = dot;
    }
    if (d < D) grad_depth[o] = bad ? nan_value<scalar_t>() : static_cast<scalar_t>(own);
  }
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
  const int n_intervals = static_cast<int>(interval_starts.numel());
  const int V = static_cast<int>(out.size(2) * out.size(3) * out.size(4));
  const int64_t n_voxels = out.size(0) * static_cast<int64_t>(V);
  if (n_voxels == 0 || c == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  if (n_intervals > 0) {
    bev_pool_maps_kernel<<<num_blocks(n_intervals), kThreads, 0, stream>>>(
        n_intervals, n_voxels, depth.numel(), static_cast<int>(depth.size(2)),
        static_cast<int>(depth.size(3) * depth.size(4)), ranks_depth.data_ptr<int>(),
        ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(), interval_starts.data_ptr<int>(),
        interval_lengths.data_ptr<int>(), maps.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_forward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    bev_pool_fwd_kernel<scalar_t, acc_t><<<num_blocks(n_voxels), kThreads, 0, stream>>>(
        n_voxels, c, V, depth.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(),
        ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(),
        interval_starts.data_ptr<int>(), interval_lengths.data_ptr<int>(),
        maps.data_ptr<int>(), out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void bev_pool_v2_backward_cuda(const at::Tensor& grad_out, const at::Tensor& depth,
                               const at::Tensor& feat, const at::Tensor& maps,
                               at::Tensor& grad_depth, at::Tensor& grad_feat) {
  const at::cuda::OptionalCUDAGuard guard(depth.device());
  const int c = static_cast<int>(feat.size(4));
  const int D = static_cast<int>(depth.size(2));
  const int HW = static_cast<int>(depth.size(3) * depth.size(4));
  const int V = static_cast<int>(grad_out.size(2) * grad_out.size(3) * grad_out.size(4));
  const int64_t n_voxels = grad_out.size(0) * static_cast<int64_t>(V);
  const int64_t n_pixels = depth.size(0) * depth.size(1) * static_cast<int64_t>(HW);
  if (n_pixels == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    // each warp's feature sums live in shared memory: fewer warps for very wide features
    const size_t row = static_cast<size_t>(c) * sizeof(acc_t);
    int warps = kBwdWarps;
    while (warps > 1 && warps * row > 48 * 1024) warps /= 2;
    TORCH_CHECK(row <= 48 * 1024, "bev_pool_v2: ", c, " feature channels do not fit the CUDA "
                "backward's shared memory");
    bev_pool_bwd_kernel<scalar_t, acc_t>
        <<<static_cast<unsigned int>(n_pixels), warps * 32, warps * row, stream>>>(
            D, HW, c, V, n_voxels, grad_out.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
            feat.data_ptr<scalar_t>(), maps.data_ptr<int>(), grad_depth.data_ptr<scalar_t>(),
            grad_feat.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace trackocc

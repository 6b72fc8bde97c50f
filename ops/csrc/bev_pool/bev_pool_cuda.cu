// BEVPoolv2 CUDA kernels (fp32 / fp16 / bf16 / fp64; accumulation in float or double).
//
// The output is channel-first (B, C, V), V = Z * Y * X, and a voxel rank is b * V + v.
// forward:     two kernels and no zero fill of the output. 1. one thread per (interval,
//              channel), channels fastest (a warp reads whole feature rows), sums the interval
//              into a compact (intervals, C) buffer and maps the interval's voxel to it
//              (voxel -> interval, -1 where empty); 2. a thread per 4 voxels x 4 channels
//              writes every element of the channel-first output once, zeros included, with
//              vector stores. The occupied voxels are sparse (13 % at the paper size, rarely
//              neighbours), so scattered writes into a zero-filled output touched almost every
//              memory sector twice (measured with ncu: 2.3 M partial-sector writes after the
//              82 MB fill); now the output streams out once.
// backward:    one warp per interval, lanes over channels: the interval's output-gradient
//              column is read once from the channel-first (B, C, V) tensor (no transposed copy)
//              and serves all its points; the depth gradient of a point is a warp reduction
//              (a plain store: ranks_depth is unique), the feature gradient float atomics (like
//              index_add in the reference, its summation order is not deterministic). No sort,
//              no host synchronisation.
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "bev_pool.h"

namespace trackocc {
namespace {

constexpr int kThreads = 256;

inline unsigned int num_blocks(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

template <typename scalar_t, typename acc_t>
__global__ void bev_pool_fwd_sum_kernel(int n_intervals, int c, const scalar_t* __restrict__ depth,
                                        const scalar_t* __restrict__ feat,
                                        const int* __restrict__ ranks_depth,
                                        const int* __restrict__ ranks_feat,
                                        const int* __restrict__ ranks_bev,
                                        const int* __restrict__ starts,
                                        const int* __restrict__ lengths,
                                        scalar_t* __restrict__ sums,  // (n_intervals, c)
                                        int* __restrict__ voxel_map) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(n_intervals) * c) return;
  const int i = static_cast<int>(idx / c);
  const int k = static_cast<int>(idx - static_cast<int64_t>(i) * c);
  const int s = starts[i], e = s + lengths[i];
  acc_t sum = 0;
  for (int p = s; p < e; ++p)
    sum += static_cast<acc_t>(depth[ranks_depth[p]]) *
           static_cast<acc_t>(feat[static_cast<int64_t>(ranks_feat[p]) * c + k]);
  sums[idx] = static_cast<scalar_t>(sum);
  if (k == 0) voxel_map[ranks_bev[s]] = i;
}

template <typename scalar_t>
struct alignas(4 * sizeof(scalar_t)) Vec4 {
  scalar_t x[4];
};

// one thread per 4 consecutive voxels of a batch element, walking the channels 4 at a time:
// the 4 voxels' sums rows give a 4 x 4 block (a vector load per occupied voxel), written as 4
// vectors along the voxels (kAligned: C % 4 == 0 and V % 4 == 0; else element by element)
template <typename scalar_t, bool kAligned>
__global__ void bev_pool_fwd_write_kernel(int64_t n_groups, int c, int V,
                                          const scalar_t* __restrict__ sums,
                                          const int* __restrict__ voxel_map,
                                          scalar_t* __restrict__ out) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= n_groups) return;
  const int groups = (V + 3) / 4;
  const int b = static_cast<int>(g / groups);
  const int v0 = static_cast<int>(g - static_cast<int64_t>(b) * groups) * 4;
  int iv[4];
#pragma unroll
  for (int j = 0; j < 4; ++j)
    iv[j] = v0 + j < V ? voxel_map[static_cast<int64_t>(b) * V + v0 + j] : -1;
  scalar_t* o = out + static_cast<int64_t>(b) * c * V + v0;
#pragma unroll 2
  for (int k0 = 0; k0 < c; k0 += 4) {
    scalar_t blk[4][4];  // (voxel, channel)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      // an empty voxel (-1) reads nothing; its row pointer stays inside the buffer
      const scalar_t* row = sums + static_cast<int64_t>(max(iv[j], 0)) * c + k0;
      if (kAligned && iv[j] >= 0) {
        const Vec4<scalar_t> r = *reinterpret_cast<const Vec4<scalar_t>*>(row);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) blk[j][kk] = r.x[kk];
      } else {
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          blk[j][kk] = iv[j] >= 0 && k0 + kk < c ? row[kk] : scalar_t(0);
      }
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      if (k0 + kk >= c) break;
      scalar_t* dst = o + static_cast<int64_t>(k0 + kk) * V;
      if (kAligned) {
        Vec4<scalar_t> w;
#pragma unroll
        for (int j = 0; j < 4; ++j) w.x[j] = blk[j][kk];
        *reinterpret_cast<Vec4<scalar_t>*>(dst) = w;
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (v0 + j < V) dst[j] = blk[j][kk];
      }
    }
  }
}

// one warp per interval, lanes over channels; the lanes keep the interval's gradient column
// in registers (kMaxChunks * 32 channels) and re-read it from L1 beyond that
constexpr int kMaxChunks = 4;

// at most 40 registers (6 blocks per SM): the kernel waits on memory latency, and more warps
// in flight hide it (48 registers without the bound: 5 blocks)
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, 6)
    bev_pool_bwd_kernel(int n_intervals, int c, int V, const scalar_t* __restrict__ grad_out,
                        const scalar_t* __restrict__ depth, const scalar_t* __restrict__ feat,
                        const int* __restrict__ ranks_depth, const int* __restrict__ ranks_feat,
                        const int* __restrict__ ranks_bev, const int* __restrict__ starts,
                        const int* __restrict__ lengths, acc_t* __restrict__ grad_depth,
                        acc_t* __restrict__ grad_feat) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (i >= n_intervals) return;  // uniform within a warp
  const int s = starts[i], e = s + lengths[i];
  const int r = ranks_bev[s], b = r / V;
  // channel k of the interval's voxel: g[k * V]
  const scalar_t* g = grad_out + static_cast<int64_t>(b) * c * V + (r - b * V);
  acc_t gk[kMaxChunks];
#pragma unroll
  for (int j = 0; j < kMaxChunks; ++j) {
    const int k = lane + 32 * j;
    gk[j] = k < c ? static_cast<acc_t>(g[static_cast<int64_t>(k) * V]) : acc_t(0);
  }
  for (int p = s; p < e; ++p) {
    const int rd = ranks_depth[p];
    const int64_t f_off = static_cast<int64_t>(ranks_feat[p]) * c;
    const acc_t d = static_cast<acc_t>(depth[rd]);
    acc_t dot = 0;
#pragma unroll
    for (int j = 0; j < kMaxChunks; ++j) {
      const int k = lane + 32 * j;
      if (k < c) {
        dot += gk[j] * static_cast<acc_t>(feat[f_off + k]);
        atomicAdd(grad_feat + f_off + k, d * gk[j]);
      }
    }
    for (int k = lane + 32 * kMaxChunks; k < c; k += 32) {
      const acc_t gv = static_cast<acc_t>(g[static_cast<int64_t>(k) * V]);
      dot += gv * static_cast<acc_t>(feat[f_off + k]);
      atomicAdd(grad_feat + f_off + k, d * gv);
    }
    for (int off = 16; off > 0; off >>= 1) dot += __shfl_down_sync(0xffffffffu, dot, off);
    if (lane == 0) grad_depth[rd] = dot;
  }
}

}  // namespace

void bev_pool_v2_forward_cuda(const at::Tensor& depth, const at::Tensor& feat,
                              const at::Tensor& ranks_depth, const at::Tensor& ranks_feat,
                              const at::Tensor& ranks_bev, const at::Tensor& interval_starts,
                              const at::Tensor& interval_lengths, at::Tensor& out) {
  const at::cuda::OptionalCUDAGuard guard(depth.device());
  const int c = static_cast<int>(feat.size(4));
  const int n_intervals = static_cast<int>(interval_starts.numel());
  const int V = static_cast<int>(out.size(2) * out.size(3) * out.size(4));
  const int64_t n = static_cast<int64_t>(n_intervals) * c;
  if (n == 0) {
    out.zero_();
    return;
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t n_ranks = out.size(0) * static_cast<int64_t>(V);
  at::Tensor voxel_map = at::empty({n_ranks}, ranks_bev.options());
  C10_CUDA_CHECK(cudaMemsetAsync(voxel_map.data_ptr<int>(), 0xff, n_ranks * sizeof(int), stream));
  at::Tensor sums = at::empty({n_intervals, c}, feat.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_forward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    bev_pool_fwd_sum_kernel<scalar_t, acc_t><<<num_blocks(n), kThreads, 0, stream>>>(
        n_intervals, c, depth.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(),
        ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(),
        interval_starts.data_ptr<int>(), interval_lengths.data_ptr<int>(),
        sums.data_ptr<scalar_t>(), voxel_map.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t n_groups = out.size(0) * static_cast<int64_t>((V + 3) / 4);
    auto write = c % 4 == 0 && V % 4 == 0 ? bev_pool_fwd_write_kernel<scalar_t, true>
                                          : bev_pool_fwd_write_kernel<scalar_t, false>;
    write<<<num_blocks(n_groups), kThreads, 0, stream>>>(
        n_groups, c, V, sums.data_ptr<scalar_t>(), voxel_map.data_ptr<int>(),
        out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void bev_pool_v2_backward_cuda(const at::Tensor& grad_out, const at::Tensor& depth,
                               const at::Tensor& feat, const at::Tensor& ranks_depth,
                               const at::Tensor& ranks_feat, const at::Tensor& ranks_bev,
                               const at::Tensor& interval_starts,
                               const at::Tensor& interval_lengths, at::Tensor& grad_depth_acc,
                               at::Tensor& grad_feat_acc) {
  const at::cuda::OptionalCUDAGuard guard(depth.device());
  const int c = static_cast<int>(feat.size(4));
  const int n_intervals = static_cast<int>(interval_starts.numel());
  const int V = static_cast<int>(grad_out.size(2) * grad_out.size(3) * grad_out.size(4));
  if (n_intervals == 0 || c == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    bev_pool_bwd_kernel<scalar_t, acc_t>
        <<<num_blocks(static_cast<int64_t>(n_intervals) * 32), kThreads, 0, stream>>>(
            n_intervals, c, V, grad_out.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
            feat.data_ptr<scalar_t>(), ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(),
            ranks_bev.data_ptr<int>(), interval_starts.data_ptr<int>(),
            interval_lengths.data_ptr<int>(), grad_depth_acc.data_ptr<acc_t>(),
            grad_feat_acc.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace trackocc

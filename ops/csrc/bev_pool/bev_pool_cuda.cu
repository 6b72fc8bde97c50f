// BEVPoolv2 CUDA kernels (fp32 / fp16 / bf16 / fp64; accumulation in float or double).
//
// The output is channel-first (B, C, V), V = Z * Y * X, and a voxel rank is b * V + v.
// Both passes run one warp per interval, lanes over channels, and walk the interval's points
// 32 at a time: lane j loads point j's indices and depth, the loop over the 32 broadcasts
// them, and kUnroll points' feature rows are loaded before any is used. A point then costs
// a few shuffles instead of a chain of dependent global loads, which is what bounded the
// long intervals near the cameras (one thread per (channel, interval) walking its points).
// forward:     sums in registers (channels beyond kMaxChunks * 32 in further passes over the
//              points), summed in point order; the output is zero-filled before.
// backward:    the interval's output-gradient column is read once from the channel-first
//              (B, C, V) tensor (no transposed copy) and serves all its points; the depth
//              gradient of a point is a warp reduction (a plain store: ranks_depth is unique),
//              the feature gradient float atomics (like index_add in the reference, its
//              summation order is not deterministic). No sort, no host synchronisation.
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

constexpr unsigned kFull = 0xffffffffu;
// channels a lane keeps in registers: kMaxChunks * 32
constexpr int kMaxChunks = 4;
// points whose feature rows are loaded together
constexpr int kUnroll = 4;

template <typename scalar_t, typename acc_t>
__global__ void bev_pool_fwd_kernel(int n_intervals, int c, int V,
                                    const scalar_t* __restrict__ depth,
                                    const scalar_t* __restrict__ feat,
                                    const int* __restrict__ ranks_depth,
                                    const int* __restrict__ ranks_feat,
                                    const int* __restrict__ ranks_bev,
                                    const int* __restrict__ starts,
                                    const int* __restrict__ lengths, scalar_t* __restrict__ out) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (i >= n_intervals) return;  // uniform within a warp
  const int s = starts[i], e = s + lengths[i];
  const int r = ranks_bev[s], b = r / V;
  scalar_t* o = out + static_cast<int64_t>(b) * c * V + (r - b * V);  // channel k at o[k * V]
  for (int k0 = 0; k0 < c; k0 += 32 * kMaxChunks) {
    acc_t acc[kMaxChunks];
#pragma unroll
    for (int j = 0; j < kMaxChunks; ++j) acc[j] = 0;
    for (int pc = s; pc < e; pc += 32) {
      int rf = 0;
      acc_t d = 0;
      if (pc + lane < e) {
        rf = ranks_feat[pc + lane];
        d = static_cast<acc_t>(depth[ranks_depth[pc + lane]]);
      }
      const int cnt = min(32, e - pc);
      for (int q = 0; q < cnt; q += kUnroll) {
        const scalar_t* f[kUnroll];
        acc_t dq[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int src = q + u < cnt ? q + u : q;  // uniform
          f[u] = feat + static_cast<int64_t>(__shfl_sync(kFull, rf, src)) * c + k0;
          dq[u] = __shfl_sync(kFull, d, src);
        }
#pragma unroll
        for (int j = 0; j < kMaxChunks; ++j) {
          const int kk = lane + 32 * j;
          if (k0 + kk >= c) break;
          acc_t v[kUnroll];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u)
            v[u] = q + u < cnt ? static_cast<acc_t>(f[u][kk]) : acc_t(0);
#pragma unroll
          for (int u = 0; u < kUnroll; ++u)
            if (q + u < cnt) acc[j] += dq[u] * v[u];
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kMaxChunks; ++j) {
      const int k = k0 + lane + 32 * j;
      if (k < c) o[static_cast<int64_t>(k) * V] = static_cast<scalar_t>(acc[j]);
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void bev_pool_bwd_kernel(int n_intervals, int c, int V,
                                    const scalar_t* __restrict__ grad_out,
                                    const scalar_t* __restrict__ depth,
                                    const scalar_t* __restrict__ feat,
                                    const int* __restrict__ ranks_depth,
                                    const int* __restrict__ ranks_feat,
                                    const int* __restrict__ ranks_bev,
                                    const int* __restrict__ starts,
                                    const int* __restrict__ lengths,
                                    acc_t* __restrict__ grad_depth,
                                    acc_t* __restrict__ grad_feat) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (i >= n_intervals) return;  // uniform within a warp
  const int s = starts[i], e = s + lengths[i];
  const int r = ranks_bev[s], b = r / V;
  // channel k of the interval's voxel: g[k * V]; the first kMaxChunks * 32 in registers
  const scalar_t* g = grad_out + static_cast<int64_t>(b) * c * V + (r - b * V);
  acc_t gk[kMaxChunks];
#pragma unroll
  for (int j = 0; j < kMaxChunks; ++j) {
    const int k = lane + 32 * j;
    gk[j] = k < c ? static_cast<acc_t>(g[static_cast<int64_t>(k) * V]) : acc_t(0);
  }
  for (int pc = s; pc < e; pc += 32) {
    int rd = 0, rf = 0;
    acc_t d = 0;
    if (pc + lane < e) {
      rd = ranks_depth[pc + lane];
      rf = ranks_feat[pc + lane];
      d = static_cast<acc_t>(depth[rd]);
    }
    acc_t own = 0;  // the depth gradient of this lane's point
    const int cnt = min(32, e - pc);
    for (int q = 0; q < cnt; q += kUnroll) {
      int64_t f_off[kUnroll];
      acc_t dq[kUnroll], dot[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int src = q + u < cnt ? q + u : q;  // uniform
        f_off[u] = static_cast<int64_t>(__shfl_sync(kFull, rf, src)) * c;
        dq[u] = __shfl_sync(kFull, d, src);
        dot[u] = 0;
      }
#pragma unroll
      for (int j = 0; j < kMaxChunks; ++j) {
        const int k = lane + 32 * j;
        if (k >= c) break;
        acc_t fv[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
          fv[u] = q + u < cnt ? static_cast<acc_t>(feat[f_off[u] + k]) : acc_t(0);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          if (q + u >= cnt) continue;
          dot[u] += gk[j] * fv[u];
          atomicAdd(grad_feat + f_off[u] + k, dq[u] * gk[j]);
        }
      }
      for (int k = lane + 32 * kMaxChunks; k < c; k += 32) {
        const acc_t gv = static_cast<acc_t>(g[static_cast<int64_t>(k) * V]);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          if (q + u >= cnt) continue;
          dot[u] += gv * static_cast<acc_t>(feat[f_off[u] + k]);
          atomicAdd(grad_feat + f_off[u] + k, dq[u] * gv);
        }
      }
      // kUnroll warp reductions, interleaved
      for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) dot[u] += __shfl_xor_sync(kFull, dot[u], off);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        if (lane == q + u) own = dot[u];
    }
    if (pc + lane < e) grad_depth[rd] = own;
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
  if (n_intervals == 0 || c == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(),
                                  "bev_pool_v2_forward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    bev_pool_fwd_kernel<scalar_t, acc_t>
        <<<num_blocks(static_cast<int64_t>(n_intervals) * 32), kThreads, 0, stream>>>(
        n_intervals, c, V, depth.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(),
        ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(), ranks_bev.data_ptr<int>(),
        interval_starts.data_ptr<int>(), interval_lengths.data_ptr<int>(),
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

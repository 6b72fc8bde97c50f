// BEVPoolv2 CUDA kernels (fp32 / fp16 / bf16 / fp64; accumulation in float or double).
//
// The output is channel-first (B, C, V), V = Z * Y * X, and a voxel rank is b * V + v.
// forward:     two kernels and no zero fill of the output. 1. one thread per (interval,
//              4 channels) (C % 4 == 0, else per channel), channels fastest (a warp reads
//              whole feature rows as vectors), sums the interval into a compact (intervals, C)
//              buffer and maps the interval's voxel to it (voxel -> interval, -1 where empty);
//              2. a thread per 4 voxels x 4 channels writes every element of the channel-first
//              output once, zeros included, with vector stores. The occupied voxels are sparse
//              (13 % at the paper size, rarely neighbours), so scattered writes into a
//              zero-filled output touched almost every memory sector twice (measured with ncu:
//              2.3 M partial-sector writes after the 82 MB fill); now the output streams out
//              once. An empty interval (the padding of fixed-size ranks, a CUDA graph's
//              inputs across camera rigs) returns at once: it pools nothing.
// backward:    per interval, lanes over channels: the interval's output-gradient column is
//              read once from the channel-first (B, C, V) tensor (no transposed copy) and
//              serves all its points; the depth gradient of a point is a lane reduction (a
//              plain store: ranks_depth is unique), the feature gradient float atomics (like
//              index_add in the reference, its summation order is not deterministic). C % 4
//              == 0: 8 lanes of 4 channels per interval, 4 intervals per warp, vector loads
//              and (sm_90) vector atomics; else one warp per interval, a lane per channel. The
//              column's reads are scattered (one sector per channel), so the kernel waits on
//              them: 4 in flight per lane halved its time against a lane per channel (ncu).
//              No sort, no host synchronisation.
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <type_traits>

#include "bev_pool.h"

namespace trackocc {
namespace {

constexpr int kThreads = 256;

inline unsigned int num_blocks(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

template <typename T>
inline bool aligned4(const void* p) {  // 4-element vector access possible
  return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) == 0;
}

template <typename scalar_t>
struct alignas(4 * sizeof(scalar_t)) Vec4 {
  scalar_t x[4];
};

// one thread per (interval, VEC channels), channels fastest: VEC = 4 reads feature rows and
// writes sums rows as vectors (C % 4 == 0, aligned rows), VEC = 1 any C
template <typename scalar_t, typename acc_t, int VEC>
__global__ void bev_pool_fwd_sum_kernel(int n_intervals, int c, const scalar_t* __restrict__ depth,
                                        const scalar_t* __restrict__ feat,
                                        const int* __restrict__ ranks_depth,
                                        const int* __restrict__ ranks_feat,
                                        const int* __restrict__ ranks_bev,
                                        const int* __restrict__ starts,
                                        const int* __restrict__ lengths,
                                        scalar_t* __restrict__ sums,  // (n_intervals, c)
                                        int* __restrict__ voxel_map) {
  using Row = typename std::conditional<VEC == 4, Vec4<scalar_t>, scalar_t>::type;
  const int cv = c / VEC;  // threads per interval
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(n_intervals) * cv) return;
  const int i = static_cast<int>(idx / cv);
  const int k = static_cast<int>(idx - static_cast<int64_t>(i) * cv) * VEC;
  const int s = starts[i], e = s + lengths[i];
  // an empty interval (padding of fixed-size ranks) pools nothing and claims no voxel
  if (e <= s) return;
  acc_t sum[VEC] = {};
  for (int p = s; p < e; ++p) {
    const acc_t d = static_cast<acc_t>(depth[ranks_depth[p]]);
    const Row f = *reinterpret_cast<const Row*>(feat + static_cast<int64_t>(ranks_feat[p]) * c + k);
    const scalar_t* fx = reinterpret_cast<const scalar_t*>(&f);
#pragma unroll
    for (int kk = 0; kk < VEC; ++kk) sum[kk] += d * static_cast<acc_t>(fx[kk]);
  }
  Row out;
  scalar_t* ox = reinterpret_cast<scalar_t*>(&out);
#pragma unroll
  for (int kk = 0; kk < VEC; ++kk) ox[kk] = static_cast<scalar_t>(sum[kk]);
  *reinterpret_cast<Row*>(sums + static_cast<int64_t>(i) * c + k) = out;
  if (k == 0) voxel_map[ranks_bev[s]] = i;
}

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

// the vector path of the backward: kIntervalLanes lanes per interval, each holding 4 channels
// of every 32 (C % 4 == 0, 16-byte aligned feature rows), so a warp works on 4 intervals at
// once and each lane has 4 independent output-gradient loads in flight (the lane-per-channel
// kernel above waits on one scattered load per lane; the intervals are 1.4 points long on
// average, so that wait is most of its time); feature rows are read as vectors and their
// gradient added with vector atomics where the device has them (sm_90, float). 64 registers
// (4 blocks per SM): bounded to 40 (6 blocks) it spills and ran 8 % slower on an H200.
constexpr int kIntervalLanes = 8;

template <typename acc_t>
__device__ __forceinline__ void atomic_add4(acc_t* p, acc_t a, acc_t b, acc_t c, acc_t d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (std::is_same<acc_t, float>::value) {
    atomicAdd(reinterpret_cast<float4*>(p), make_float4(a, b, c, d));
    return;
  }
#endif
  atomicAdd(p, a);
  atomicAdd(p + 1, b);
  atomicAdd(p + 2, c);
  atomicAdd(p + 3, d);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, 4)
    bev_pool_bwd_vec4_kernel(int n_intervals, int c, int V, const scalar_t* __restrict__ grad_out,
                             const scalar_t* __restrict__ depth,
                             const scalar_t* __restrict__ feat,
                             const int* __restrict__ ranks_depth,
                             const int* __restrict__ ranks_feat,
                             const int* __restrict__ ranks_bev, const int* __restrict__ starts,
                             const int* __restrict__ lengths, acc_t* __restrict__ grad_depth,
                             acc_t* __restrict__ grad_feat) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t i = t / kIntervalLanes;
  if (i >= n_intervals) return;  // whole lane groups leave together
  const int lane = static_cast<int>(t % kIntervalLanes);
  const unsigned mask = 0xffu << (threadIdx.x & 31 & ~(kIntervalLanes - 1));
  const int s = starts[i], e = s + lengths[i];
  const int r = ranks_bev[s], b = r / V;
  const scalar_t* g = grad_out + static_cast<int64_t>(b) * c * V + (r - b * V);
  // the lane's first 4 channels of the interval's gradient column stay in registers; channels
  // past the first 32 are read again for each point
  const int k0 = 4 * lane;
  acc_t g0[4];
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    g0[kk] = k0 < c ? static_cast<acc_t>(g[static_cast<int64_t>(k0 + kk) * V]) : acc_t(0);
  for (int p = s; p < e; ++p) {
    const int rd = ranks_depth[p];
    const scalar_t* f = feat + static_cast<int64_t>(ranks_feat[p]) * c;
    acc_t* gf = grad_feat + static_cast<int64_t>(ranks_feat[p]) * c;
    const acc_t d = static_cast<acc_t>(depth[rd]);
    acc_t dot = 0;
    if (k0 < c) {
      const Vec4<scalar_t> fv = *reinterpret_cast<const Vec4<scalar_t>*>(f + k0);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) dot += g0[kk] * static_cast<acc_t>(fv.x[kk]);
      atomic_add4(gf + k0, d * g0[0], d * g0[1], d * g0[2], d * g0[3]);
    }
    for (int k = k0 + 32; k < c; k += 32) {
      const Vec4<scalar_t> fv = *reinterpret_cast<const Vec4<scalar_t>*>(f + k);
      acc_t gv[4];
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        gv[kk] = static_cast<acc_t>(g[static_cast<int64_t>(k + kk) * V]);
        dot += gv[kk] * static_cast<acc_t>(fv.x[kk]);
      }
      atomic_add4(gf + k, d * gv[0], d * gv[1], d * gv[2], d * gv[3]);
    }
    for (int off = kIntervalLanes / 2; off > 0; off >>= 1)
      dot += __shfl_xor_sync(mask, dot, off, kIntervalLanes);
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
    const bool vec4 = c % 4 == 0 && aligned4<scalar_t>(feat.data_ptr());
    auto sum = vec4 ? bev_pool_fwd_sum_kernel<scalar_t, acc_t, 4>
                    : bev_pool_fwd_sum_kernel<scalar_t, acc_t, 1>;
    sum<<<num_blocks(vec4 ? n / 4 : n), kThreads, 0, stream>>>(
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
    const bool vec4 = c % 4 == 0 && aligned4<scalar_t>(feat.data_ptr()) &&
                      aligned4<acc_t>(grad_feat_acc.data_ptr());
    // vector path: kIntervalLanes lanes per interval; else a warp per interval
    auto kernel = vec4 ? bev_pool_bwd_vec4_kernel<scalar_t, acc_t>
                       : bev_pool_bwd_kernel<scalar_t, acc_t>;
    const int64_t threads = static_cast<int64_t>(n_intervals) * (vec4 ? kIntervalLanes : 32);
    kernel<<<num_blocks(threads), kThreads, 0, stream>>>(
        n_intervals, c, V, grad_out.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
        feat.data_ptr<scalar_t>(), ranks_depth.data_ptr<int>(), ranks_feat.data_ptr<int>(),
        ranks_bev.data_ptr<int>(), interval_starts.data_ptr<int>(),
        interval_lengths.data_ptr<int>(), grad_depth_acc.data_ptr<acc_t>(),
        grad_feat_acc.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace trackocc

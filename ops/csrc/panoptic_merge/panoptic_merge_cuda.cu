// Panoptic merge statistics, CUDA (fp32 / fp16 / bf16 logits with float math, fp64 with double).
//
// One pass over the rows of the (P, N) logits that the call reads: all of them, or with
// skip_dropped only the kept ones (a block lists them in shared memory first, in order). A
// thread owns V neighbouring voxels (one 16-byte load per row where N and the row pointers
// allow, else V = 1) and walks the listed rows four at a time (four loads in flight), keeping
// its best weighted probability per voxel. Per-row own counts go through a warp sum and
// per-block shared counters, the won / kept counts through per-thread runs of equal winners;
// the block flushes its counters to global memory once. No host synchronisation.
//
// Bit-exactness with the PyTorch reference: torch computes sigmoid as 1 / (1 + expf(-x)) with
// libdevice's expf and IEEE arithmetic; the extension is compiled with --use_fast_math, which
// would turn expf into __expf, so libdevice's function is called by name and the _rn intrinsics
// keep the division and the product exact. (Fast math still flushes denormals: probabilities
// below 1.2e-38, i.e. logits below -87, count as 0 here.) Rows that are not kept only need
// prob >= 0.5: that is the logit's sign wherever |logit| > 1e-3 (the sigmoid there is 0.5 +-
// 2.5e-4, far from any rounding), and the exact sigmoid nearer 0.
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "panoptic_merge.h"

extern "C" __device__ float __nv_expf(float);

namespace trackocc {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsInFlight = 4;       // rows loaded before any is used
constexpr int kMaxBlocks = 4;          // row blocks per call (thing + stuff in practice)
constexpr int kMaxSharedPreds = 4096;  // shared: 3 counters + the row list per prediction
constexpr int kVectorBytes = 16;

template <typename scalar_t>
struct RowBlocks {
  const scalar_t* ptr[kMaxBlocks];
  int start[kMaxBlocks];  // first prediction of each block
  int count;
};

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

__device__ __forceinline__ float sigmoid_exact(float x) {
  return __fdiv_rn(1.0f, __fadd_rn(1.0f, __nv_expf(-x)));
}
__device__ __forceinline__ double sigmoid_exact(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float mul_exact(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_exact(double a, double b) { return __dmul_rn(a, b); }

// sigmoid_exact(x) >= 0.5 (false for NaN)
template <typename acc_t>
__device__ __forceinline__ bool own_of(acc_t x) {
  return fabs(x) > acc_t(1e-3) ? x > acc_t(0) : sigmoid_exact(x) >= acc_t(0.5);
}

template <typename scalar_t>
__device__ __forceinline__ const scalar_t* row_ptr(const RowBlocks<scalar_t>& blocks, int p,
                                                   int64_t num_voxels) {
  const scalar_t* base = blocks.ptr[0];
  int start = 0;
#pragma unroll
  for (int b = 1; b < kMaxBlocks; ++b) {
    if (b < blocks.count && p >= blocks.start[b]) {
      base = blocks.ptr[b];
      start = blocks.start[b];
    }
  }
  return base + static_cast<int64_t>(p - start) * num_voxels;
}

__device__ __forceinline__ int warp_sum(int x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __reduce_add_sync(0xffffffffu, x);
#else
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
#endif
}

// The V voxels of a thread, starting at voxel v0.
template <typename scalar_t, int V>
__device__ __forceinline__ Pack<scalar_t, V> load_voxels(const scalar_t* row, int64_t v0,
                                                         int64_t num_voxels, bool active) {
  Pack<scalar_t, V> x{};
  if constexpr (V > 1) {  // N % V == 0 and aligned rows: a whole 16-byte pack or nothing
    static_assert(sizeof(x) == kVectorBytes, "a pack is one 16-byte load");
    if (active) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(row + v0));
      memcpy(&x, &raw, sizeof(raw));
    }
  } else {
    x.v[0] = active && v0 < num_voxels ? row[v0] : scalar_t(0);
  }
  return x;
}

template <typename scalar_t, typename acc_t, int V>
__global__ void __launch_bounds__(kThreads)
    merge_stats_kernel(RowBlocks<scalar_t> blocks, int num_preds, int64_t num_voxels,
                       bool skip_dropped, const acc_t* __restrict__ scores,
                       const bool* __restrict__ keep, int64_t* __restrict__ winner,
                       bool* __restrict__ in_own, unsigned long long* __restrict__ own_area,
                       unsigned long long* __restrict__ won_area,
                       unsigned long long* __restrict__ kept_area) {
  extern __shared__ unsigned int shared[];  // own | won | kept counters, then the row list
  unsigned int* s_own = shared;
  unsigned int* s_won = shared + num_preds;
  unsigned int* s_kept = shared + 2 * num_preds;
  int* s_rows = reinterpret_cast<int*>(shared + 3 * num_preds);
  __shared__ int s_num_rows;
  for (int i = threadIdx.x; i < 3 * num_preds; i += blockDim.x) shared[i] = 0;
  const int lane = threadIdx.x & 31;
  if (threadIdx.x < 32) {  // the listed rows, in order: a ballot and prefix count per 32
    int listed = 0;
    for (int base = 0; base < num_preds; base += 32) {
      const int p = base + lane;
      const bool take = p < num_preds && (!skip_dropped || keep[p]);
      const unsigned int ballot = __ballot_sync(0xffffffffu, take);
      if (take) s_rows[listed + __popc(ballot & ((1u << lane) - 1u))] = p;
      listed += __popc(ballot);
    }
    if (lane == 0) s_num_rows = listed;
  }
  __syncthreads();
  const int num_rows = s_num_rows;

  const int64_t num_groups = (num_voxels + V - 1) / V;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // the loop bound is uniform per warp (the warp sums need all 32 lanes)
  for (int64_t g0 = static_cast<int64_t>(blockIdx.x) * blockDim.x; g0 < num_groups;
       g0 += stride) {
    const int64_t v0 = (g0 + threadIdx.x) * V;
    const bool active = g0 + threadIdx.x < num_groups;
    // skip_dropped: dropped rows count as empty masks (score * prob = -1, never own), so a
    // voxel no kept row claims goes to row 0, outside its own mask
    acc_t best[V];
    int best_p[V];
    bool best_own[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      best[j] = skip_dropped ? acc_t(-1) : -INFINITY;
      best_p[j] = 0;
      best_own[j] = false;
    }
    for (int i0 = 0; i0 < num_rows; i0 += kRowsInFlight) {
      Pack<scalar_t, V> x[kRowsInFlight];
#pragma unroll
      for (int k = 0; k < kRowsInFlight; ++k) {
        if (i0 + k < num_rows)
          x[k] = load_voxels<scalar_t, V>(row_ptr(blocks, s_rows[i0 + k], num_voxels), v0,
                                          num_voxels, active);
      }
#pragma unroll
      for (int k = 0; k < kRowsInFlight; ++k) {
        if (i0 + k >= num_rows) break;
        const int p = s_rows[i0 + k];
        const bool kept = keep[p];
        const acc_t score = scores[p];
        int own_count = 0;
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const acc_t logit = static_cast<acc_t>(x[k].v[j]);
          const bool in_range = active && (V > 1 || v0 + j < num_voxels);
          if (kept) {
            const acc_t prob = sigmoid_exact(logit);
            const bool own = in_range && prob >= acc_t(0.5);
            own_count += own;
            const acc_t w = mul_exact(prob, score);
            if (w > best[j]) {
              best[j] = w;
              best_p[j] = p;
              best_own[j] = own;
            }
          } else {
            const bool own = in_range && own_of(logit);
            own_count += own;
            if (acc_t(-1) > best[j]) {  // only the first row, when nothing is kept
              best[j] = acc_t(-1);
              best_p[j] = p;
              best_own[j] = own;
            }
          }
        }
        const int warp_count = warp_sum(own_count);
        if (lane == 0 && warp_count) atomicAdd(&s_own[p], static_cast<unsigned int>(warp_count));
      }
    }
    if (active) {
      Pack<int64_t, V> win;
      Pack<bool, V> own;
      int run_p = best_p[0];
      unsigned int run_won = 0, run_kept = 0;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        if (V == 1 && v0 + j >= num_voxels) break;
        win.v[j] = best_p[j];
        own.v[j] = best_own[j];
        if (best_p[j] != run_p) {  // neighbouring voxels mostly share their winner
          atomicAdd(&s_won[run_p], run_won);
          if (run_kept) atomicAdd(&s_kept[run_p], run_kept);
          run_p = best_p[j];
          run_won = run_kept = 0;
        }
        ++run_won;
        run_kept += best_own[j];
      }
      atomicAdd(&s_won[run_p], run_won);
      if (run_kept) atomicAdd(&s_kept[run_p], run_kept);
      if (V > 1) {
        *reinterpret_cast<Pack<int64_t, V>*>(winner + v0) = win;
        *reinterpret_cast<Pack<bool, V>*>(in_own + v0) = own;
      } else {
        winner[v0] = win.v[0];
        in_own[v0] = own.v[0];
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < num_preds; i += blockDim.x) {
    if (s_own[i]) atomicAdd(&own_area[i], static_cast<unsigned long long>(s_own[i]));
    if (s_won[i]) atomicAdd(&won_area[i], static_cast<unsigned long long>(s_won[i]));
    if (s_kept[i]) atomicAdd(&kept_area[i], static_cast<unsigned long long>(s_kept[i]));
  }
}

template <typename scalar_t, typename acc_t, int V>
void launch(const RowBlocks<scalar_t>& blocks, int num_preds, int64_t num_voxels,
            bool skip_dropped, const at::Tensor& scores, const at::Tensor& keep,
            at::Tensor& winner, at::Tensor& in_own, at::Tensor& own_area, at::Tensor& won_area,
            at::Tensor& kept_area, cudaStream_t stream) {
  const auto kernel = merge_stats_kernel<scalar_t, acc_t, V>;
  const size_t shared = 4 * static_cast<size_t>(num_preds) * sizeof(unsigned int);
  if (shared > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(shared)));
  }
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t needed = ((num_voxels + V - 1) / V + kThreads - 1) / kThreads;
  const unsigned int grid = static_cast<unsigned int>(std::min<int64_t>(needed, sms * 8));
  kernel<<<grid, kThreads, shared, stream>>>(
      blocks, num_preds, num_voxels, skip_dropped, scores.data_ptr<acc_t>(),
      keep.data_ptr<bool>(), winner.data_ptr<int64_t>(), in_own.data_ptr<bool>(),
      reinterpret_cast<unsigned long long*>(own_area.data_ptr<int64_t>()),
      reinterpret_cast<unsigned long long*>(won_area.data_ptr<int64_t>()),
      reinterpret_cast<unsigned long long*>(kept_area.data_ptr<int64_t>()));
}

}  // namespace

void panoptic_merge_stats_cuda(const std::vector<at::Tensor>& mask_blocks,
                               const at::Tensor& scores, const at::Tensor& keep,
                               bool skip_dropped, at::Tensor& winner, at::Tensor& in_own,
                               at::Tensor& own_area, at::Tensor& won_area,
                               at::Tensor& kept_area) {
  TORCH_CHECK(mask_blocks.size() <= static_cast<size_t>(kMaxBlocks),
              "panoptic_merge_stats: at most ", kMaxBlocks, " mask blocks on CUDA, got ",
              mask_blocks.size());
  const int64_t num_preds = scores.size(0);
  TORCH_CHECK(num_preds <= kMaxSharedPreds, "panoptic_merge_stats: at most ", kMaxSharedPreds,
              " predictions on CUDA, got ", num_preds);
  const int64_t num_voxels = mask_blocks[0].size(1);
  const at::cuda::CUDAGuard guard(mask_blocks[0].device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, mask_blocks[0].scalar_type(), "panoptic_merge_stats_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        constexpr int kV = kVectorBytes / sizeof(scalar_t);
        RowBlocks<scalar_t> blocks{};
        blocks.count = static_cast<int>(mask_blocks.size());
        bool packs = num_voxels % kV == 0;  // 16-byte loads need whole, aligned packs per row
        int start = 0;
        for (int b = 0; b < blocks.count; ++b) {
          blocks.ptr[b] = mask_blocks[b].data_ptr<scalar_t>();
          blocks.start[b] = start;
          start += static_cast<int>(mask_blocks[b].size(0));
          packs = packs && reinterpret_cast<uintptr_t>(blocks.ptr[b]) % kVectorBytes == 0;
        }
        packs = packs && reinterpret_cast<uintptr_t>(winner.data_ptr()) % (8 * kV) == 0 &&
                reinterpret_cast<uintptr_t>(in_own.data_ptr()) % kV == 0;
        const int P = static_cast<int>(num_preds);
        if (packs) {
          launch<scalar_t, acc_t, kV>(blocks, P, num_voxels, skip_dropped, scores, keep,
                                      winner, in_own, own_area, won_area, kept_area, stream);
        } else {
          launch<scalar_t, acc_t, 1>(blocks, P, num_voxels, skip_dropped, scores, keep,
                                     winner, in_own, own_area, won_area, kept_area, stream);
        }
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace trackocc

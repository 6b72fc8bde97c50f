// Panoptic merge statistics, CUDA (fp32 / fp16 / bf16 logits with float math, fp64 with double).
//
// One pass over the (P, N) logits: a thread owns a voxel and walks the P rows (a warp reads 32
// neighbouring voxels of a row, coalesced), keeping its best weighted probability. Per-row
// counts go through warp ballots and per-block shared-memory counters, flushed to global memory
// once per block. No host synchronisation.
//
// Bit-exactness with the PyTorch reference: torch computes sigmoid as 1 / (1 + expf(-x)) with
// libdevice's expf and IEEE arithmetic; the extension is compiled with --use_fast_math, which
// would turn expf into __expf, so libdevice's function is called by name and the _rn intrinsics
// keep the division and the product exact. (Fast math still flushes denormals: probabilities
// below 1.2e-38, i.e. logits below -87, count as 0 here.)
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "panoptic_merge.h"

extern "C" __device__ float __nv_expf(float);

namespace trackocc {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 4;         // row blocks per call (thing + stuff in practice)
constexpr int kMaxSharedPreds = 4096;  // 3 counters per prediction in shared memory

template <typename scalar_t>
struct RowBlocks {
  const scalar_t* ptr[kMaxBlocks];
  int rows[kMaxBlocks];
  int count;
};

__device__ __forceinline__ float sigmoid_exact(float x) {
  return __fdiv_rn(1.0f, __fadd_rn(1.0f, __nv_expf(-x)));
}
__device__ __forceinline__ double sigmoid_exact(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float mul_exact(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_exact(double a, double b) { return __dmul_rn(a, b); }

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    merge_stats_kernel(RowBlocks<scalar_t> blocks, int num_preds, int64_t num_voxels,
                       const acc_t* __restrict__ scores, const bool* __restrict__ keep,
                       int64_t* __restrict__ winner, bool* __restrict__ in_own,
                       unsigned long long* __restrict__ own_area,
                       unsigned long long* __restrict__ won_area,
                       unsigned long long* __restrict__ kept_area) {
  extern __shared__ unsigned int counters[];  // own | won | kept, num_preds each
  unsigned int* s_own = counters;
  unsigned int* s_won = counters + num_preds;
  unsigned int* s_kept = counters + 2 * num_preds;
  for (int i = threadIdx.x; i < 3 * num_preds; i += blockDim.x) counters[i] = 0;
  __syncthreads();

  const int lane = threadIdx.x & 31;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // the loop bound is uniform per warp (ballots need all 32 lanes)
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < num_voxels;
       base += stride) {
    const int64_t v = base + threadIdx.x;
    const bool active = v < num_voxels;
    acc_t best = -INFINITY;
    int best_p = 0;
    bool best_own = false;
    int p = 0;
    for (int b = 0; b < blocks.count; ++b) {
      const scalar_t* col = blocks.ptr[b] + (active ? v : 0);
      const int rows = blocks.rows[b];
#pragma unroll 4
      for (int r = 0; r < rows; ++r) {
        const acc_t prob =
            sigmoid_exact(static_cast<acc_t>(col[static_cast<int64_t>(r) * num_voxels]));
        const bool own = active && prob >= acc_t(0.5);
        const unsigned int ballot = __ballot_sync(0xffffffffu, own);
        if (lane == 0 && ballot) atomicAdd(&s_own[p + r], __popc(ballot));
        const acc_t w = keep[p + r] ? mul_exact(prob, scores[p + r]) : acc_t(-1);
        if (w > best) {
          best = w;
          best_p = p + r;
          best_own = own;
        }
      }
      p += rows;
    }
    if (active) {
      winner[v] = best_p;
      in_own[v] = best_own;
      atomicAdd(&s_won[best_p], 1u);
      if (best_own) atomicAdd(&s_kept[best_p], 1u);
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < num_preds; i += blockDim.x) {
    if (s_own[i]) atomicAdd(&own_area[i], static_cast<unsigned long long>(s_own[i]));
    if (s_won[i]) atomicAdd(&won_area[i], static_cast<unsigned long long>(s_won[i]));
    if (s_kept[i]) atomicAdd(&kept_area[i], static_cast<unsigned long long>(s_kept[i]));
  }
}

}  // namespace

void panoptic_merge_stats_cuda(const std::vector<at::Tensor>& mask_blocks,
                               const at::Tensor& scores, const at::Tensor& keep,
                               at::Tensor& winner, at::Tensor& in_own, at::Tensor& own_area,
                               at::Tensor& won_area, at::Tensor& kept_area) {
  TORCH_CHECK(mask_blocks.size() <= static_cast<size_t>(kMaxBlocks),
              "panoptic_merge_stats: at most ", kMaxBlocks, " mask blocks on CUDA, got ",
              mask_blocks.size());
  const int64_t num_preds = scores.size(0);
  TORCH_CHECK(num_preds <= kMaxSharedPreds, "panoptic_merge_stats: at most ", kMaxSharedPreds,
              " predictions on CUDA, got ", num_preds);
  const int64_t num_voxels = mask_blocks[0].size(1);
  const at::cuda::CUDAGuard guard(mask_blocks[0].device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t needed = (num_voxels + kThreads - 1) / kThreads;
  const unsigned int grid = static_cast<unsigned int>(std::min<int64_t>(needed, sms * 8));
  const size_t shared = 3 * num_preds * sizeof(unsigned int);

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, mask_blocks[0].scalar_type(), "panoptic_merge_stats_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        RowBlocks<scalar_t> blocks{};
        blocks.count = static_cast<int>(mask_blocks.size());
        for (int b = 0; b < blocks.count; ++b) {
          blocks.ptr[b] = mask_blocks[b].data_ptr<scalar_t>();
          blocks.rows[b] = static_cast<int>(mask_blocks[b].size(0));
        }
        merge_stats_kernel<scalar_t, acc_t><<<grid, kThreads, shared, stream>>>(
            blocks, static_cast<int>(num_preds), num_voxels, scores.data_ptr<acc_t>(),
            keep.data_ptr<bool>(), winner.data_ptr<int64_t>(), in_own.data_ptr<bool>(),
            reinterpret_cast<unsigned long long*>(own_area.data_ptr<int64_t>()),
            reinterpret_cast<unsigned long long*>(won_area.data_ptr<int64_t>()),
            reinterpret_cast<unsigned long long*>(kept_area.data_ptr<int64_t>()));
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace trackocc

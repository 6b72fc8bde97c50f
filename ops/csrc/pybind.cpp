// Python bindings of trackocc's custom ops (module trackocc._ext).
#include <torch/extension.h>

#include "bev_pool/bev_pool.h"
#include "msda_3d/msda_3d.h"
#include "panoptic_merge/panoptic_merge.h"

namespace trackocc {

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace trackocc

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("with_cuda", &trackocc::with_cuda, "whether CUDA kernels were compiled in");
  m.def("bev_pool_v2_forward", &trackocc::bev_pool_v2_forward,
        "BEVPoolv2 forward -> (B, C, Z, Y, X)", py::arg("depth"), py::arg("feat"),
        py::arg("ranks_depth"), py::arg("ranks_feat"), py::arg("ranks_bev"),
        py::arg("interval_starts"), py::arg("interval_lengths"), py::arg("out_shape"));
  m.def("bev_pool_v2_backward", &trackocc::bev_pool_v2_backward,
        "BEVPoolv2 backward -> [grad_depth, grad_feat]", py::arg("grad_out"), py::arg("depth"),
        py::arg("feat"), py::arg("ranks_depth"), py::arg("ranks_feat"), py::arg("ranks_bev"),
        py::arg("interval_starts"), py::arg("interval_lengths"), py::arg("feat_order"));
  m.def("ms_deform_attn_3d_forward", &trackocc::ms_deform_attn_3d_forward,
        "3D multi-scale deformable attention forward -> (B, Q, M*Dh)", py::arg("value"),
        py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"));
  m.def("ms_deform_attn_3d_backward", &trackocc::ms_deform_attn_3d_backward,
        "3D multi-scale deformable attention backward -> [grad_value, grad_loc, grad_attn]",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"),
        py::arg("sampling_locations"), py::arg("attention_weights"), py::arg("grad_output"));
  m.def("panoptic_merge_stats", &trackocc::panoptic_merge_stats,
        "panoptic merge statistics -> [winner, in_own, own_area, won_area, kept_area]",
        py::arg("mask_blocks"), py::arg("scores"), py::arg("keep"),
        py::arg("skip_dropped") = false);
}

// Python bindings of trackocc's custom ops (module trackocc._ext).
#include <torch/extension.h>

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
}

// Argument checks shared by the ops' CUDA, CPU and Meta implementations. Each failure raises ValueError
// (TORCH_CHECK_VALUE) naming the argument, what it got and what was expected. Sizes are read as SymInts
// so the same checks run while torch.compile traces with symbolic shapes.
#pragma once

#include <initializer_list>
#include <sstream>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace semvlp::checks {

// A seed or offset as the Meta twins see it: symbolic when torch.compile traces a call whose dropout seeds are
// drawn inside the graph. Its range is checked where the op runs; 0 (a valid value) stands in while tracing.
inline int64_t traced_value(const c10::SymInt& v) { return v.maybe_as_int().value_or(0); }

inline std::string describe(const at::Tensor& t) {
  std::ostringstream s;
  s << "shape " << t.sym_sizes() << ", dtype " << t.scalar_type() << ", device " << t.device();
  return s.str();
}

inline void dims(const at::Tensor& t, const char* name, int64_t ndim) {
  TORCH_CHECK_VALUE(t.dim() == ndim, name, ": expected a ", ndim, "-d tensor, got ", describe(t));
}

inline void dtype_in(const at::Tensor& t, const char* name, std::initializer_list<at::ScalarType> allowed) {
  for (const at::ScalarType dtype : allowed) {
    if (t.scalar_type() == dtype) return;
  }
  std::ostringstream s;
  const char* sep = "";
  for (const at::ScalarType dtype : allowed) {
    s << sep << dtype;
    sep = ", ";
  }
  TORCH_CHECK_VALUE(false, name, ": expected dtype in (", s.str(), "), got ", t.scalar_type());
}

inline void same_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK_VALUE(t.scalar_type() == ref.scalar_type(), name, ": expected the dtype of ", ref_name, " (",
                    ref.scalar_type(), "), got ", t.scalar_type());
}

inline void same_device(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, ": expected the device of ", ref_name, " (", ref.device(),
                    "), got ", t.device());
}

// Dimension `dim` of t has the size `expected` (`what` says what that size means).
inline void size_is(const at::Tensor& t, const char* name, int64_t dim, const c10::SymInt& expected, const char* what) {
  TORCH_CHECK_VALUE(t.sym_size(dim) == expected, name, ": dim ", dim, " (", what, ") is ", t.sym_size(dim),
                    ", expected ", expected, "; got ", describe(t));
}

inline void same_shape(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK_VALUE(t.sym_sizes() == ref.sym_sizes(), name, ": expected the shape of ", ref_name, " ",
                    ref.sym_sizes(), ", got ", t.sym_sizes());
}

// The kernels run on the GPU only; a CPU tensor gets this error after the shape and dtype checks passed.
inline void on_cuda(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), op, ": ", name, ": expected a CUDA tensor, got device ", t.device(),
                    " (the semvlp CUDA kernels run on the GPU only; use backend=\"reference\" or \"sdpa\" on the CPU)");
}

}  // namespace semvlp::checks

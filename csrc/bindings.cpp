// The one binding file of semvlp._C: schemas of every op in the `semvlp` namespace (prefixed cuda_, next to
// the Triton backend's ops in the same namespace) and their CUDA, Meta and CPU implementations.
// `import semvlp._C` (only from semvlp/_ext.py) loads the library and so runs these registrations.
#include <Python.h>

#include <cuda_runtime_api.h>
#include <torch/library.h>

#include "attention/attention.h"
#include "attention/attention_params.h"
#include "layer_norm/layer_norm.h"
#include "philox/philox_cpu.h"

// FRAGMENT: the namespace is shared with ops registered from Python (torch.library.custom_op).
TORCH_LIBRARY_FRAGMENT(semvlp, m) {
  m.def(
      "cuda_varlen_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
      "int max_seqlen_q, int max_seqlen_k, float softmax_scale, bool causal, float dropout_p, SymInt seed, "
      "SymInt offset, bool return_dropout_mask) -> (Tensor out, Tensor lse, Tensor dropout_mask)");
  m.def(
      "cuda_varlen_attention_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q, int max_seqlen_k, float softmax_scale, "
      "bool causal, float dropout_p, SymInt seed, SymInt offset) -> (Tensor dq, Tensor dk, Tensor dv)");
  m.def(
      "cuda_add_layer_norm_fwd(Tensor x, Tensor? residual, Tensor? weight, Tensor? bias, Tensor? x_bias, "
      "float dropout_p, float eps, SymInt seed, SymInt offset, bool store_prenorm_sum, bool return_dropout_mask) -> "
      "(Tensor out, Tensor prenorm_sum, Tensor rstd, Tensor dropout_mask)");
  m.def(
      "cuda_add_layer_norm_bwd(Tensor dout, Tensor? dprenorm_sum, Tensor prenorm_sum, Tensor? weight, Tensor rstd, "
      "float dropout_p, SymInt seed, SymInt offset, bool has_residual, bool has_bias, bool has_x_bias) -> "
      "(Tensor dx, Tensor dresidual, Tensor dweight, Tensor dbias, Tensor dx_bias)");
  m.def("cuda_philox_uniform_cpu(int seed, int offset, Tensor c0, Tensor c1) -> Tensor");
}

TORCH_LIBRARY_IMPL(semvlp, CUDA, m) {
  m.impl("cuda_varlen_attention_fwd", &semvlp::varlen_attention_fwd_cuda);
  m.impl("cuda_varlen_attention_bwd", &semvlp::varlen_attention_bwd_cuda);
  m.impl("cuda_add_layer_norm_fwd", &semvlp::add_layer_norm_fwd_cuda);
  m.impl("cuda_add_layer_norm_bwd", &semvlp::add_layer_norm_bwd_cuda);
}

TORCH_LIBRARY_IMPL(semvlp, Meta, m) {
  m.impl("cuda_varlen_attention_fwd", &semvlp::varlen_attention_fwd_meta);
  m.impl("cuda_varlen_attention_bwd", &semvlp::varlen_attention_bwd_meta);
  m.impl("cuda_add_layer_norm_fwd", &semvlp::add_layer_norm_fwd_meta);
  m.impl("cuda_add_layer_norm_bwd", &semvlp::add_layer_norm_bwd_meta);
}

// On CPU tensors the ops check their arguments (so shape/dtype errors are testable without a GPU) and then
// raise a ValueError saying the kernels need CUDA tensors.
TORCH_LIBRARY_IMPL(semvlp, CPU, m) {
  m.impl("cuda_varlen_attention_fwd", &semvlp::varlen_attention_fwd_cpu);
  m.impl("cuda_varlen_attention_bwd", &semvlp::varlen_attention_bwd_cpu);
  m.impl("cuda_add_layer_norm_fwd", &semvlp::add_layer_norm_fwd_cpu);
  m.impl("cuda_add_layer_norm_bwd", &semvlp::add_layer_norm_bwd_cpu);
  m.impl("cuda_philox_uniform_cpu", &semvlp::philox_uniform_cpu);
}

namespace {

// semvlp._C.kernel_image_error() -> None, or the CUDA error of looking up a kernel on the current GPU.
PyObject* kernel_image_error(PyObject*, PyObject*) {
  const int err = semvlp::kernel_image_error();
  if (err == 0) Py_RETURN_NONE;
  return PyUnicode_FromString(cudaGetErrorString(static_cast<cudaError_t>(err)));
}

PyMethodDef methods[] = {
    {"kernel_image_error", kernel_image_error, METH_NOARGS, "None, or why the kernels cannot run on this GPU."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "semvlp CUDA kernels, registered as torch.ops.semvlp.cuda_*",
                      -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }

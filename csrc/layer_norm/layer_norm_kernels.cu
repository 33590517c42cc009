// add_layer_norm kernels for fp32, fp16 and bf16, and their launches.
#include <cuda_runtime.h>

#include "layer_norm_kernel.cuh"
#include "layer_norm_params.h"

namespace semvlp {

namespace {

template <typename Kernel>
int launch(Kernel kernel, int blocks, const LayerNormParams& params, void* stream) {
  kernel<<<blocks, layer_norm_threads(params.hidden), kLayerNormSmemBytes, static_cast<cudaStream_t>(stream)>>>(
      params);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int launch_add_layer_norm_fwd(const LayerNormParams& params, void* stream) {
  switch (params.dtype) {
    case LayerNormDtype::kFloat32: return launch(add_layer_norm_fwd_kernel<float>, params.rows, params, stream);
    case LayerNormDtype::kFloat16: return launch(add_layer_norm_fwd_kernel<__half>, params.rows, params, stream);
    case LayerNormDtype::kBFloat16:
      return launch(add_layer_norm_fwd_kernel<__nv_bfloat16>, params.rows, params, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

// Enough blocks to fill the GPU a few times over, never more than there are rows.
int add_layer_norm_bwd_blocks(int rows) {
  int device = 0;
  int sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    sms = 132;
  }
  const int blocks = 4 * sms;
  return rows < blocks ? rows : blocks;
}

int launch_add_layer_norm_bwd(const LayerNormParams& params, int blocks, void* stream) {
  switch (params.dtype) {
    case LayerNormDtype::kFloat32: return launch(add_layer_norm_bwd_kernel<float>, blocks, params, stream);
    case LayerNormDtype::kFloat16: return launch(add_layer_norm_bwd_kernel<__half>, blocks, params, stream);
    case LayerNormDtype::kBFloat16: return launch(add_layer_norm_bwd_kernel<__nv_bfloat16>, blocks, params, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace semvlp

// Kernel launches for one head dim; included by the attention_{fwd,bwd}_hdim*.cu translation units, which
// are split per head dim and direction so that a parallel build compiles them side by side.
#pragma once

#include <cuda_runtime.h>

#include "attention_bwd_kernel.cuh"
#include "attention_fwd_kernel.cuh"
#include "attention_params.h"

namespace semvlp {

// Returns the CUDA error of the launch (cudaSuccess = 0), checked by the ATen launcher.
template <typename Kernel>
int launch_attention_kernel(Kernel kernel, LaunchGrid grid, int smem_bytes, const AttentionParams& params,
                            void* stream) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return 0;  // nothing to do (no query rows or no keys)
  if (smem_bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
    if (err != cudaSuccess) return static_cast<int>(err);
  }
  kernel<<<dim3(grid.x, grid.y, grid.z), kAttentionThreads, smem_bytes, static_cast<cudaStream_t>(stream)>>>(params);
  return static_cast<int>(cudaGetLastError());
}

template <int kHeadDim>
int launch_attention_fwd(const AttentionParams& params, void* stream) {
  const int smem = attention_fwd_smem_bytes(kHeadDim);
  const LaunchGrid grid = attention_fwd_grid(params);
  if (params.dtype == AttentionDtype::kFloat16)
    return launch_attention_kernel(varlen_attention_fwd_kernel<__half, kHeadDim>, grid, smem, params, stream);
  return launch_attention_kernel(varlen_attention_fwd_kernel<__nv_bfloat16, kHeadDim>, grid, smem, params, stream);
}

template <typename T, int kHeadDim>
int launch_attention_bwd_typed(const AttentionParams& params, void* stream) {
  const int err = launch_attention_kernel(varlen_attention_delta_kernel<T, kHeadDim>, attention_delta_grid(params),
                                          0, params, stream);
  if (err != 0) return err;
  return launch_attention_kernel(varlen_attention_bwd_kernel<T, kHeadDim>, attention_bwd_grid(params),
                                 attention_bwd_smem_bytes(kHeadDim), params, stream);
}

template <int kHeadDim>
int launch_attention_bwd(const AttentionParams& params, void* stream) {
  if (params.dtype == AttentionDtype::kFloat16) return launch_attention_bwd_typed<__half, kHeadDim>(params, stream);
  return launch_attention_bwd_typed<__nv_bfloat16, kHeadDim>(params, stream);
}

}  // namespace semvlp

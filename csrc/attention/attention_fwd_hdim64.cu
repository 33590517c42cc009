// Attention fwd kernels for head dim 64 (fp16 and bf16).
#include "attention_launch.cuh"

namespace semvlp {

int launch_attention_fwd_hdim64(const AttentionParams& params, void* stream) {
  return launch_attention_fwd<64>(params, stream);
}

int kernel_image_error() {
  cudaFuncAttributes attributes;
  return static_cast<int>(cudaFuncGetAttributes(&attributes, varlen_attention_fwd_kernel<__half, 64>));
}

}  // namespace semvlp

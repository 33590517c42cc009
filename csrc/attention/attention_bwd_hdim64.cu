// Attention bwd kernels for head dim 64 (fp16 and bf16).
#include "attention_launch.cuh"

namespace semvlp {

int launch_attention_bwd_hdim64(const AttentionParams& params, void* stream) {
  return launch_attention_bwd<64>(params, stream);
}

}  // namespace semvlp

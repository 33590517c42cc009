// Attention fwd kernels for head dim 32 (fp16 and bf16).
#include "attention_launch.cuh"

namespace semvlp {

int launch_attention_fwd_hdim32(const AttentionParams& params, void* stream) {
  return launch_attention_fwd<32>(params, stream);
}

}  // namespace semvlp

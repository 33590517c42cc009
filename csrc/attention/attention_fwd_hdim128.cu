// Attention fwd kernels for head dim 128 (fp16 and bf16).
#include "attention_launch.cuh"

namespace semvlp {

int launch_attention_fwd_hdim128(const AttentionParams& params, void* stream) {
  return launch_attention_fwd<128>(params, stream);
}

}  // namespace semvlp

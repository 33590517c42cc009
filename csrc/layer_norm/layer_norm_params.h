// Plain-data description of one add_layer_norm call, shared by the ATen launcher (layer_norm.cpp), the
// kernel translation unit and the CPU emulator. No CUDA or ATen types.
#pragma once

#include <cstdint>

namespace semvlp {

enum class LayerNormDtype { kFloat32, kFloat16, kBFloat16 };

// out = LayerNorm(residual + dropout(x + x_bias)) over rows of `hidden` contiguous elements.
struct LayerNormParams {
  // Forward inputs: x and residual (rows, hidden) of the element type; residual may be null (plain
  // LayerNorm). weight, bias, x_bias: (hidden,) fp32 or null.
  const void* x;
  const void* residual;
  const float* weight;
  const float* bias;
  const float* x_bias;

  // Forward outputs: out (rows, hidden); prenorm_sum (rows, hidden) = residual + dropout(x + x_bias), or null
  // when not needed; rstd (rows,) fp32, 1/sqrt(var + eps); dropout_mask (rows, hidden) uint8 debug output or null.
  void* out;
  void* prenorm_sum;
  float* rstd;
  uint8_t* dropout_mask;

  // Backward: dout (rows, hidden); dprenorm_sum (gradient of the prenorm_sum output) or null; prenorm_sum
  // as saved by the forward (read through `prenorm_sum` above); dx and dresidual (null without residual);
  // per-block partial sums (grid, hidden) fp32 of dweight, dbias, dx_bias, each null when not wanted.
  const void* dout;
  const void* dprenorm_sum;
  void* dx;
  void* dresidual;
  float* dweight_partial;
  float* dbias_partial;
  float* dx_bias_partial;

  int rows;
  int hidden;
  float eps;
  float dropout_p;  // 0 = no dropout
  uint64_t seed;
  uint32_t offset;
  LayerNormDtype dtype;
};

// One block per row (forward) or per group of rows (backward); each thread holds up to 8 columns.
constexpr int kLayerNormColumnsPerThread = 8;
constexpr int kLayerNormMaxHidden = 1024 * kLayerNormColumnsPerThread;

// Smallest block of 128..1024 threads that covers `hidden` with 8 columns per thread.
inline int layer_norm_threads(int hidden) {
  int threads = 128;
  while (threads * kLayerNormColumnsPerThread < hidden && threads < 1024) threads *= 2;
  return threads;
}

// Dynamic shared memory of both kernels: one float per warp for block reductions.
constexpr int kLayerNormSmemBytes = 32 * 4;

// Launch entry points (layer_norm_kernels.cu); each returns the CUDA error code of its launch (0 = success).
int launch_add_layer_norm_fwd(const LayerNormParams& params, void* stream);
// The backward's grid size, fixed before the launch so the caller can allocate the partial sums.
int add_layer_norm_bwd_blocks(int rows);
int launch_add_layer_norm_bwd(const LayerNormParams& params, int blocks, void* stream);

}  // namespace semvlp

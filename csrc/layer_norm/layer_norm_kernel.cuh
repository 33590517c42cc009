// Fused add + LayerNorm, forward and backward:
//   h = x + x_bias; s = residual + dropout(h); out = (s - mean(s)) * rstd(s) * weight + bias.
// The forward runs one block per row with the row in registers (8 columns per thread, column c handled
// by thread c % blockDim); statistics are in fp32 with a two-pass variance. The backward runs a grid of
// blocks that loop over rows, so each thread keeps its columns' dweight/dbias/dx_bias partial sums in
// registers and writes them once; the caller sums the (blocks, hidden) partials.
#pragma once

#include <cmath>

#include "../common/device.cuh"
#include "../common/philox.h"
#include "layer_norm_params.h"

namespace semvlp {

// Sum over the block; every thread gets the same value. `scratch` holds one float per warp.
SEMVLP_DEVICE float block_sum(float value, float* scratch) {
#pragma unroll
  for (int mask = 16; mask > 0; mask /= 2) value += shfl_xor(value, mask);
  const int warp = threadIdx.x / 32;
  const int warps = blockDim.x / 32;
  block_sync();  // the previous call's readers are done with scratch
  if (threadIdx.x % 32 == 0) st_shared_f32(scratch + warp, value);
  block_sync();
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += ld_shared_f32(scratch + w);
  return total;
}

template <typename T>
__global__ void __launch_bounds__(1024) add_layer_norm_fwd_kernel(const LayerNormParams params) {
  constexpr int kCols = kLayerNormColumnsPerThread;
  SEMVLP_DYNAMIC_SMEM(smem_raw);
  float* scratch = reinterpret_cast<float*>(smem_raw);
  const int row = blockIdx.x;
  const int tid = threadIdx.x;
  const int threads = blockDim.x;
  const int hidden = params.hidden;
  const int64_t base = static_cast<int64_t>(row) * hidden;
  const T* x = static_cast<const T*>(params.x) + base;
  const T* residual = params.residual ? static_cast<const T*>(params.residual) + base : nullptr;
  const bool dropout = params.dropout_p > 0.f;
  const float dropout_scale = dropout ? 1.f / (1.f - params.dropout_p) : 1.f;

  float s[kCols];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kCols; ++i) {
    const int c = tid + i * threads;
    s[i] = 0.f;
    if (c >= hidden) continue;
    float h = to_float(x[c]);
    if (params.x_bias) h += params.x_bias[c];
    if (dropout) {
      const bool keep = dropout_keep(params.seed, params.offset, static_cast<uint32_t>(c), static_cast<uint32_t>(row),
                                     params.dropout_p);
      if (params.dropout_mask) params.dropout_mask[base + c] = keep ? 1 : 0;
      h = keep ? h * dropout_scale : 0.f;
    }
    if (residual) h += to_float(residual[c]);
    s[i] = h;
    sum += h;
  }
  const float mean = block_sum(sum, scratch) / hidden;
  float squares = 0.f;
#pragma unroll
  for (int i = 0; i < kCols; ++i) {
    const int c = tid + i * threads;
    if (c < hidden) squares += (s[i] - mean) * (s[i] - mean);
  }
  const float rstd = rsqrtf(block_sum(squares, scratch) / hidden + params.eps);

  T* out = static_cast<T*>(params.out) + base;
  T* prenorm_sum = params.prenorm_sum ? static_cast<T*>(params.prenorm_sum) + base : nullptr;
#pragma unroll
  for (int i = 0; i < kCols; ++i) {
    const int c = tid + i * threads;
    if (c >= hidden) continue;
    float y = (s[i] - mean) * rstd;
    if (params.weight) y *= params.weight[c];
    if (params.bias) y += params.bias[c];
    out[c] = from_float<T>(y);
    if (prenorm_sum) prenorm_sum[c] = from_float<T>(s[i]);
  }
  if (tid == 0) params.rstd[row] = rstd;
}

template <typename T>
__global__ void __launch_bounds__(1024) add_layer_norm_bwd_kernel(const LayerNormParams params) {
  constexpr int kCols = kLayerNormColumnsPerThread;
  SEMVLP_DYNAMIC_SMEM(smem_raw);
  float* scratch = reinterpret_cast<float*>(smem_raw);
  const int tid = threadIdx.x;
  const int threads = blockDim.x;
  const int hidden = params.hidden;
  const bool dropout = params.dropout_p > 0.f;
  const float dropout_scale = dropout ? 1.f / (1.f - params.dropout_p) : 1.f;

  float dweight[kCols], dbias[kCols], dx_bias[kCols];
#pragma unroll
  for (int i = 0; i < kCols; ++i) dweight[i] = dbias[i] = dx_bias[i] = 0.f;

  for (int row = blockIdx.x; row < params.rows; row += gridDim.x) {
    const int64_t base = static_cast<int64_t>(row) * hidden;
    const T* s = static_cast<const T*>(params.prenorm_sum) + base;
    const T* dout = static_cast<const T*>(params.dout) + base;
    // The mean is recomputed from the saved (possibly 16-bit) sum so x-hat sums to zero over the row; with
    // the forward's fp32 mean, the sum's rounding times rstd (up to 1/sqrt(eps)) would leak into dx.
    float saved[kCols];
    float row_sum = 0.f;
#pragma unroll
    for (int i = 0; i < kCols; ++i) {
      const int c = tid + i * threads;
      saved[i] = c < hidden ? to_float(s[c]) : 0.f;
      row_sum += saved[i];
    }
    const float mean = block_sum(row_sum, scratch) / hidden;
    const float rstd = params.rstd[row];
    float xhat[kCols], g[kCols];
    float sum_g = 0.f, sum_g_xhat = 0.f;
#pragma unroll
    for (int i = 0; i < kCols; ++i) {
      const int c = tid + i * threads;
      xhat[i] = g[i] = 0.f;
      if (c >= hidden) continue;
      const float dy = to_float(dout[c]);
      xhat[i] = (saved[i] - mean) * rstd;
      g[i] = params.weight ? dy * params.weight[c] : dy;
      dweight[i] += dy * xhat[i];
      dbias[i] += dy;
      sum_g += g[i];
      sum_g_xhat += g[i] * xhat[i];
    }
    const float mean_g = block_sum(sum_g, scratch) / hidden;
    const float mean_g_xhat = block_sum(sum_g_xhat, scratch) / hidden;
    const T* dprenorm = params.dprenorm_sum ? static_cast<const T*>(params.dprenorm_sum) + base : nullptr;
    T* dx = static_cast<T*>(params.dx) + base;
    T* dresidual = params.dresidual ? static_cast<T*>(params.dresidual) + base : nullptr;
#pragma unroll
    for (int i = 0; i < kCols; ++i) {
      const int c = tid + i * threads;
      if (c >= hidden) continue;
      float ds = rstd * (g[i] - mean_g - xhat[i] * mean_g_xhat);
      if (dprenorm) ds += to_float(dprenorm[c]);
      if (dresidual) dresidual[c] = from_float<T>(ds);
      float dh = ds;
      if (dropout) {
        const bool keep = dropout_keep(params.seed, params.offset, static_cast<uint32_t>(c), static_cast<uint32_t>(row),
                                       params.dropout_p);
        dh = keep ? ds * dropout_scale : 0.f;
      }
      dx[c] = from_float<T>(dh);
      dx_bias[i] += dh;
    }
  }

  const int64_t partial = static_cast<int64_t>(blockIdx.x) * hidden;
#pragma unroll
  for (int i = 0; i < kCols; ++i) {
    const int c = tid + i * threads;
    if (c >= hidden) continue;
    if (params.dweight_partial) params.dweight_partial[partial + c] = dweight[i];
    if (params.dbias_partial) params.dbias_partial[partial + c] = dbias[i];
    if (params.dx_bias_partial) params.dx_bias_partial[partial + c] = dx_bias[i];
  }
}

}  // namespace semvlp

// Forward of packed (varlen) attention for short sequences, on tensor cores.
//
// One block of 4 warps per (segment, head, 64 query rows); each warp owns 16 query rows and keeps them in
// registers as mma A fragments. Keys and values stream through shared memory in tiles of 64 (one to eight
// tiles under the 512-key cap; at vision-language lengths one to three), with an online softmax in fp32.
// S = Q K^T and O += P V both use mma.sync m16n8k16 with fp32 accumulation.
#pragma once

#include <cmath>

#include "../common/device.cuh"
#include "../common/philox.h"
#include "attention_params.h"

namespace semvlp {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Copies rows [row0, row0 + 64) of a (rows, kHeadDim) slab into a padded shared-memory tile with cp.async;
// rows >= valid_rows are zero-filled without reading global memory (row0 < valid_rows is not required,
// but `gmem` must point at a readable row 0).
template <typename T, int kHeadDim>
SEMVLP_DEVICE void load_tile_async(T* smem, const T* gmem, int64_t row_stride, int row0, int valid_rows,
                                   int tid) {
  constexpr int kChunksPerRow = kHeadDim / 8;  // 16-byte chunks
  constexpr int kStride = kHeadDim + kAttentionSmemPad;
#pragma unroll
  for (int chunk = tid; chunk < kAttentionTile * kChunksPerRow; chunk += kAttentionThreads) {
    const int r = chunk / kChunksPerRow;
    const int col = (chunk % kChunksPerRow) * 8;
    const bool valid = row0 + r < valid_rows;
    const T* src = valid ? gmem + static_cast<int64_t>(row0 + r) * row_stride + col : gmem;
    cp_async_16(smem + r * kStride + col, src, valid ? 16 : 0);
  }
}

// Reads q (total_q, nheads, head_dim), k and v (total_k, nheads, head_dim) through the strides in `params`;
// writes out (total_q, nheads, head_dim), lse (nheads, total_q) and, when asked, the dropout mask.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kAttentionThreads) varlen_attention_fwd_kernel(const AttentionParams params) {
  constexpr int kTile = kAttentionTile;
  constexpr int kStride = kHeadDim + kAttentionSmemPad;
  constexpr int kDimSteps = kHeadDim / 16;   // k16 steps of Q K^T
  constexpr int kDimBlocks = kHeadDim / 8;   // n8 blocks of O
  constexpr int kKeyBlocks = kTile / 8;      // n8 blocks of S

  const int seg = blockIdx.x;
  const int head = blockIdx.y;
  const int m0 = blockIdx.z * kTile;
  const int q_start = params.cu_seqlens_q[seg];
  const int len_q = params.cu_seqlens_q[seg + 1] - q_start;
  const int k_start = params.cu_seqlens_k[seg];
  const int len_k = params.cu_seqlens_k[seg + 1] - k_start;
  if (m0 >= len_q) return;

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4;  // fragment row group
  const int t = lane % 4;  // fragment column pair

  // Bottom-right aligned causal rule: query i sees key j iff j <= i + causal_shift.
  const int causal_shift = len_k - len_q;
  const int n_end = params.causal ? imax(0, imin(len_k, m0 + kTile + causal_shift)) : len_k;
  const int n_tiles = (n_end + kTile - 1) / kTile;

  T* out = static_cast<T*>(params.out) + static_cast<int64_t>(q_start) * params.out_row_stride +
           static_cast<int64_t>(head) * params.out_head_stride;
  float* lse = params.lse + static_cast<int64_t>(head) * params.total_q + q_start;

  if (n_tiles == 0) {
    // No key for any row of this block (empty key segment or causal): zero output, lse = +inf.
    for (int idx = tid; idx < kTile * kHeadDim / 2; idx += kAttentionThreads) {
      const int r = idx / (kHeadDim / 2);
      const int col = (idx % (kHeadDim / 2)) * 2;
      if (m0 + r < len_q) st_global_u32(out + static_cast<int64_t>(m0 + r) * params.out_row_stride + col, 0u);
    }
    if (tid < kTile && m0 + tid < len_q) lse[m0 + tid] = INFINITY;
    return;
  }

  SEMVLP_DYNAMIC_SMEM(smem_raw);
  T* s_q = reinterpret_cast<T*>(smem_raw);
  T* s_k = s_q + kTile * kStride;
  T* s_v = s_k + kTile * kStride;

  const T* q = static_cast<const T*>(params.q) + static_cast<int64_t>(q_start) * params.q_row_stride +
               static_cast<int64_t>(head) * params.q_head_stride;
  const T* k = static_cast<const T*>(params.k) + static_cast<int64_t>(k_start) * params.k_row_stride +
               static_cast<int64_t>(head) * params.k_head_stride;
  const T* v = static_cast<const T*>(params.v) + static_cast<int64_t>(k_start) * params.v_row_stride +
               static_cast<int64_t>(head) * params.v_head_stride;

  // Groups in flight: {Q, K0}, then {V0}; each iteration waits for K, then for V.
  load_tile_async<T, kHeadDim>(s_q, q, params.q_row_stride, m0, len_q, tid);
  load_tile_async<T, kHeadDim>(s_k, k, params.k_row_stride, 0, len_k, tid);
  cp_async_commit();
  load_tile_async<T, kHeadDim>(s_v, v, params.v_row_stride, 0, len_k, tid);
  cp_async_commit();

  const float scale_log2 = params.softmax_scale * kLog2e;
  const bool dropout = params.dropout_p > 0.f;
  const uint32_t rng_c1 = static_cast<uint32_t>(seg * params.nheads + head);
  const int row_in_block[2] = {warp * 16 + g, warp * 16 + g + 8};

  uint32_t q_frag[kDimSteps][4];
  float o[kDimBlocks][4];
#pragma unroll
  for (int db = 0; db < kDimBlocks; ++db) o[db][0] = o[db][1] = o[db][2] = o[db][3] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};  // partial over this thread's columns until the end

  for (int n_tile = 0; n_tile < n_tiles; ++n_tile) {
    const int n0 = n_tile * kTile;
    const bool has_next = n_tile + 1 < n_tiles;
    cp_async_wait<1>();
    block_sync();
    if (n_tile == 0) {
#pragma unroll
      for (int kk = 0; kk < kDimSteps; ++kk)
        ldmatrix_x4(q_frag[kk], s_q + (warp * 16 + lane % 16) * kStride + kk * 16 + (lane / 16) * 8);
    }

    // S = Q K^T: 16 rows x 64 keys per warp. ldmatrix x4 on K rows gives the B fragments of two n8 blocks.
    float s[kKeyBlocks][4];
#pragma unroll
    for (int nb = 0; nb < kKeyBlocks; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kDimSteps; ++kk) {
#pragma unroll
      for (int nb2 = 0; nb2 < kKeyBlocks / 2; ++nb2) {
        uint32_t b[4];
        ldmatrix_x4(b, s_k + (nb2 * 16 + lane % 8 + (lane / 16) * 8) * kStride + kk * 16 + ((lane / 8) % 2) * 8);
        mma_16816<T>(s[2 * nb2], q_frag[kk], b[0], b[1]);
        mma_16816<T>(s[2 * nb2 + 1], q_frag[kk], b[2], b[3]);
      }
    }
    block_sync();  // every warp is done reading s_k
    if (has_next) {
      load_tile_async<T, kHeadDim>(s_k, k, params.k_row_stride, n0 + kTile, len_k, tid);
      cp_async_commit();
    }

    // Scale to the log2 domain and mask keys past the segment or the causal diagonal. `drawn` marks the
    // elements whose dropout decision matters (visible key, query row inside the segment): padding of the
    // 64-wide tiles draws no random number.
    uint32_t drawn = 0;
#pragma unroll
    for (int nb = 0; nb < kKeyBlocks; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = m0 + row_in_block[e / 2];
        const int j = n0 + nb * 8 + 2 * t + (e & 1);
        const bool visible = j < len_k && (!params.causal || j <= i + causal_shift);
        s[nb][e] = visible ? s[nb][e] * scale_log2 : -INFINITY;
        if (visible && i < len_q) drawn |= 1u << (nb * 4 + e);
      }
    }

    // Online softmax: rows g and g+8 are shared by the 4 lanes of a quad.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float tile_max = row_max[r];
#pragma unroll
      for (int nb = 0; nb < kKeyBlocks; ++nb) tile_max = fmaxf(tile_max, fmaxf(s[nb][2 * r], s[nb][2 * r + 1]));
      tile_max = fmaxf(tile_max, shfl_xor(tile_max, 1));
      tile_max = fmaxf(tile_max, shfl_xor(tile_max, 2));
      // A row with no visible key so far keeps max -inf; exponentiate against 0 so no inf - inf appears.
      const float base = tile_max == -INFINITY ? 0.f : tile_max;
      const float correction = exp2f(row_max[r] - base);
      row_max[r] = tile_max;
      row_sum[r] *= correction;
#pragma unroll
      for (int db = 0; db < kDimBlocks; ++db) {
        o[db][2 * r] *= correction;
        o[db][2 * r + 1] *= correction;
      }
#pragma unroll
      for (int nb = 0; nb < kKeyBlocks; ++nb) {
#pragma unroll
        for (int e = 2 * r; e < 2 * r + 2; ++e) {
          const float prob = exp2f(s[nb][e] - base);
          row_sum[r] += prob;
          s[nb][e] = prob;
        }
      }
    }

    // Dropout on the probabilities (the normaliser above counts every key; 1/(1-p) is applied at the end).
    if (dropout) {
#pragma unroll
      for (int nb = 0; nb < kKeyBlocks; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (!((drawn >> (nb * 4 + e)) & 1u)) continue;
          const int i = m0 + row_in_block[e / 2];
          const int j = n0 + nb * 8 + 2 * t + (e & 1);
          const uint32_t c0 = static_cast<uint32_t>(i) * static_cast<uint32_t>(params.max_seqlen_k) +
                              static_cast<uint32_t>(j);
          const bool keep = dropout_keep(params.seed, params.offset, c0, rng_c1, params.dropout_p);
          if (params.dropout_mask != nullptr) {
            params.dropout_mask[(static_cast<int64_t>(rng_c1) * params.max_seqlen_q + i) * params.max_seqlen_k + j] =
                keep ? 1 : 0;
          }
          if (!keep) s[nb][e] = 0.f;
        }
      }
    }

    if (has_next) {
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    block_sync();

    // O += P V: the S accumulators of two n8 blocks form one A fragment; V^T fragments via ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      const uint32_t p_frag[4] = {
          Half2<T>::pack(s[2 * kk][0], s[2 * kk][1]), Half2<T>::pack(s[2 * kk][2], s[2 * kk][3]),
          Half2<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]), Half2<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int db2 = 0; db2 < kHeadDim / 16; ++db2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, s_v + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + db2 * 16 + (lane / 16) * 8);
        mma_16816<T>(o[2 * db2], p_frag, b[0], b[1]);
        mma_16816<T>(o[2 * db2 + 1], p_frag, b[2], b[3]);
      }
    }
    block_sync();  // every warp is done reading s_v
    if (has_next) {
      load_tile_async<T, kHeadDim>(s_v, v, params.v_row_stride, n0 + kTile, len_k, tid);
      cp_async_commit();
    }
  }

  const float dropout_scale = dropout ? 1.f / (1.f - params.dropout_p) : 1.f;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_sum[r] += shfl_xor(row_sum[r], 1);
    row_sum[r] += shfl_xor(row_sum[r], 2);
    const int i = m0 + row_in_block[r];
    const bool has_key = row_sum[r] > 0.f;
    const float inv = has_key ? dropout_scale / row_sum[r] : 0.f;
    if (i < len_q) {
#pragma unroll
      for (int db = 0; db < kDimBlocks; ++db) {
        st_global_u32(out + static_cast<int64_t>(i) * params.out_row_stride + db * 8 + 2 * t,
                      Half2<T>::pack(o[db][2 * r] * inv, o[db][2 * r + 1] * inv));
      }
      if (t == 0) lse[i] = has_key ? (row_max[r] + log2f(row_sum[r])) * kLn2 : INFINITY;
    }
  }
}

}  // namespace semvlp

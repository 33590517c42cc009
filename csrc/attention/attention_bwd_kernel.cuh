// Backward of packed (varlen) attention for short sequences, on tensor cores.
//
// First pass: delta = rowsum(dO * O) per (query row, head). Main pass: one block of 4 warps per (segment,
// head, 64 keys); K and V stay in shared memory while the segment's query rows stream through in tiles
// of 64. Each warp owns 16 keys and works on transposed scores, so dK and dV accumulate in its registers:
//   S^T = K Q^T, P^T = exp(S^T - lse), dV += (P o M)^T dO, dP^T = V dO^T, dS^T = P^T o (dP^T o M - delta),
//   dK += dS^T Q; dS^T goes through shared memory for dQ = dS K, which is added to an fp32 buffer with
//   atomics (one addition per key tile: one to three per element at vision-language lengths).
// All five products use mma.sync m16n8k16 with fp32 accumulation.
#pragma once

#include <cmath>

#include "../common/device.cuh"
#include "../common/philox.h"
#include "attention_fwd_kernel.cuh"
#include "attention_params.h"

namespace semvlp {

// delta (nheads, total_q) fp32 = rowsum(dout * out): one warp per (query row, head).
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kAttentionThreads) varlen_attention_delta_kernel(const AttentionParams params) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (kAttentionThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (item >= static_cast<int64_t>(params.total_q) * params.nheads) return;  // whole warps leave together
  const int64_t row = item / params.nheads;
  const int64_t head = item % params.nheads;
  const T* dout = static_cast<const T*>(params.dout) + row * params.dout_row_stride + head * params.dout_head_stride;
  const T* out = static_cast<const T*>(params.out) + row * params.out_row_stride + head * params.out_head_stride;
  float acc = 0.f;
  for (int d = lane; d < kHeadDim; d += 32) acc += to_float(dout[d]) * to_float(out[d]);
#pragma unroll
  for (int mask = 16; mask > 0; mask /= 2) acc += shfl_xor(acc, mask);
  if (lane == 0) params.delta[head * params.total_q + row] = acc;
}

// Reads q, k, v, dout (as the forward's tensors) and lse, delta (nheads, total_q); adds into dq_accum
// (total_q, nheads, head_dim) fp32 and writes dk, dv (total_k, nheads, head_dim).
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kAttentionThreads) varlen_attention_bwd_kernel(const AttentionParams params) {
  constexpr int kTile = kAttentionTile;
  constexpr int kStride = kHeadDim + kAttentionSmemPad;
  constexpr int kDsStride = kTile + kAttentionSmemPad;
  constexpr int kDimSteps = kHeadDim / 16;   // k16 steps over the head dim (S^T, dP^T)
  constexpr int kDimBlocks = kHeadDim / 8;   // n8 blocks of dK, dV
  constexpr int kQueryBlocks = kTile / 8;    // n8 blocks of S^T, dP^T (query columns)
  constexpr int kDqChunk = kHeadDim < 64 ? kHeadDim : 64;  // dQ columns per pass (bounds registers)
  static_assert(kQueryBlocks * 4 == 32, "one keep bit per S^T element of a thread");

  const int seg = blockIdx.x;
  const int head = blockIdx.y;
  const int n0 = blockIdx.z * kTile;
  const int q_start = params.cu_seqlens_q[seg];
  const int len_q = params.cu_seqlens_q[seg + 1] - q_start;
  const int k_start = params.cu_seqlens_k[seg];
  const int len_k = params.cu_seqlens_k[seg + 1] - k_start;
  if (n0 >= len_k) return;

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4;
  const int t = lane % 4;

  SEMVLP_DYNAMIC_SMEM(smem_raw);
  T* s_k = reinterpret_cast<T*>(smem_raw);
  T* s_v = s_k + kTile * kStride;
  T* s_q = s_v + kTile * kStride;
  T* s_do = s_q + kTile * kStride;
  T* s_ds = s_do + kTile * kStride;  // dS^T (64 keys x 64 queries)
  float* s_lse = reinterpret_cast<float*>(s_ds + kTile * kDsStride);  // log2 domain, +inf past len_q
  float* s_delta = s_lse + kTile;

  const T* q = static_cast<const T*>(params.q) + static_cast<int64_t>(q_start) * params.q_row_stride +
               static_cast<int64_t>(head) * params.q_head_stride;
  const T* k = static_cast<const T*>(params.k) + static_cast<int64_t>(k_start) * params.k_row_stride +
               static_cast<int64_t>(head) * params.k_head_stride;
  const T* v = static_cast<const T*>(params.v) + static_cast<int64_t>(k_start) * params.v_row_stride +
               static_cast<int64_t>(head) * params.v_head_stride;
  const T* dout = static_cast<const T*>(params.dout) + static_cast<int64_t>(q_start) * params.dout_row_stride +
                  static_cast<int64_t>(head) * params.dout_head_stride;
  const float* lse = params.lse + static_cast<int64_t>(head) * params.total_q + q_start;
  const float* delta = params.delta + static_cast<int64_t>(head) * params.total_q + q_start;

  load_tile_async<T, kHeadDim>(s_k, k, params.k_row_stride, n0, len_k, tid);
  load_tile_async<T, kHeadDim>(s_v, v, params.v_row_stride, n0, len_k, tid);
  cp_async_commit();

  // Query rows that can see one of this block's keys: all, or under the causal rule j <= i + shift those
  // with i >= n0 - shift.
  const int causal_shift = len_k - len_q;
  const int m_first = params.causal ? imax(0, n0 - causal_shift) : 0;
  const int m_tile_begin = m_first / kTile;
  const int m_tiles = (len_q + kTile - 1) / kTile;

  auto load_query_tile = [&](int m_tile) {
    const int m0 = m_tile * kTile;
    load_tile_async<T, kHeadDim>(s_q, q, params.q_row_stride, m0, len_q, tid);
    load_tile_async<T, kHeadDim>(s_do, dout, params.dout_row_stride, m0, len_q, tid);
    cp_async_commit();
    if (tid < kTile) {
      const bool valid = m0 + tid < len_q;
      st_shared_f32(s_lse + tid, valid ? lse[m0 + tid] * kLog2e : INFINITY);
      st_shared_f32(s_delta + tid, valid ? delta[m0 + tid] : 0.f);
    }
  };

  const float scale_log2 = params.softmax_scale * kLog2e;
  const bool dropout = params.dropout_p > 0.f;
  const float dropout_scale = dropout ? 1.f / (1.f - params.dropout_p) : 1.f;
  const uint32_t rng_c1 = static_cast<uint32_t>(seg * params.nheads + head);
  const int key_in_block[2] = {warp * 16 + g, warp * 16 + g + 8};

  float dk[kDimBlocks][4];
  float dv[kDimBlocks][4];
#pragma unroll
  for (int db = 0; db < kDimBlocks; ++db) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[db][e] = dv[db][e] = 0.f;
  }

  if (m_tile_begin < m_tiles) load_query_tile(m_tile_begin);
  for (int m_tile = m_tile_begin; m_tile < m_tiles; ++m_tile) {
    const int m0 = m_tile * kTile;
    cp_async_wait<0>();
    block_sync();

    // S^T = K Q^T: 16 keys x 64 queries per warp.
    float st[kQueryBlocks][4];
#pragma unroll
    for (int nb = 0; nb < kQueryBlocks; ++nb) st[nb][0] = st[nb][1] = st[nb][2] = st[nb][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kDimSteps; ++kk) {
      uint32_t a[4];
      ldmatrix_x4(a, s_k + (warp * 16 + lane % 16) * kStride + kk * 16 + (lane / 16) * 8);
#pragma unroll
      for (int nb2 = 0; nb2 < kQueryBlocks / 2; ++nb2) {
        uint32_t b[4];
        ldmatrix_x4(b, s_q + (nb2 * 16 + lane % 8 + (lane / 16) * 8) * kStride + kk * 16 + ((lane / 8) % 2) * 8);
        mma_16816<T>(st[2 * nb2], a, b[0], b[1]);
        mma_16816<T>(st[2 * nb2 + 1], a, b[2], b[3]);
      }
    }

    // P^T from the forward's lse (0 where masked or past the segment), and the dropout decisions.
    uint32_t keep_bits = 0xffffffffu;
#pragma unroll
    for (int nb = 0; nb < kQueryBlocks; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = n0 + key_in_block[e / 2];
        const int col = nb * 8 + 2 * t + (e & 1);
        const int i = m0 + col;
        const bool visible = j < len_k && i < len_q && (!params.causal || j <= i + causal_shift);
        st[nb][e] = visible ? exp2f(st[nb][e] * scale_log2 - ld_shared_f32(s_lse + col)) : 0.f;
        if (dropout && visible) {  // as in the forward, padding draws no random number
          const uint32_t c0 = static_cast<uint32_t>(i) * static_cast<uint32_t>(params.max_seqlen_k) +
                              static_cast<uint32_t>(j);
          if (!dropout_keep(params.seed, params.offset, c0, rng_c1, params.dropout_p)) keep_bits &= ~(1u << (nb * 4 + e));
        }
      }
    }
    auto kept = [&](int nb, int e, float value) { return (keep_bits >> (nb * 4 + e)) & 1u ? value : 0.f; };

    // dV += (P o M)^T dO (1/(1-p) applied at the end).
#pragma unroll
    for (int kq = 0; kq < kTile / 16; ++kq) {
      const uint32_t a[4] = {
          Half2<T>::pack(kept(2 * kq, 0, st[2 * kq][0]), kept(2 * kq, 1, st[2 * kq][1])),
          Half2<T>::pack(kept(2 * kq, 2, st[2 * kq][2]), kept(2 * kq, 3, st[2 * kq][3])),
          Half2<T>::pack(kept(2 * kq + 1, 0, st[2 * kq + 1][0]), kept(2 * kq + 1, 1, st[2 * kq + 1][1])),
          Half2<T>::pack(kept(2 * kq + 1, 2, st[2 * kq + 1][2]), kept(2 * kq + 1, 3, st[2 * kq + 1][3]))};
#pragma unroll
      for (int db2 = 0; db2 < kHeadDim / 16; ++db2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, s_do + (kq * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + db2 * 16 + (lane / 16) * 8);
        mma_16816<T>(dv[2 * db2], a, b[0], b[1]);
        mma_16816<T>(dv[2 * db2 + 1], a, b[2], b[3]);
      }
    }

    // dP^T = V dO^T: 16 keys x 64 queries per warp.
    float dpt[kQueryBlocks][4];
#pragma unroll
    for (int nb = 0; nb < kQueryBlocks; ++nb) dpt[nb][0] = dpt[nb][1] = dpt[nb][2] = dpt[nb][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kDimSteps; ++kk) {
      uint32_t a[4];
      ldmatrix_x4(a, s_v + (warp * 16 + lane % 16) * kStride + kk * 16 + (lane / 16) * 8);
#pragma unroll
      for (int nb2 = 0; nb2 < kQueryBlocks / 2; ++nb2) {
        uint32_t b[4];
        ldmatrix_x4(b, s_do + (nb2 * 16 + lane % 8 + (lane / 16) * 8) * kStride + kk * 16 + ((lane / 8) % 2) * 8);
        mma_16816<T>(dpt[2 * nb2], a, b[0], b[1]);
        mma_16816<T>(dpt[2 * nb2 + 1], a, b[2], b[3]);
      }
    }

    // dS^T = P^T o (dP^T o M / (1-p) - delta), kept in dpt.
#pragma unroll
    for (int nb = 0; nb < kQueryBlocks; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = nb * 8 + 2 * t + (e & 1);
        const float dp = kept(nb, e, dpt[nb][e] * dropout_scale);
        dpt[nb][e] = st[nb][e] * (dp - ld_shared_f32(s_delta + col));
      }
    }

    // dK += dS^T Q (softmax_scale applied at the end).
#pragma unroll
    for (int kq = 0; kq < kTile / 16; ++kq) {
      const uint32_t a[4] = {Half2<T>::pack(dpt[2 * kq][0], dpt[2 * kq][1]),
                             Half2<T>::pack(dpt[2 * kq][2], dpt[2 * kq][3]),
                             Half2<T>::pack(dpt[2 * kq + 1][0], dpt[2 * kq + 1][1]),
                             Half2<T>::pack(dpt[2 * kq + 1][2], dpt[2 * kq + 1][3])};
#pragma unroll
      for (int db2 = 0; db2 < kHeadDim / 16; ++db2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, s_q + (kq * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + db2 * 16 + (lane / 16) * 8);
        mma_16816<T>(dk[2 * db2], a, b[0], b[1]);
        mma_16816<T>(dk[2 * db2 + 1], a, b[2], b[3]);
      }
    }

    // dS^T to shared memory (rows = keys) for dQ, which needs all 64 keys of every query row.
#pragma unroll
    for (int nb = 0; nb < kQueryBlocks; ++nb) {
      st_shared_u32(s_ds + key_in_block[0] * kDsStride + nb * 8 + 2 * t, Half2<T>::pack(dpt[nb][0], dpt[nb][1]));
      st_shared_u32(s_ds + key_in_block[1] * kDsStride + nb * 8 + 2 * t, Half2<T>::pack(dpt[nb][2], dpt[nb][3]));
    }
    block_sync();
    // s_q, s_do, s_lse and s_delta are free now: fetch the next query tile while computing dQ.
    if (m_tile + 1 < m_tiles) load_query_tile(m_tile + 1);

    // dQ = dS K for query rows 16*warp .. +15: A = dS from s_ds (ldmatrix.trans), B = K via ldmatrix.trans.
#pragma unroll
    for (int d0 = 0; d0 < kHeadDim; d0 += kDqChunk) {
      float dq[kDqChunk / 8][4];
#pragma unroll
      for (int db = 0; db < kDqChunk / 8; ++db) dq[db][0] = dq[db][1] = dq[db][2] = dq[db][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) {
        uint32_t a[4];
        ldmatrix_x4_trans(a, s_ds + (kk * 16 + lane % 8 + (lane / 16) * 8) * kDsStride + warp * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int db2 = 0; db2 < kDqChunk / 16; ++db2) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, s_k + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + d0 + db2 * 16 + (lane / 16) * 8);
          mma_16816<T>(dq[2 * db2], a, b[0], b[1]);
          mma_16816<T>(dq[2 * db2 + 1], a, b[2], b[3]);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int i = m0 + warp * 16 + g + 8 * r;
        if (i >= len_q) continue;
        float* dq_row = params.dq_accum + (static_cast<int64_t>(q_start + i) * params.nheads + head) * kHeadDim + d0;
#pragma unroll
        for (int db = 0; db < kDqChunk / 8; ++db) {
          atomic_add_f32(dq_row + db * 8 + 2 * t, dq[db][2 * r] * params.softmax_scale);
          atomic_add_f32(dq_row + db * 8 + 2 * t + 1, dq[db][2 * r + 1] * params.softmax_scale);
        }
      }
    }
  }
  cp_async_wait<0>();  // K/V of a block whose keys no query row sees

  T* dk_out = static_cast<T*>(params.dk) + static_cast<int64_t>(k_start) * params.dk_row_stride +
              static_cast<int64_t>(head) * params.dk_head_stride;
  T* dv_out = static_cast<T*>(params.dv) + static_cast<int64_t>(k_start) * params.dv_row_stride +
              static_cast<int64_t>(head) * params.dv_head_stride;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int j = n0 + key_in_block[r];
    if (j >= len_k) continue;
#pragma unroll
    for (int db = 0; db < kDimBlocks; ++db) {
      st_global_u32(dk_out + static_cast<int64_t>(j) * params.dk_row_stride + db * 8 + 2 * t,
                    Half2<T>::pack(dk[db][2 * r] * params.softmax_scale, dk[db][2 * r + 1] * params.softmax_scale));
      st_global_u32(dv_out + static_cast<int64_t>(j) * params.dv_row_stride + db * 8 + 2 * t,
                    Half2<T>::pack(dv[db][2 * r] * dropout_scale, dv[db][2 * r + 1] * dropout_scale));
    }
  }
}

}  // namespace semvlp

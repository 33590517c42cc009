// Plain-data description of one varlen attention call, shared by the ATen launcher (attention.cpp), the
// kernel translation units and the CPU emulator. No CUDA or ATen types, so every side can include it.
#pragma once

#include <cstdint>

namespace semvlp {

enum class AttentionDtype { kFloat16, kBFloat16 };

struct AttentionParams {
  // Packed inputs (total_q or total_k, nheads, head_dim), last dim contiguous; strides in elements.
  const void* q;
  const void* k;
  const void* v;
  int64_t q_row_stride, q_head_stride;
  int64_t k_row_stride, k_head_stride;
  int64_t v_row_stride, v_head_stride;
  // int32 (n_segments + 1,) offsets of the segments.
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;

  // Forward outputs: out like q (contiguous); lse (nheads, total_q) fp32, natural-log sum of exp of the
  // scaled scores per query row, +inf for rows without any key.
  void* out;
  int64_t out_row_stride, out_head_stride;
  float* lse;
  // Optional debug output (n_segments, nheads, max_seqlen_q, max_seqlen_k) uint8, 1 = kept; nullptr = off.
  uint8_t* dropout_mask;

  // Backward: dout and out (to form delta), dq_accum fp32 (total_q, nheads, head_dim) zero-initialised,
  // delta (nheads, total_q) fp32, dk/dv like k/v (contiguous).
  const void* dout;
  int64_t dout_row_stride, dout_head_stride;
  float* dq_accum;
  float* delta;
  void* dk;
  void* dv;
  int64_t dk_row_stride, dk_head_stride;
  int64_t dv_row_stride, dv_head_stride;

  int n_segments;
  int nheads;
  int head_dim;
  int total_q;
  int max_seqlen_q;
  int max_seqlen_k;
  float softmax_scale;
  bool causal;

  float dropout_p;  // 0 = no dropout
  uint64_t seed;
  uint32_t offset;

  AttentionDtype dtype;
};

// Tile sizes of both kernels: 64 query rows (forward) or 64 keys (backward) per block of 4 warps, each warp
// owning 16 rows; the other operand streams through shared memory in tiles of 64.
constexpr int kAttentionTile = 64;
constexpr int kAttentionThreads = 128;
// Shared-memory rows are padded by 8 elements (16 bytes) so ldmatrix reads of 8 rows hit 8 distinct banks.
constexpr int kAttentionSmemPad = 8;

inline int attention_smem_stride(int head_dim) { return head_dim + kAttentionSmemPad; }

// Forward: Q, K and V tiles of 64 x head_dim (16-bit elements).
inline int attention_fwd_smem_bytes(int head_dim) {
  return 3 * kAttentionTile * attention_smem_stride(head_dim) * 2;
}

// Backward: K, V, Q, dO tiles of 64 x head_dim, the 64 x 64 dS^T tile, and lse/delta of 64 query rows.
inline int attention_bwd_smem_bytes(int head_dim) {
  return 4 * kAttentionTile * attention_smem_stride(head_dim) * 2 +
         kAttentionTile * (kAttentionTile + kAttentionSmemPad) * 2 + 2 * kAttentionTile * 4;
}

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

struct LaunchGrid {
  int x, y, z;
};

// Forward: one block per (segment, head, 64 query rows). Backward: one block per (segment, head, 64 keys).
inline LaunchGrid attention_fwd_grid(const AttentionParams& p) {
  return {p.n_segments, p.nheads, ceil_div(p.max_seqlen_q, kAttentionTile)};
}
inline LaunchGrid attention_bwd_grid(const AttentionParams& p) {
  return {p.n_segments, p.nheads, ceil_div(p.max_seqlen_k, kAttentionTile)};
}
// The backward's first pass (delta = rowsum(dO * O)): one warp per (query row, head).
inline LaunchGrid attention_delta_grid(const AttentionParams& p) {
  return {ceil_div(p.total_q * p.nheads, kAttentionThreads / 32), 1, 1};
}

// Launch entry points, one per head dim (defined in attention_{fwd,bwd}_hdim*.cu); the dtype is a field.
// Each returns the CUDA error code of its launches (0 = success).
int launch_attention_fwd_hdim32(const AttentionParams& params, void* stream);
int launch_attention_fwd_hdim64(const AttentionParams& params, void* stream);
int launch_attention_fwd_hdim128(const AttentionParams& params, void* stream);
int launch_attention_bwd_hdim32(const AttentionParams& params, void* stream);
int launch_attention_bwd_hdim64(const AttentionParams& params, void* stream);
int launch_attention_bwd_hdim128(const AttentionParams& params, void* stream);

// 0 when the library holds a kernel image for the current GPU, else the CUDA error (e.g. no kernel image
// for this architecture when built for other SEMVLP_CUDA_ARCHS).
int kernel_image_error();

}  // namespace semvlp

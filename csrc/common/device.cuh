// Warp-level primitives used by the kernels: ldmatrix, mma.sync m16n8k16, cp.async, shuffles and the few
// shared-memory accesses that are not ldmatrix/cp.async. Kernels touch shared memory only through these,
// so the CPU emulator in tests/cuda_emulator/ can replace this header (SEMVLP_EMULATE) and check the
// kernels' fragment indexing, bounds and synchronisation without a GPU.
#pragma once

#include <cstdint>
#include <cstring>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#if defined(SEMVLP_EMULATE)
#include "emulated_device.h"
#else

#define SEMVLP_DEVICE __device__ __forceinline__
#define SEMVLP_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]

namespace semvlp {

SEMVLP_DEVICE uint32_t smem_address(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i; r[i] holds row lane/4,
// columns 2*(lane%4) and +1 of matrix i.
SEMVLP_DEVICE void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(smem_row)));
}

// As ldmatrix_x4 on the transposed matrices: r[i] holds rows 2*(lane%4) and +1, column lane/4 of matrix i.
SEMVLP_DEVICE void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(smem_row)));
}

// D = A(16x16, row) * B(16x8, col) + D in fp32. Fragments (g = lane/4, t = lane%4):
// a[0]: A[g][2t..2t+1], a[1]: A[g+8][2t..], a[2]: A[g][2t+8..], a[3]: A[g+8][2t+8..];
// b0: B[2t..2t+1][g], b1: B[2t+8..2t+9][g]; d[0..1]: D[g][2t..2t+1], d[2..3]: D[g+8][2t..2t+1].
template <typename T>
SEMVLP_DEVICE void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
SEMVLP_DEVICE void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
SEMVLP_DEVICE void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16-byte global -> shared copy; src_bytes < 16 zero-fills the rest (0 = pure zero fill, src not read).
SEMVLP_DEVICE void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
               :: "r"(smem_address(smem_dst)), "l"(gmem_src), "r"(src_bytes));
}

SEMVLP_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most `kPending` of this thread's committed groups are still in flight.
template <int kPending>
SEMVLP_DEVICE void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(kPending)); }

SEMVLP_DEVICE float shfl_xor(float value, int lane_mask) {
  return __shfl_xor_sync(0xffffffffu, value, lane_mask);
}

SEMVLP_DEVICE void st_shared_u32(void* smem, uint32_t value) { *static_cast<uint32_t*>(smem) = value; }
SEMVLP_DEVICE void st_shared_f32(float* smem, float value) { *smem = value; }
SEMVLP_DEVICE float ld_shared_f32(const float* smem) { return *smem; }

SEMVLP_DEVICE void st_global_u32(void* gmem, uint32_t value) { *static_cast<uint32_t*>(gmem) = value; }

SEMVLP_DEVICE void block_sync() { __syncthreads(); }

SEMVLP_DEVICE void atomic_add_f32(float* gmem, float value) { atomicAdd(gmem, value); }

}  // namespace semvlp

#endif  // SEMVLP_EMULATE

namespace semvlp {

SEMVLP_DEVICE int imin(int a, int b) { return a < b ? a : b; }
SEMVLP_DEVICE int imax(int a, int b) { return a < b ? b : a; }

// 16-bit element types: packing two floats into one 32-bit mma operand (lower index in the low half).
template <typename T>
struct Half2;

template <>
struct Half2<__half> {
  static SEMVLP_DEVICE uint32_t pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    uint32_t bits;
    memcpy(&bits, &h, sizeof(bits));
    return bits;
  }
};

template <>
struct Half2<__nv_bfloat16> {
  static SEMVLP_DEVICE uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    uint32_t bits;
    memcpy(&bits, &h, sizeof(bits));
    return bits;
  }
};

template <typename T>
SEMVLP_DEVICE float to_float(T x) { return static_cast<float>(x); }
template <>
SEMVLP_DEVICE float to_float<__half>(__half x) { return __half2float(x); }
template <>
SEMVLP_DEVICE float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
SEMVLP_DEVICE T from_float(float x) { return static_cast<T>(x); }
template <>
SEMVLP_DEVICE __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
SEMVLP_DEVICE __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

}  // namespace semvlp

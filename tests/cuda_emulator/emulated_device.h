// The device primitives of csrc/common/device.cuh, implemented on the CPU emulator (emulator.h).
// Included by device.cuh when SEMVLP_EMULATE is defined; kernels are then plain C++ run by emu::launch.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "emulator.h"

#define SEMVLP_DEVICE inline
#define SEMVLP_DYNAMIC_SMEM(name) unsigned char* name = ::emu::dynamic_smem()
#define __launch_bounds__(...)
#define threadIdx (::emu::thread_index())
#define blockIdx (::emu::block_index())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())

inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }

namespace semvlp {

SEMVLP_DEVICE void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) { emu::ldmatrix_x4(r, smem_row, false); }
SEMVLP_DEVICE void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) { emu::ldmatrix_x4(r, smem_row, true); }

template <typename T>
SEMVLP_DEVICE void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::mma_16816(d, a, b0, b1, std::is_same_v<T, __half> ? emu::MmaType::kFloat16 : emu::MmaType::kBFloat16);
}

SEMVLP_DEVICE void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes) {
  emu::cp_async_16(smem_dst, gmem_src, src_bytes);
}
SEMVLP_DEVICE void cp_async_commit() { emu::cp_async_commit(); }
template <int kPending>
SEMVLP_DEVICE void cp_async_wait() { emu::cp_async_wait(kPending); }

SEMVLP_DEVICE float shfl_xor(float value, int lane_mask) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  bits = emu::shfl_xor_u32(bits, lane_mask);
  std::memcpy(&value, &bits, 4);
  return value;
}

SEMVLP_DEVICE void st_shared_u32(void* smem, uint32_t value) { emu::smem_write(smem, &value, 4); }
SEMVLP_DEVICE void st_shared_f32(float* smem, float value) { emu::smem_write(smem, &value, 4); }
SEMVLP_DEVICE float ld_shared_f32(const float* smem) {
  float value;
  emu::smem_read(&value, smem, 4);
  return value;
}
SEMVLP_DEVICE void st_global_u32(void* gmem, uint32_t value) { std::memcpy(gmem, &value, 4); }

SEMVLP_DEVICE void block_sync() { emu::syncthreads(); }

// Fibers run one at a time, so a plain addition is atomic here.
SEMVLP_DEVICE void atomic_add_f32(float* gmem, float value) { *gmem += value; }

}  // namespace semvlp

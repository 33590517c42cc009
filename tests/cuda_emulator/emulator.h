// A small CPU emulator of the CUDA execution model, for testing csrc/ kernels on machines without a GPU.
//
// Every CUDA thread of a block runs as a cooperative fiber (ucontext). A thread runs until it reaches a
// synchronisation point (__syncthreads or a warp collective: ldmatrix, mma.sync, shuffle); when every thread
// has reached one, warp collectives whose 32 lanes have all arrived execute (with the PTX ISA fragment
// layouts), or, when every live thread waits at the block barrier, the barrier opens. cp.async copies land
// only at the matching cp.async.wait_group. Shared memory carries a shadow that reports any two accesses by
// different threads, one of them a write, between the same two barriers (a missing __syncthreads), and any
// access outside the block's dynamic shared memory. Errors are collected and reported after the launch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace emu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

enum class MmaType { kFloat16, kBFloat16 };

// Runs `kernel` (the kernel body bound to its arguments) over the grid; returns "" or the errors found.
std::string launch(Dim3 grid, Dim3 block, size_t dynamic_smem_bytes, const std::function<void()>& kernel);

Dim3 thread_index();
Dim3 block_index();
Dim3 block_dim();
Dim3 grid_dim();
unsigned char* dynamic_smem();

// Synchronisation points and shared-memory accesses of the current thread.
void syncthreads();
void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row, bool transpose);
void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, MmaType type);
uint32_t shfl_xor_u32(uint32_t value, int lane_mask);
void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes);
void cp_async_commit();
void cp_async_wait(int pending);
void smem_write(void* smem, const void* src, size_t bytes);
void smem_read(void* dst, const void* smem, size_t bytes);

}  // namespace emu

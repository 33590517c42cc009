// C entry points that run the csrc/ kernels on the CPU emulator, called from Python through ctypes.
// Each returns 0 on success, or 1 with the emulator's report in emu_last_error().
#include <string>

#include "../../csrc/attention/attention_bwd_kernel.cuh"
#include "../../csrc/attention/attention_fwd_kernel.cuh"
#include "../../csrc/layer_norm/layer_norm_kernel.cuh"
#include "emulator.h"

namespace {

std::string g_last_error;

int report(const std::string& errors) {
  g_last_error = errors;
  return errors.empty() ? 0 : 1;
}

emu::Dim3 dim3_of(semvlp::LaunchGrid grid) {
  return {static_cast<unsigned>(grid.x), static_cast<unsigned>(grid.y), static_cast<unsigned>(grid.z)};
}

// The same launch sequence as csrc/attention/attention_launch.cuh, on the emulator.
template <typename T, int kHeadDim>
int attention_fwd(const semvlp::AttentionParams& p) {
  return report(emu::launch(dim3_of(semvlp::attention_fwd_grid(p)), {semvlp::kAttentionThreads},
                            semvlp::attention_fwd_smem_bytes(kHeadDim),
                            [&] { semvlp::varlen_attention_fwd_kernel<T, kHeadDim>(p); }));
}

template <typename T, int kHeadDim>
int attention_bwd(const semvlp::AttentionParams& p) {
  if (report(emu::launch(dim3_of(semvlp::attention_delta_grid(p)), {semvlp::kAttentionThreads}, 0,
                         [&] { semvlp::varlen_attention_delta_kernel<T, kHeadDim>(p); })) != 0) {
    return 1;
  }
  return report(emu::launch(dim3_of(semvlp::attention_bwd_grid(p)), {semvlp::kAttentionThreads},
                            semvlp::attention_bwd_smem_bytes(kHeadDim),
                            [&] { semvlp::varlen_attention_bwd_kernel<T, kHeadDim>(p); }));
}

template <template <typename, int> class Run>
int dispatch(const semvlp::AttentionParams& p) {
  const bool half = p.dtype == semvlp::AttentionDtype::kFloat16;
  switch (p.head_dim) {
    case 32: return half ? Run<__half, 32>::run(p) : Run<__nv_bfloat16, 32>::run(p);
    case 64: return half ? Run<__half, 64>::run(p) : Run<__nv_bfloat16, 64>::run(p);
    case 128: return half ? Run<__half, 128>::run(p) : Run<__nv_bfloat16, 128>::run(p);
    default: return report("head_dim must be 32, 64 or 128");
  }
}

template <typename T, int kHeadDim>
struct Fwd {
  static int run(const semvlp::AttentionParams& p) { return attention_fwd<T, kHeadDim>(p); }
};
template <typename T, int kHeadDim>
struct Bwd {
  static int run(const semvlp::AttentionParams& p) { return attention_bwd<T, kHeadDim>(p); }
};

template <template <typename> class Kernel>
int layer_norm(const semvlp::LayerNormParams& p, int blocks) {
  const emu::Dim3 block{static_cast<unsigned>(semvlp::layer_norm_threads(p.hidden))};
  const emu::Dim3 grid{static_cast<unsigned>(blocks)};
  switch (p.dtype) {
    case semvlp::LayerNormDtype::kFloat32:
      return report(emu::launch(grid, block, semvlp::kLayerNormSmemBytes, [&] { Kernel<float>::run(p); }));
    case semvlp::LayerNormDtype::kFloat16:
      return report(emu::launch(grid, block, semvlp::kLayerNormSmemBytes, [&] { Kernel<__half>::run(p); }));
    case semvlp::LayerNormDtype::kBFloat16:
      return report(emu::launch(grid, block, semvlp::kLayerNormSmemBytes, [&] { Kernel<__nv_bfloat16>::run(p); }));
  }
  return report("unknown dtype");
}

template <typename T>
struct LayerNormFwd {
  static void run(const semvlp::LayerNormParams& p) { semvlp::add_layer_norm_fwd_kernel<T>(p); }
};
template <typename T>
struct LayerNormBwd {
  static void run(const semvlp::LayerNormParams& p) { semvlp::add_layer_norm_bwd_kernel<T>(p); }
};

// Deliberately broken kernels, one per check of the emulator, so a test can see each check fire. They run
// with 64 threads and kBrokenSmem bytes of shared memory.
constexpr int kBrokenSmem = 1024;

void missing_barrier_kernel() {
  SEMVLP_DYNAMIC_SMEM(smem);
  float* value = reinterpret_cast<float*>(smem);
  if (threadIdx.x == 0) semvlp::st_shared_f32(value, 1.f);
  if (threadIdx.x == 32) semvlp::ld_shared_f32(value);  // no block_sync() in between
}

void out_of_bounds_kernel() {
  SEMVLP_DYNAMIC_SMEM(smem);
  uint32_t r[4];
  semvlp::ldmatrix_x4(r, smem + kBrokenSmem + 16 * (threadIdx.x % 8));  // past the end
}

void divergent_shuffle_kernel() {
  if (threadIdx.x < 16) semvlp::shfl_xor(1.f, 1);
}

void unwaited_copy_kernel() {
  SEMVLP_DYNAMIC_SMEM(smem);
  static const uint32_t source[4] = {1, 2, 3, 4};
  semvlp::cp_async_16(smem + 16 * threadIdx.x, source, 16);
  semvlp::cp_async_commit();
}

}  // namespace

extern "C" {

const char* emu_last_error() { return g_last_error.c_str(); }

// The structs are filled field by field from Python (tests/cuda_emulator/emulated.py mirrors them).
int emu_attention_fwd(const semvlp::AttentionParams* params) { return dispatch<Fwd>(*params); }
int emu_attention_bwd(const semvlp::AttentionParams* params) { return dispatch<Bwd>(*params); }
int emu_layer_norm_fwd(const semvlp::LayerNormParams* params) {
  return layer_norm<LayerNormFwd>(*params, params->rows);
}
int emu_layer_norm_bwd(const semvlp::LayerNormParams* params, int blocks) {
  return layer_norm<LayerNormBwd>(*params, blocks);
}
// 0: missing barrier, 1: shared memory out of bounds, 2: divergent warp collective, 3: cp.async not waited.
int emu_broken_kernel(int which) {
  void (*kernels[])() = {missing_barrier_kernel, out_of_bounds_kernel, divergent_shuffle_kernel, unwaited_copy_kernel};
  if (which < 0 || which > 3) return report("no such kernel");
  return report(emu::launch({1}, {64}, kBrokenSmem, kernels[which]));
}

size_t emu_sizeof_attention_params() { return sizeof(semvlp::AttentionParams); }
size_t emu_sizeof_layer_norm_params() { return sizeof(semvlp::LayerNormParams); }

}  // extern "C"

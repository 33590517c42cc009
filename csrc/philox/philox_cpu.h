// semvlp::cuda_philox_uniform_cpu: the kernels' Philox stream evaluated on the CPU, for bit-for-bit tests
// against the Python reference (semvlp/ops/rng.py) on machines without a GPU.
#pragma once

#include <ATen/core/Tensor.h>

namespace semvlp {

// c0, c1: int64 CPU tensors of one shape, values in [0, 2**32). Returns float32 uniforms of that shape.
at::Tensor philox_uniform_cpu(int64_t seed, int64_t offset, const at::Tensor& c0, const at::Tensor& c1);

}  // namespace semvlp

// Philox-4x32-10 and the uniform mapping of the dropout contract in semvlp/ops/rng.py.
//
// Compiled into both device kernels and the CPU op `semvlp::cuda_philox_uniform_cpu`, so a CPU test checks
// the exact bit stream the kernels draw against the Python reference. Element (c0, c1) of a dropout call
// with (seed, offset) gets uniform(philox(key = (seed_lo, seed_hi), counter = (c0, c1, offset, 0))[0]).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SEMVLP_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SEMVLP_HOST_DEVICE inline
#endif

namespace semvlp {

// First output word of Philox-4x32 with 10 rounds, as Triton's tl.philox.
SEMVLP_HOST_DEVICE uint32_t philox_first_word(uint64_t seed, uint32_t offset, uint32_t c0, uint32_t c1) {
  uint32_t c2 = offset;
  uint32_t c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    // A 32x32 -> 64 bit product gives both the high and the low word of each multiplication.
    const uint64_t prod_b = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint64_t prod_a = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint32_t next_c0 = static_cast<uint32_t>(prod_b >> 32) ^ c1 ^ k0;
    const uint32_t next_c2 = static_cast<uint32_t>(prod_a >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(prod_b);
    c3 = static_cast<uint32_t>(prod_a);
    c0 = next_c0;
    c2 = next_c2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

// Triton's uint_to_uniform_float: the word as int32, negatives mapped to ~x, times 4.6566127342e-10 (float32).
SEMVLP_HOST_DEVICE float uniform_from_word(uint32_t word) {
  int32_t x = static_cast<int32_t>(word);
  if (x < 0) x = ~x;
  return static_cast<float>(x) * 4.6566127342e-10f;
}

SEMVLP_HOST_DEVICE float philox_uniform(uint64_t seed, uint32_t offset, uint32_t c0, uint32_t c1) {
  return uniform_from_word(philox_first_word(seed, offset, c0, c1));
}

// The dropout decision of the contract: an element is kept iff its uniform number is >= dropout_p.
SEMVLP_HOST_DEVICE bool dropout_keep(uint64_t seed, uint32_t offset, uint32_t c0, uint32_t c1, float dropout_p) {
  return philox_uniform(seed, offset, c0, c1) >= dropout_p;
}

}  // namespace semvlp

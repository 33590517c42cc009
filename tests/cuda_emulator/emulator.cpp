// CPU emulator of the CUDA execution model; see emulator.h for what it checks.
#include "emulator.h"

#include <ucontext.h>

#include <cstring>
#include <deque>
#include <sstream>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace emu {
namespace {

enum class Op { kRunnable, kBarrier, kLdmatrix, kMma, kShfl, kExited };

const char* op_name(Op op) {
  switch (op) {
    case Op::kRunnable: return "running";
    case Op::kBarrier: return "__syncthreads";
    case Op::kLdmatrix: return "ldmatrix";
    case Op::kMma: return "mma.sync";
    case Op::kShfl: return "shfl.sync";
    case Op::kExited: return "exit";
  }
  return "?";
}

struct Copy {
  size_t smem_offset;
  const unsigned char* src;
  int src_bytes;
};

struct Thread {
  ucontext_t context;
  std::vector<char> stack;
  Dim3 index;
  int linear = 0;
  Op op = Op::kRunnable;
  // Arguments and results of the warp collective this thread waits at.
  const unsigned char* address = nullptr;
  bool transpose = false;
  uint32_t a[4] = {}, b[2] = {};
  float c[4] = {};
  MmaType mma_type = MmaType::kFloat16;
  uint32_t value = 0;
  int lane_mask = 0;
  uint32_t result[4] = {};
  float d[4] = {};
  // cp.async copies: issued but not committed, and committed groups in order.
  std::vector<Copy> uncommitted;
  std::deque<std::vector<Copy>> committed;
};

// Last write and last read of one shared-memory byte; epochs count the block barriers passed.
struct Shadow {
  int32_t write_epoch = -1;
  int32_t writer = -1;
  int32_t read_epoch = -1;
  int32_t reader = -1;  // -2: several threads
};

struct Block {
  Dim3 grid, index, dim;
  std::vector<unsigned char> smem;
  std::vector<Shadow> shadow;
  int epoch = 0;
  std::vector<Thread> threads;
};

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kMaxErrors = 20;

Block* g_block = nullptr;
Thread* g_thread = nullptr;
ucontext_t g_scheduler;
const std::function<void()>* g_kernel = nullptr;
std::vector<std::string> g_errors;
bool g_abort_block = false;

std::string where(int thread) {
  std::ostringstream s;
  s << "block (" << g_block->index.x << ", " << g_block->index.y << ", " << g_block->index.z << ") thread "
    << thread;
  return s.str();
}

void error(const std::string& message) {
  if (g_errors.size() < kMaxErrors) g_errors.push_back(message);
}

void yield(Op op) {
  g_thread->op = op;
  swapcontext(&g_thread->context, &g_scheduler);
}

void thread_entry() {
  (*g_kernel)();
  if (!g_thread->uncommitted.empty() || !g_thread->committed.empty())
    error(where(g_thread->linear) + ": exits with cp.async copies it never waited for");
  g_thread->op = Op::kExited;
  swapcontext(&g_thread->context, &g_scheduler);
}

size_t smem_offset(const void* ptr, size_t bytes, const char* what) {
  const auto* p = static_cast<const unsigned char*>(ptr);
  const unsigned char* base = g_block->smem.data();
  if (base == nullptr || p < base || p + bytes > base + g_block->smem.size()) {
    std::ostringstream s;
    s << where(g_thread->linear) << ": " << what << " of " << bytes << " bytes at shared offset "
      << (p - base) << " outside the " << g_block->smem.size() << " bytes of dynamic shared memory";
    error(s.str());
    return SIZE_MAX;
  }
  return static_cast<size_t>(p - base);
}

void race(const char* kind, size_t offset, int first, int second) {
  std::ostringstream s;
  s << where(second) << ": " << kind << " race on shared byte " << offset << " with "
    << (first == -2 ? std::string("several threads") : "thread " + std::to_string(first))
    << " between two barriers (barrier epoch " << g_block->epoch << ")";
  error(s.str());
}

// Each access reports at most one race (its first conflicting byte).
void shadow_read(size_t offset, size_t bytes, int thread) {
  const int epoch = g_block->epoch;
  bool reported = false;
  for (size_t i = offset; i < offset + bytes; ++i) {
    Shadow& sh = g_block->shadow[i];
    if (!reported && sh.write_epoch == epoch && sh.writer != thread) {
      race("read-after-write", i, sh.writer, thread);
      reported = true;
    }
    if (sh.read_epoch == epoch && sh.reader != thread) {
      sh.reader = -2;
    } else if (sh.read_epoch != epoch) {
      sh.read_epoch = epoch;
      sh.reader = thread;
    }
  }
}

void shadow_write(size_t offset, size_t bytes, int thread) {
  const int epoch = g_block->epoch;
  bool reported = false;
  for (size_t i = offset; i < offset + bytes; ++i) {
    Shadow& sh = g_block->shadow[i];
    if (!reported && sh.write_epoch == epoch && sh.writer != thread) {
      race("write-after-write", i, sh.writer, thread);
      reported = true;
    }
    if (!reported && sh.read_epoch == epoch && sh.reader != thread) {
      race("write-after-read", i, sh.reader, thread);
      reported = true;
    }
    sh.write_epoch = epoch;
    sh.writer = thread;
  }
}

float bits_to_float(uint16_t bits, MmaType type) {
  if (type == MmaType::kFloat16) {
    __half_raw raw;
    raw.x = bits;
    return __half2float(__half(raw));
  }
  __nv_bfloat16_raw raw;
  raw.x = bits;
  return __bfloat162float(__nv_bfloat16(raw));
}

// ldmatrix.x4: lanes 8i..8i+7 address the rows of matrix i (16 bytes each, 16-byte aligned).
void run_ldmatrix(Thread* lanes) {
  uint16_t m[4][8][8];
  for (int mi = 0; mi < 4; ++mi) {
    for (int r = 0; r < 8; ++r) {
      Thread& src = lanes[8 * mi + r];
      const size_t off = smem_offset(src.address, 16, "ldmatrix row");
      if (off == SIZE_MAX) {
        g_abort_block = true;
        return;
      }
      if (off % 16 != 0) error(where(src.linear) + ": ldmatrix row address not 16-byte aligned");
      shadow_read(off, 16, src.linear);
      std::memcpy(m[mi][r], g_block->smem.data() + off, 16);
    }
  }
  const bool transpose = lanes[0].transpose;
  for (int l = 0; l < 32; ++l) {
    if (lanes[l].transpose != transpose) error(where(lanes[l].linear) + ": ldmatrix .trans differs across lanes");
    const int g = l / 4, t = l % 4;
    for (int mi = 0; mi < 4; ++mi) {
      const uint16_t lo = transpose ? m[mi][2 * t][g] : m[mi][g][2 * t];
      const uint16_t hi = transpose ? m[mi][2 * t + 1][g] : m[mi][g][2 * t + 1];
      lanes[l].result[mi] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
  }
}

// mma.sync.m16n8k16.row.col.f32 with the fragment layouts of the PTX ISA (g = lane/4, t = lane%4).
void run_mma(Thread* lanes) {
  const MmaType type = lanes[0].mma_type;
  float a[16][16], b[16][8], c[16][8];
  for (int l = 0; l < 32; ++l) {
    const Thread& th = lanes[l];
    if (th.mma_type != type) error(where(th.linear) + ": mma element type differs across lanes");
    const int g = l / 4, t = l % 4;
    auto lo = [&](uint32_t w) { return bits_to_float(static_cast<uint16_t>(w & 0xffffu), type); };
    auto hi = [&](uint32_t w) { return bits_to_float(static_cast<uint16_t>(w >> 16), type); };
    a[g][2 * t] = lo(th.a[0]);
    a[g][2 * t + 1] = hi(th.a[0]);
    a[g + 8][2 * t] = lo(th.a[1]);
    a[g + 8][2 * t + 1] = hi(th.a[1]);
    a[g][2 * t + 8] = lo(th.a[2]);
    a[g][2 * t + 9] = hi(th.a[2]);
    a[g + 8][2 * t + 8] = lo(th.a[3]);
    a[g + 8][2 * t + 9] = hi(th.a[3]);
    b[2 * t][g] = lo(th.b[0]);
    b[2 * t + 1][g] = hi(th.b[0]);
    b[2 * t + 8][g] = lo(th.b[1]);
    b[2 * t + 9][g] = hi(th.b[1]);
    c[g][2 * t] = th.c[0];
    c[g][2 * t + 1] = th.c[1];
    c[g + 8][2 * t] = th.c[2];
    c[g + 8][2 * t + 1] = th.c[3];
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const int rows[4] = {g, g, g + 8, g + 8};
    const int cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int e = 0; e < 4; ++e) {
      float acc = c[rows[e]][cols[e]];
      for (int kk = 0; kk < 16; ++kk) acc += a[rows[e]][kk] * b[kk][cols[e]];
      lanes[l].d[e] = acc;
    }
  }
}

void run_shfl(Thread* lanes) {
  for (int l = 0; l < 32; ++l) {
    if (lanes[l].lane_mask != lanes[0].lane_mask) error(where(lanes[l].linear) + ": shfl lane mask differs");
    lanes[l].result[0] = lanes[l ^ lanes[0].lane_mask].value;
  }
}

void run_block(Block& block) {
  g_block = &block;
  block.epoch = 0;
  std::fill(block.smem.begin(), block.smem.end(), 0xCD);  // garbage, as on a GPU
  std::fill(block.shadow.begin(), block.shadow.end(), Shadow{});
  for (size_t i = 0; i < block.threads.size(); ++i) {
    Thread& th = block.threads[i];
    th.op = Op::kRunnable;
    th.uncommitted.clear();
    th.committed.clear();
    getcontext(&th.context);
    th.context.uc_stack.ss_sp = th.stack.data();
    th.context.uc_stack.ss_size = th.stack.size();
    th.context.uc_link = nullptr;
    makecontext(&th.context, thread_entry, 0);
  }
  const int warps = static_cast<int>(block.threads.size() / 32);
  g_abort_block = false;
  while (!g_abort_block) {
    for (Thread& th : block.threads) {
      if (th.op != Op::kRunnable) continue;
      g_thread = &th;
      swapcontext(&g_scheduler, &th.context);
    }
    bool progressed = false;
    for (int w = 0; w < warps && !g_abort_block; ++w) {
      Thread* lanes = &block.threads[32 * w];
      const Op op = lanes[0].op;
      bool uniform = true;
      for (int l = 1; l < 32; ++l) uniform = uniform && lanes[l].op == op;
      const bool collective = op == Op::kLdmatrix || op == Op::kMma || op == Op::kShfl;
      if (!uniform) {
        for (int l = 0; l < 32; ++l) {
          const Op other = lanes[l].op;
          if (other == Op::kLdmatrix || other == Op::kMma || other == Op::kShfl) {
            error(where(lanes[l].linear) + ": lanes of warp " + std::to_string(w) + " diverge at a warp collective (" +
                  op_name(op) + " vs " + op_name(other) + ")");
            g_abort_block = true;
            break;
          }
        }
        continue;
      }
      if (!collective) continue;
      if (op == Op::kLdmatrix) run_ldmatrix(lanes);
      if (op == Op::kMma) run_mma(lanes);
      if (op == Op::kShfl) run_shfl(lanes);
      for (int l = 0; l < 32; ++l) lanes[l].op = Op::kRunnable;
      progressed = true;
    }
    if (g_abort_block || progressed) continue;
    int at_barrier = 0, exited = 0;
    for (const Thread& th : block.threads) {
      at_barrier += th.op == Op::kBarrier;
      exited += th.op == Op::kExited;
    }
    if (exited == static_cast<int>(block.threads.size())) break;
    if (at_barrier + exited == static_cast<int>(block.threads.size())) {
      if (exited > 0) {
        error(where(0) + ": __syncthreads reached while " + std::to_string(exited) + " threads have exited");
        break;
      }
      ++block.epoch;
      for (Thread& th : block.threads) th.op = Op::kRunnable;
      continue;
    }
    error(where(0) + ": deadlock (threads wait at different synchronisation points)");
    break;
  }
  g_block = nullptr;
  g_thread = nullptr;
}

}  // namespace

std::string launch(Dim3 grid, Dim3 block_dim_, size_t dynamic_smem_bytes, const std::function<void()>& kernel) {
  g_errors.clear();
  const size_t nthreads = static_cast<size_t>(block_dim_.x) * block_dim_.y * block_dim_.z;
  if (nthreads % 32 != 0 || nthreads == 0 || nthreads > 1024) return "block size must be a multiple of 32 up to 1024";
  if (dynamic_smem_bytes > 227 * 1024) return "dynamic shared memory above the 227 KB of an sm_90 block";
  Block block;
  block.grid = grid;
  block.dim = block_dim_;
  block.smem.resize(dynamic_smem_bytes);
  block.shadow.resize(dynamic_smem_bytes);
  block.threads.resize(nthreads);
  for (size_t i = 0; i < nthreads; ++i) {
    Thread& th = block.threads[i];
    th.stack.resize(kStackBytes);
    th.linear = static_cast<int>(i);
    th.index.x = static_cast<unsigned>(i % block_dim_.x);
    th.index.y = static_cast<unsigned>((i / block_dim_.x) % block_dim_.y);
    th.index.z = static_cast<unsigned>(i / (static_cast<size_t>(block_dim_.x) * block_dim_.y));
  }
  g_kernel = &kernel;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        block.index = {x, y, z};
        run_block(block);
        if (g_errors.size() >= kMaxErrors) break;
      }
    }
  }
  g_kernel = nullptr;
  std::string report;
  for (const std::string& e : g_errors) report += e + "\n";
  return report;
}

Dim3 thread_index() { return g_thread->index; }
Dim3 block_index() { return g_block->index; }
Dim3 block_dim() { return g_block->dim; }
Dim3 grid_dim() { return g_block->grid; }
unsigned char* dynamic_smem() { return g_block->smem.data(); }

void syncthreads() { yield(Op::kBarrier); }

void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row, bool transpose) {
  g_thread->address = static_cast<const unsigned char*>(smem_row);
  g_thread->transpose = transpose;
  yield(Op::kLdmatrix);
  for (int i = 0; i < 4; ++i) r[i] = g_thread->result[i];
}

void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, MmaType type) {
  for (int i = 0; i < 4; ++i) {
    g_thread->a[i] = a[i];
    g_thread->c[i] = d[i];
  }
  g_thread->b[0] = b0;
  g_thread->b[1] = b1;
  g_thread->mma_type = type;
  yield(Op::kMma);
  for (int i = 0; i < 4; ++i) d[i] = g_thread->d[i];
}

uint32_t shfl_xor_u32(uint32_t value, int lane_mask) {
  g_thread->value = value;
  g_thread->lane_mask = lane_mask;
  yield(Op::kShfl);
  return g_thread->result[0];
}

void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes) {
  const size_t off = smem_offset(smem_dst, 16, "cp.async destination");
  if (off == SIZE_MAX) return;
  if (off % 16 != 0) error(where(g_thread->linear) + ": cp.async destination not 16-byte aligned");
  if (src_bytes < 0 || src_bytes > 16) error(where(g_thread->linear) + ": cp.async src size outside [0, 16]");
  if (src_bytes > 0 && reinterpret_cast<uintptr_t>(gmem_src) % 16 != 0)
    error(where(g_thread->linear) + ": cp.async source not 16-byte aligned");
  // The destination is being written from now until the wait that completes the copy.
  shadow_write(off, 16, g_thread->linear);
  g_thread->uncommitted.push_back({off, static_cast<const unsigned char*>(gmem_src), src_bytes});
}

void cp_async_commit() {
  g_thread->committed.push_back(std::move(g_thread->uncommitted));
  g_thread->uncommitted.clear();
}

void cp_async_wait(int pending) {
  while (g_thread->committed.size() > static_cast<size_t>(pending)) {
    for (const Copy& copy : g_thread->committed.front()) {
      unsigned char* dst = g_block->smem.data() + copy.smem_offset;
      if (copy.src_bytes > 0) std::memcpy(dst, copy.src, static_cast<size_t>(copy.src_bytes));
      std::memset(dst + copy.src_bytes, 0, static_cast<size_t>(16 - copy.src_bytes));
      shadow_write(copy.smem_offset, 16, g_thread->linear);
    }
    g_thread->committed.pop_front();
  }
}

void smem_write(void* smem, const void* src, size_t bytes) {
  const size_t off = smem_offset(smem, bytes, "shared store");
  if (off == SIZE_MAX) return;
  shadow_write(off, bytes, g_thread->linear);
  std::memcpy(g_block->smem.data() + off, src, bytes);
}

void smem_read(void* dst, const void* smem, size_t bytes) {
  const size_t off = smem_offset(smem, bytes, "shared load");
  if (off == SIZE_MAX) {
    std::memset(dst, 0, bytes);
    return;
  }
  shadow_read(off, bytes, g_thread->linear);
  std::memcpy(dst, g_block->smem.data() + off, bytes);
}

}  // namespace emu

// Paged attention for decode steps (one new query token per sequence), with
// split-K ("flash-decoding") for long contexts.
//
// Cache: one layer's K and V, each [num_blocks, block_size, kv_heads, D] bf16.
// Sequence s has context_lens[s] tokens in the cache (this step's token
// included, already written) at positions 0..ctx-1; position p lives in block
// block_tables[s * max_blocks + p / block_size], slot p % block_size.
//
// One block handles one sequence, one KV head and up to GP of the query heads
// that share it (GQA: query head h reads KV head h / (heads / kv_heads)), over
// one partition of the context (partition_size positions; grid.z partitions).
// Each K and V row is read from memory once per block and used by all GP heads.
//
//   phase 1: one thread per position: scores s[g][p] = (q[g] . k[p]) * scale into
//            shared memory, block max per head;
//   phase 2: e = exp(s - max) in place, block sum per head;
//   phase 3: one warp per position, each lane owning D/32 dims: acc[g] += e * v[p];
//            warps' accumulators summed in a fixed order.
//
// With one partition (gridDim.z == 1, part_out null) the block writes the bf16
// output. With several, it writes the partition's normalised f32 output and its
// (max, sum) to part_out / part_max / part_sum, and attention_decode_reduce
// combines them: out = sum_p w_p o_p / sum_p w_p with w_p = sum_p exp(max_p - M).
// Partitions past a sequence's context do nothing; the reducer only reads the
// first ceil(ctx / partition_size).
#include "common.cuh"

#define DEC_THREADS 128
#define DEC_WARPS (DEC_THREADS / WARP_SIZE)

// Positions whose V rows a warp loads before using them (memory-level parallelism).
#if __CUDA_ARCH__ >= 900
#define DEC_V_UNROLL 8  // Hopper and later: more bytes in flight to cover higher bandwidth
#else
#define DEC_V_UNROLL 4
#endif

// Dynamic shared memory (floats): q[GP][D] + scores[GP][partition_size]
// + acc[GP][D] + stats[2][GP].
template <int D, int GP>
__device__ __forceinline__ void decode_attention(
    const bf16_t* __restrict__ q, int q_stride, const bf16_t* __restrict__ k_cache,
    const bf16_t* __restrict__ v_cache, const int* __restrict__ block_tables, int max_blocks,
    const int* __restrict__ context_lens, bf16_t* __restrict__ out, float* __restrict__ part_out,
    float* __restrict__ part_max, float* __restrict__ part_sum, int heads, int kv_heads,
    int block_size, int partition_size, float scale) {
    static_assert(D % 64 == 0 && D <= 256, "head_dim a multiple of 64, at most 256");
    constexpr int VEC = D / WARP_SIZE;  // dims per lane in phase 3
    extern __shared__ float smem[];
    float* q_s = smem;                              // [GP][D]
    float* sc = q_s + GP * D;                       // [GP][partition_size]
    float* acc_s = sc + GP * partition_size;        // [GP][D]
    float* stat = acc_s + GP * D;                   // max[GP], sum[GP]
    __shared__ float red[DEC_WARPS][GP];

    const int seq = blockIdx.y, part = blockIdx.z, max_parts = gridDim.z;
    const int group = heads / kv_heads;
    const int chunks = (group + GP - 1) / GP;
    const int kvh = blockIdx.x / chunks;
    const int h0 = kvh * group + (blockIdx.x % chunks) * GP;
    const int gn = min(GP, kvh * group + group - h0);  // heads of this block
    const int ctx = context_lens[seq];
    const int start = part * partition_size;
    if (start >= ctx) return;
    const int n = min(partition_size, ctx - start);
    const int tid = threadIdx.x, lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;
    const int* table = block_tables + (size_t)seq * max_blocks;
    const size_t row = (size_t)kv_heads * D;  // elements per cache slot

    // q, pre-scaled; heads beyond gn are zero and never written out.
    const bf16_t* qs = q + (size_t)seq * q_stride + (size_t)h0 * D;
    for (int i = tid; i < GP * D; i += DEC_THREADS) q_s[i] = i < gn * D ? bf16_to_f32(qs[i]) * scale : 0.0f;
    __syncthreads();

    // Phase 1: scores.
    float m[GP];
#pragma unroll
    for (int g = 0; g < GP; ++g) m[g] = -F32_INF;
    for (int t = tid; t < n; t += DEC_THREADS) {
        const int p = start + t;
        const size_t slot = (size_t)table[p / block_size] * block_size + p % block_size;
        const uint4* kp = reinterpret_cast<const uint4*>(k_cache + slot * row + (size_t)kvh * D);
        float s[GP];
#pragma unroll
        for (int g = 0; g < GP; ++g) s[g] = 0.0f;
#pragma unroll 4
        for (int c = 0; c < D / 8; ++c) {
            float kf[8];
            unpack8(kp[c], kf);
#pragma unroll
            for (int g = 0; g < GP; ++g) {
                const float* qg = q_s + g * D + c * 8;
#pragma unroll
                for (int j = 0; j < 8; ++j) s[g] = fmaf(qg[j], kf[j], s[g]);
            }
        }
#pragma unroll
        for (int g = 0; g < GP; ++g) {
            sc[g * partition_size + t] = s[g];
            m[g] = fmaxf(m[g], s[g]);
        }
    }
#pragma unroll
    for (int g = 0; g < GP; ++g) {
        const float v = warp_max(m[g]);
        if (lane == 0) red[warp][g] = v;
    }
    __syncthreads();
    if (tid < GP) {
        float v = red[0][tid];
        for (int w = 1; w < DEC_WARPS; ++w) v = fmaxf(v, red[w][tid]);
        stat[tid] = v;
    }
    __syncthreads();

    // Phase 2: exponentials and their sums.
    float l[GP];
#pragma unroll
    for (int g = 0; g < GP; ++g) {
        l[g] = 0.0f;
        m[g] = stat[g];
    }
    for (int t = tid; t < n; t += DEC_THREADS) {
#pragma unroll
        for (int g = 0; g < GP; ++g) {
            const float e = expf(sc[g * partition_size + t] - m[g]);
            sc[g * partition_size + t] = e;
            l[g] += e;
        }
    }
    __syncthreads();  // red is reused, and phase 3 reads every thread's e
#pragma unroll
    for (int g = 0; g < GP; ++g) {
        const float v = warp_sum(l[g]);
        if (lane == 0) red[warp][g] = v;
    }
    __syncthreads();
    if (tid < GP) {
        float v = 0.0f;
        for (int w = 0; w < DEC_WARPS; ++w) v += red[w][tid];
        stat[GP + tid] = v;
    }

    // Phase 3: e-weighted V rows; lane owns dims [lane * VEC, lane * VEC + VEC).
    float acc[GP][VEC];
#pragma unroll
    for (int g = 0; g < GP; ++g)
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc[g][j] = 0.0f;
    const bf16_t* vbase = v_cache + (size_t)kvh * D + lane * VEC;
    for (int t0 = warp * DEC_V_UNROLL; t0 < n; t0 += DEC_WARPS * DEC_V_UNROLL) {
        float vf[DEC_V_UNROLL][VEC];
#pragma unroll
        for (int u = 0; u < DEC_V_UNROLL; ++u) {
            const int t = t0 + u;
            if (t < n) {
                const int p = start + t;
                const size_t slot = (size_t)table[p / block_size] * block_size + p % block_size;
                const bf16_t* vp = vbase + slot * row;
                if (VEC == 8) {
                    unpack8(*reinterpret_cast<const uint4*>(vp), vf[u]);
                } else if (VEC == 4) {
                    const uint2 w = *reinterpret_cast<const uint2*>(vp);
                    vf[u][0] = bf16_lo(w.x); vf[u][1] = bf16_hi(w.x);
                    vf[u][2] = bf16_lo(w.y); vf[u][3] = bf16_hi(w.y);
                } else {
#pragma unroll
                    for (int j = 0; j < VEC; j += 2) {
                        const u32 w = *reinterpret_cast<const u32*>(vp + j);
                        vf[u][j] = bf16_lo(w);
                        vf[u][j + 1] = bf16_hi(w);
                    }
                }
            } else {
#pragma unroll
                for (int j = 0; j < VEC; ++j) vf[u][j] = 0.0f;
            }
        }
#pragma unroll
        for (int u = 0; u < DEC_V_UNROLL; ++u) {
            const int t = min(t0 + u, n - 1);  // v is zero past n, any e will do
#pragma unroll
            for (int g = 0; g < GP; ++g) {
                const float e = sc[g * partition_size + t];
#pragma unroll
                for (int j = 0; j < VEC; ++j) acc[g][j] = fmaf(e, vf[u][j], acc[g][j]);
            }
        }
    }
    // Sum the warps' accumulators in warp order (reproducible).
    for (int w = 0; w < DEC_WARPS; ++w) {
        if (warp == w) {
#pragma unroll
            for (int g = 0; g < GP; ++g)
#pragma unroll
                for (int j = 0; j < VEC; ++j) {
                    float* a = acc_s + g * D + lane * VEC + j;
                    *a = (w == 0 ? 0.0f : *a) + acc[g][j];
                }
        }
        __syncthreads();
    }

    for (int i = tid; i < gn * D; i += DEC_THREADS) {
        const int g = i / D, d = i % D;
        const size_t head = (size_t)seq * heads + h0 + g;
        const float o = acc_s[i] / stat[GP + g];
        if (part_out == nullptr) {
            out[head * D + d] = f32_to_bf16(o);
        } else {
            part_out[(head * max_parts + part) * D + d] = o;
            if (d == 0) {
                part_max[head * max_parts + part] = stat[g];
                part_sum[head * max_parts + part] = stat[GP + g];
            }
        }
    }
}

// Combines the partitions of each (sequence, head). Grid: (heads, seqs); block: D threads.
template <int D>
__device__ __forceinline__ void decode_reduce(const float* __restrict__ part_out,
                                              const float* __restrict__ part_max,
                                              const float* __restrict__ part_sum,
                                              const int* __restrict__ context_lens,
                                              bf16_t* __restrict__ out, int heads, int max_parts,
                                              int partition_size) {
    const int h = blockIdx.x, seq = blockIdx.y, d = threadIdx.x;
    const size_t head = (size_t)seq * heads + h;
    const int ctx = context_lens[seq];
    const int parts = min(max_parts, (ctx + partition_size - 1) / partition_size);
    const float* pm = part_max + head * max_parts;
    const float* ps = part_sum + head * max_parts;
    float mx = -F32_INF;
    for (int p = 0; p < parts; ++p) mx = fmaxf(mx, pm[p]);
    float num = 0.0f, den = 0.0f;
    for (int p = 0; p < parts; ++p) {
        const float w = ps[p] * expf(pm[p] - mx);
        den += w;
        num = fmaf(w, part_out[(head * max_parts + p) * D + d], num);
    }
    out[head * D + d] = f32_to_bf16(parts > 0 ? num / den : 0.0f);
}

#define DECODE_ENTRY(D, GP)                                                                      \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS) paged_attention_decode_d##D##_g##GP( \
        const bf16_t* q, int q_stride, const bf16_t* k_cache, const bf16_t* v_cache,           \
        const int* block_tables, int max_blocks, const int* context_lens, bf16_t* out,         \
        float* part_out, float* part_max, float* part_sum, int heads, int kv_heads,            \
        int block_size, int partition_size, float scale) {                                     \
        decode_attention<D, GP>(q, q_stride, k_cache, v_cache, block_tables, max_blocks,       \
                                context_lens, out, part_out, part_max, part_sum, heads,        \
                                kv_heads, block_size, partition_size, scale);                  \
    }

#define REDUCE_ENTRY(D)                                                                         \
    extern "C" __global__ void paged_attention_decode_reduce_d##D(                              \
        const float* part_out, const float* part_max, const float* part_sum,                    \
        const int* context_lens, bf16_t* out, int heads, int max_parts, int partition_size) {   \
        decode_reduce<D>(part_out, part_max, part_sum, context_lens, out, heads, max_parts,     \
                         partition_size);                                                      \
    }

DECODE_ENTRY(64, 1)
DECODE_ENTRY(64, 2)
DECODE_ENTRY(64, 4)
DECODE_ENTRY(64, 8)
DECODE_ENTRY(128, 1)
DECODE_ENTRY(128, 2)
DECODE_ENTRY(128, 4)
DECODE_ENTRY(128, 8)
// Instantiated for the head sizes of the supported families (Llama, Mistral,
// Qwen2/3: 64 and 128); another size is one more line here and in ops.rs.
REDUCE_ENTRY(64)
REDUCE_ENTRY(128)

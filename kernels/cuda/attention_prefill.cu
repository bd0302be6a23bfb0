// Paged attention for prefill chunks (and any mix of chunks and decode rows):
// variable-length sequences, causal, the cached prefix read through block tables.
//
// Same contract as the CPU's paged_attention: q and out are [tokens, heads, D]
// (q rows q_stride elements apart); sequence s owns rows q_starts[s] ..
// q_starts[s] + q_lens[s]; it has context_lens[s] tokens in the cache once this
// step's K/V are written (the new ones are the last q_lens[s]); query row i sits
// at position context_lens[s] - q_lens[s] + i and sees positions 0..=that.
// Cache layout as in attention_decode.cu.
//
// Version 1: flash-attention-2 dataflow on CUDA cores (f32 FMA, no tensor
// cores). One block handles TOK query tokens x GP query heads of one KV head
// (R = TOK * GP rows, so a K/V tile is loaded once for every head of the group)
// and walks the keys in tiles of BN with an online softmax; the output stays in
// registers until the end. See kernels/cuda/NOTES.md for the tensor-core plan.
#include "common.cuh"

#define PF_THREADS 128

template <int D, int GP, int R, int BN>
__device__ __forceinline__ void prefill_attention(
    const bf16_t* __restrict__ q, int q_stride, const bf16_t* __restrict__ k_cache,
    const bf16_t* __restrict__ v_cache, const int* __restrict__ block_tables, int max_blocks,
    const int* __restrict__ q_starts, const int* __restrict__ q_lens,
    const int* __restrict__ context_lens, bf16_t* __restrict__ out, int heads, int kv_heads,
    int block_size, float scale) {
    static_assert(R % 16 == 0 && BN % 8 == 0 && D % 16 == 0, "tile shape");
    static_assert(R % GP == 0, "rows hold whole tokens");
    constexpr int TOK = R / GP;            // query tokens per block
    constexpr int TR = R / 16, TC = BN / 8;  // per-thread tile of S (16 x 8 thread grid)
    constexpr int DP = D / 16;             // dim pairs per thread in O
    constexpr int LD = D + 8;              // smem row stride (bf16): 16 B pad against bank conflicts
    constexpr int TPR = PF_THREADS / R;    // threads per row in the softmax step
    static_assert(PF_THREADS % R == 0 && BN % TPR == 0, "softmax mapping");

    __shared__ __align__(16) bf16_t q_s[R * LD];
    __shared__ __align__(16) bf16_t k_s[BN * LD];
    __shared__ __align__(16) bf16_t v_s[BN * LD];
    __shared__ float p_s[R * (BN + 1)];
    __shared__ float m_s[R], l_s[R], a_s[R];

    const int seq = blockIdx.y;
    const int q_len = q_lens[seq];
    const int tile0 = blockIdx.x * TOK;
    if (tile0 >= q_len) return;
    const int ntok = min(TOK, q_len - tile0);
    const int ctx = context_lens[seq];
    const int first_pos = ctx - q_len + tile0;  // position of this block's first query token
    const int kend = first_pos + ntok;          // keys needed: 0..kend
    const int group = heads / kv_heads;
    const int chunks = (group + GP - 1) / GP;
    const int kvh = blockIdx.z / chunks;
    const int h0 = kvh * group + (blockIdx.z % chunks) * GP;
    const int gn = min(GP, kvh * group + group - h0);
    const int tid = threadIdx.x, tr = tid / 8, tc = tid % 8;
    const int* table = block_tables + (size_t)seq * max_blocks;
    const size_t row = (size_t)kv_heads * D;
    const size_t q_row0 = (size_t)q_starts[seq] + tile0;

    // Q tile: row r = token r / GP, head h0 + r % GP; unused rows are zero.
    for (int i = tid; i < R * (D / 8); i += PF_THREADS) {
        const int r = i / (D / 8), c = i % (D / 8);
        const int t = r / GP, g = r % GP;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (t < ntok && g < gn) {
            const bf16_t* src = q + (q_row0 + t) * q_stride + (size_t)(h0 + g) * D + c * 8;
            if (aligned16(src)) {
                v = *reinterpret_cast<const uint4*>(src);
            } else {
                const u32 w[4] = {(u32)src[0] | ((u32)src[1] << 16), (u32)src[2] | ((u32)src[3] << 16),
                                  (u32)src[4] | ((u32)src[5] << 16), (u32)src[6] | ((u32)src[7] << 16)};
                v = make_uint4(w[0], w[1], w[2], w[3]);
            }
        }
        *reinterpret_cast<uint4*>(q_s + r * LD + c * 8) = v;
    }
    for (int r = tid; r < R; r += PF_THREADS) {
        m_s[r] = -F32_INF;
        l_s[r] = 0.0f;
    }

    float o[TR][2 * DP];
#pragma unroll
    for (int i = 0; i < TR; ++i)
#pragma unroll
        for (int j = 0; j < 2 * DP; ++j) o[i][j] = 0.0f;

    for (int kt = 0; kt < kend; kt += BN) {
        __syncthreads();  // previous tile's k_s / v_s / p_s fully used
        for (int i = tid; i < BN * (D / 8); i += PF_THREADS) {
            const int c = i / (D / 8), part = i % (D / 8);
            const int p = kt + c;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
            if (p < kend) {
                const size_t slot = (size_t)table[p / block_size] * block_size + p % block_size;
                const size_t off = slot * row + (size_t)kvh * D + part * 8;
                kv = *reinterpret_cast<const uint4*>(k_cache + off);
                vv = *reinterpret_cast<const uint4*>(v_cache + off);
            }
            *reinterpret_cast<uint4*>(k_s + c * LD + part * 8) = kv;
            *reinterpret_cast<uint4*>(v_s + c * LD + part * 8) = vv;
        }
        __syncthreads();

        // S = Q K^T for this thread's TR x TC entries.
        float s[TR][TC];
#pragma unroll
        for (int i = 0; i < TR; ++i)
#pragma unroll
            for (int j = 0; j < TC; ++j) s[i][j] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < D; d += 2) {
            float qa[TR][2], kb[TC][2];
#pragma unroll
            for (int i = 0; i < TR; ++i) {
                const u32 w = *reinterpret_cast<const u32*>(q_s + (tr + 16 * i) * LD + d);
                qa[i][0] = bf16_lo(w);
                qa[i][1] = bf16_hi(w);
            }
#pragma unroll
            for (int j = 0; j < TC; ++j) {
                const u32 w = *reinterpret_cast<const u32*>(k_s + (tc + 8 * j) * LD + d);
                kb[j][0] = bf16_lo(w);
                kb[j][1] = bf16_hi(w);
            }
#pragma unroll
            for (int i = 0; i < TR; ++i)
#pragma unroll
                for (int j = 0; j < TC; ++j)
                    s[i][j] = fmaf(qa[i][1], kb[j][1], fmaf(qa[i][0], kb[j][0], s[i][j]));
        }
#pragma unroll
        for (int i = 0; i < TR; ++i) {
            const int r = tr + 16 * i;
            const int t = r / GP;
            const int qpos = first_pos + t;
            const bool row_ok = t < ntok && (r % GP) < gn;
#pragma unroll
            for (int j = 0; j < TC; ++j) {
                const int c = tc + 8 * j;
                const bool ok = row_ok && kt + c <= qpos;
                p_s[r * (BN + 1) + c] = ok ? s[i][j] * scale : -F32_INF;
            }
        }
        __syncthreads();

        // Online softmax, TPR adjacent threads per row.
        {
            const int r = tid / TPR, part = tid % TPR;
            float* pr = p_s + r * (BN + 1);
            float mx = -F32_INF;
            for (int c = part; c < BN; c += TPR) mx = fmaxf(mx, pr[c]);
#pragma unroll
            for (int o2 = 1; o2 < TPR; o2 <<= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o2));
            const float m_old = m_s[r];
            const float m_new = fmaxf(m_old, mx);
            float alpha = 1.0f, sum = 0.0f;
            if (m_new == -F32_INF) {
                for (int c = part; c < BN; c += TPR) pr[c] = 0.0f;
            } else {
                alpha = expf(m_old - m_new);
                for (int c = part; c < BN; c += TPR) {
                    const float e = expf(pr[c] - m_new);
                    pr[c] = e;
                    sum += e;
                }
            }
#pragma unroll
            for (int o2 = 1; o2 < TPR; o2 <<= 1) sum += __shfl_xor_sync(FULL_MASK, sum, o2);
            __syncwarp();
            if (part == 0) {
                m_s[r] = m_new;
                l_s[r] = l_s[r] * alpha + sum;
                a_s[r] = alpha;
            }
        }
        __syncthreads();

        // O = O * alpha + P V.
#pragma unroll
        for (int i = 0; i < TR; ++i) {
            const float a = a_s[tr + 16 * i];
#pragma unroll
            for (int j = 0; j < 2 * DP; ++j) o[i][j] *= a;
        }
        const int cmax = min(BN, kend - kt);
        for (int c = 0; c < cmax; ++c) {
            float pv[TR];
#pragma unroll
            for (int i = 0; i < TR; ++i) pv[i] = p_s[(tr + 16 * i) * (BN + 1) + c];
#pragma unroll
            for (int j = 0; j < DP; ++j) {
                const u32 w = *reinterpret_cast<const u32*>(v_s + c * LD + 2 * tc + 16 * j);
                const float v0 = bf16_lo(w), v1 = bf16_hi(w);
#pragma unroll
                for (int i = 0; i < TR; ++i) {
                    o[i][2 * j] = fmaf(pv[i], v0, o[i][2 * j]);
                    o[i][2 * j + 1] = fmaf(pv[i], v1, o[i][2 * j + 1]);
                }
            }
        }
    }
    __syncthreads();

#pragma unroll
    for (int i = 0; i < TR; ++i) {
        const int r = tr + 16 * i;
        const int t = r / GP, g = r % GP;
        if (t >= ntok || g >= gn) continue;
        const float inv = 1.0f / l_s[r];
        bf16_t* dst = out + ((q_row0 + t) * heads + h0 + g) * D;
#pragma unroll
        for (int j = 0; j < DP; ++j) {
            *reinterpret_cast<u32*>(dst + 2 * tc + 16 * j) = pack_bf16x2(o[i][2 * j] * inv, o[i][2 * j + 1] * inv);
        }
    }
}

#define PREFILL_ENTRY(D, GP, R, BN)                                                              \
    extern "C" __global__ void __launch_bounds__(PF_THREADS) paged_attention_prefill_d##D##_g##GP( \
        const bf16_t* q, int q_stride, const bf16_t* k_cache, const bf16_t* v_cache,            \
        const int* block_tables, int max_blocks, const int* q_starts, const int* q_lens,        \
        const int* context_lens, bf16_t* out, int heads, int kv_heads, int block_size,          \
        float scale) {                                                                          \
        prefill_attention<D, GP, R, BN>(q, q_stride, k_cache, v_cache, block_tables, max_blocks, \
                                        q_starts, q_lens, context_lens, out, heads, kv_heads,    \
                                        block_size, scale);                                     \
    }

// Head sizes 64 and 128 (see attention_decode.cu); 256 would use R = 32, BN = 16
// to stay within 48 KiB of shared memory.
PREFILL_ENTRY(64, 1, 64, 32)
PREFILL_ENTRY(64, 2, 64, 32)
PREFILL_ENTRY(64, 4, 64, 32)
PREFILL_ENTRY(64, 8, 64, 32)
PREFILL_ENTRY(128, 1, 64, 32)
PREFILL_ENTRY(128, 2, 64, 32)
PREFILL_ENTRY(128, 4, 64, 32)
PREFILL_ENTRY(128, 8, 64, 32)

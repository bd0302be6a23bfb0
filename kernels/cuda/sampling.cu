// On-device sampling: penalties, then greedy / temperature, top-k, min-p, top-p
// and a seeded draw; only the chosen token ids go back to the host.
//
// Semantics follow the engine's CPU Sampler (engine/src/sampling.rs):
//   - candidates are the finite logits, scaled by 1 / temperature;
//   - order: higher scaled logit first, lower token id first on ties;
//   - top-k keeps the k best; probabilities are the softmax over what top-k kept;
//   - min-p keeps tokens with p >= min_p * p_max; top-p keeps a token while the
//     mass of the better tokens is < top_p; the tightest of the three cuts wins,
//     and at least one token stays;
//   - temperature 0, no candidate, or an infinite scaled maximum: argmax.
// To make the result independent of thread scheduling (and reproducible by the
// CPU twin bit for bit), every probability mass is a 64-bit fixed-point integer,
// fx(e) = floor(exp(c - max) * 2^40), summed with integer adds, and exp is
// exp_nonpos from common.cuh. The draw walks the kept tokens in id order (the
// CPU walks them best first: same distribution, different token for a given
// random number). Randomness: Philox4x32-10 keyed by the request's seed, counter =
// the request's draw number, so a request's tokens do not depend on its batch.
#include "common.cuh"

#define SAMPLE_THREADS 512
#define SAMPLE_WARPS (SAMPLE_THREADS / WARP_SIZE)
#define FX_ONE 1099511627776.0f  // 2^40

// One row's parameters. Must match `SampleParams` in kernels/src/cuda_twin/sampling.rs.
struct SampleParams {
    float temperature;  // 0: greedy
    float top_p;        // 1: off
    float min_p;        // 0: off
    int top_k;          // 0: off
    u64 seed;
    u64 counter;        // which draw of the request this is
};

// Philox4x32-10 (Salmon et al. 2011); returns the first two output words.
__device__ __forceinline__ u64 philox_u64(u64 seed, u64 counter) {
    u32 c0 = (u32)counter, c1 = (u32)(counter >> 32), c2 = 0, c3 = 0;
    u32 k0 = (u32)seed, k1 = (u32)(seed >> 32);
#pragma unroll
    for (int i = 0; i < 10; ++i) {
        const u32 hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        const u32 hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        const u32 n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return (u64)c0 | ((u64)c1 << 32);
}

// A total order key: value bits made unsigned-comparable, then the inverted id,
// so a larger key is a better token and no two tokens share a key. Never 0.
__device__ __forceinline__ u64 order_key(float v, int i) {
    u32 u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((u64)u << 32) | (u64)(0xffffffffu - (u32)i);
}
__device__ __forceinline__ u32 key_token(u64 key) { return 0xffffffffu - (u32)key; }

__device__ __forceinline__ u64 fx_mass(float e) { return __float2ull_rz(__fmul_rn(e, FX_ONE)); }

__device__ __forceinline__ u64 warp_sum_u64(u64 v) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ u64 warp_max_u64(u64 v) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) {
        const u64 w = __shfl_xor_sync(FULL_MASK, v, o);
        v = w > v ? w : v;
    }
    return v;
}
__device__ __forceinline__ u64 warp_min_u64(u64 v) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) {
        const u64 w = __shfl_xor_sync(FULL_MASK, v, o);
        v = w < v ? w : v;
    }
    return v;
}

// op: 0 sum, 1 max, 2 min. Every thread gets the result.
__device__ __forceinline__ u64 block_reduce_u64(u64 v, int op, u64* scratch) {
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    v = op == 0 ? warp_sum_u64(v) : op == 1 ? warp_max_u64(v) : warp_min_u64(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const u64 idle = op == 0 ? 0ull : op == 1 ? 0ull : ~0ull;
    v = lane < SAMPLE_WARPS ? scratch[lane] : idle;
    return op == 0 ? warp_sum_u64(v) : op == 1 ? warp_max_u64(v) : warp_min_u64(v);
}

struct Row {
    const float* logits;
    int vocab;
    float inv_t;
    float max;
    // Candidate i: its key and scaled logit, or false when the logit is not finite.
    __device__ __forceinline__ bool cand(int i, u64& key, float& c) const {
        const float l = logits[i];
        if (!is_finite_f32(l)) return false;
        c = __fmul_rn(l, inv_t);
        if (c != c) return false;
        key = order_key(c, i);
        return true;
    }
    __device__ __forceinline__ u64 fx(float c) const { return fx_mass(exp_nonpos(__fsub_rn(c, max))); }
};

__shared__ u32 hist_cnt[256];
__shared__ u64 hist_mass[256];
__shared__ u64 pick[3];

// Radix select over the 64-bit keys, most significant byte first. With by_mass
// false: the key of the need-th best candidate (need >= 1). With by_mass true:
// the best key K such that the mass of the candidates >= K (among keys >= floor)
// reaches need. Stops as soon as the selected bucket is settled; the returned
// prefix (low bytes zero) then selects the same set through `key >= prefix`.
__device__ u64 radix_select(const Row& row, u64 floor, bool by_mass, u64 need) {
    const int tid = threadIdx.x;
    u64 prefix = 0, mask = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += SAMPLE_THREADS) {
            hist_cnt[b] = 0;
            hist_mass[b] = 0;
        }
        __syncthreads();
        for (int i = tid; i < row.vocab; i += SAMPLE_THREADS) {
            u64 key;
            float c;
            if (!row.cand(i, key, c) || key < floor || (key & mask) != prefix) continue;
            const int b = (int)((key >> shift) & 0xff);
            atomicAdd(&hist_cnt[b], 1u);
            if (by_mass) atomicAdd(&hist_mass[b], row.fx(c));
        }
        __syncthreads();
        if (tid == 0) {
            u64 above = 0;
            int b = 255;
            for (; b > 0; --b) {
                const u64 here = by_mass ? hist_mass[b] : (u64)hist_cnt[b];
                if (above + here >= need) break;
                above += here;
            }
            pick[0] = (u64)b;
            pick[1] = above;
            pick[2] = hist_cnt[b];
        }
        __syncthreads();
        const u64 b = pick[0], above = pick[1], cnt = pick[2];
        __syncthreads();  // pick and the histograms are rewritten next round
        prefix |= b << shift;
        mask |= 0xffull << shift;
        if (by_mass) {
            need -= above;
            if (cnt == 1) break;
        } else {
            need -= above;
            if (cnt == need) break;
        }
    }
    return prefix;
}

__device__ u32 argmax_token(const float* logits, int vocab, u64* scratch) {
    u64 best = 0;
    for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) {
        const float l = logits[i];
        if (l == l) {
            const u64 k = order_key(l, i);
            best = k > best ? k : best;
        }
    }
    best = block_reduce_u64(best, 1, scratch);
    return best == 0 ? 0u : key_token(best);
}

// logits: [rows, vocab] f32 (penalties already applied); params: [rows];
// tokens: [rows] out. Grid: one block of SAMPLE_THREADS per row.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_tokens_f32(const float* __restrict__ logits, int vocab,
                      const SampleParams* __restrict__ params, u32* __restrict__ tokens) {
    __shared__ u64 scratch[SAMPLE_WARPS];
    __shared__ float fscratch[32];
    const int tid = threadIdx.x;
    const SampleParams p = params[blockIdx.x];
    Row row;
    row.logits = logits + (size_t)blockIdx.x * vocab;
    row.vocab = vocab;
    row.max = 0.0f;
    if (!(p.temperature > 0.0f)) {
        const u32 t = argmax_token(row.logits, vocab, scratch);
        if (tid == 0) tokens[blockIdx.x] = t;
        return;
    }
    row.inv_t = __fdiv_rn(1.0f, p.temperature);

    float mx = -F32_INF;
    u64 n = 0, best = 0;
    for (int i = tid; i < vocab; i += SAMPLE_THREADS) {
        u64 key;
        float c;
        if (row.cand(i, key, c)) {
            mx = fmaxf(mx, c);
            best = key > best ? key : best;
            ++n;
        }
    }
    mx = block_max(mx, fscratch);
    n = block_reduce_u64(n, 0, scratch);
    best = block_reduce_u64(best, 1, scratch);
    if (n == 0 || !is_finite_f32(mx)) {
        const u32 t = argmax_token(row.logits, vocab, scratch);
        if (tid == 0) tokens[blockIdx.x] = t;
        return;
    }
    row.max = mx;

    // top-k: keys >= kk.
    const u64 kk = (p.top_k > 0 && (u64)p.top_k < n) ? radix_select(row, 0, false, (u64)p.top_k) : 0;

    // Mass of the top-k set and the min-p cut (min_p * p_max with p_max = exp(0) = 1).
    u64 total = 0, km = ~0ull;
    for (int i = tid; i < vocab; i += SAMPLE_THREADS) {
        u64 key;
        float c;
        if (!row.cand(i, key, c) || key < kk) continue;
        const float e = exp_nonpos(__fsub_rn(c, mx));
        total += fx_mass(e);
        if (e >= p.min_p && key < km) km = key;
    }
    total = block_reduce_u64(total, 0, scratch);
    km = p.min_p > 0.0f ? block_reduce_u64(km, 2, scratch) : 0;

    // top-p: the best key whose cumulative mass reaches top_p of the total.
    u64 kp = 0;
    if (p.top_p < 1.0f) {
        const u64 target = (u64)ceil((double)p.top_p * (double)total);
        kp = radix_select(row, kk, true, target > 0 ? target : 1);
    }
    u64 keep = kk > km ? kk : km;
    keep = keep > kp ? keep : kp;

    // Draw: thread t owns the ids [t * chunk, (t + 1) * chunk); an exclusive scan of
    // the owners' kept mass places r in exactly one owner, which walks its ids.
    const int chunk = (vocab + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    const int lo = min(vocab, tid * chunk), hi = min(vocab, lo + chunk);
    u64 mine = 0;
    for (int i = lo; i < hi; ++i) {
        u64 key;
        float c;
        if (row.cand(i, key, c) && key >= keep) mine += row.fx(c);
    }
    const int lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;
    // The best token stands in should rounding leave r unclaimed (it cannot: r < kept).
    if (tid == 0) tokens[blockIdx.x] = key_token(best);
    __syncthreads();  // also: scratch may still be read by the last reduction
    u64 incl = mine;
#pragma unroll
    for (int o = 1; o < WARP_SIZE; o <<= 1) {
        const u64 v = __shfl_up_sync(FULL_MASK, incl, o);
        if (lane >= o) incl += v;
    }
    if (lane == WARP_SIZE - 1) scratch[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        u64 w = lane < SAMPLE_WARPS ? scratch[lane] : 0;
#pragma unroll
        for (int o = 1; o < WARP_SIZE; o <<= 1) {
            const u64 v = __shfl_up_sync(FULL_MASK, w, o);
            if (lane >= o) w += v;
        }
        if (lane < SAMPLE_WARPS) scratch[lane] = w;  // inclusive totals per warp
    }
    __syncthreads();
    const u64 kept = scratch[SAMPLE_WARPS - 1];
    const u64 excl = incl - mine + (warp > 0 ? scratch[warp - 1] : 0);
    const u64 r = __umul64hi(philox_u64(p.seed, p.counter), kept);
    if (mine > 0 && r >= excl && r < excl + mine) {
        u64 acc = excl;
        for (int i = lo; i < hi; ++i) {
            u64 key;
            float c;
            if (!row.cand(i, key, c) || key < keep) continue;
            acc += row.fx(c);
            if (acc > r) {
                tokens[blockIdx.x] = (u32)i;
                break;
            }
        }
    }
}

// Repetition, presence and frequency penalties, in place, in the CPU's order:
// for each (token, count) of row r (entries offsets[r] .. offsets[r + 1]; count 0
// means "in the prompt only"), a logit l becomes l / rep (l > 0) or l * rep, then,
// when count > 0, l - (presence + frequency * count). Entries must not repeat a
// token within a row; tokens outside the vocabulary are skipped.
// Grid: one block per row.
extern "C" __global__ void apply_penalties_f32(float* __restrict__ logits, int vocab,
                                               const int* __restrict__ offsets,
                                               const u32* __restrict__ entry_tokens,
                                               const u32* __restrict__ entry_counts,
                                               const float* __restrict__ repetition,
                                               const float* __restrict__ presence,
                                               const float* __restrict__ frequency) {
    const int r = blockIdx.x;
    float* row = logits + (size_t)r * vocab;
    const float rep = repetition[r], pres = presence[r], freq = frequency[r];
    for (int e = offsets[r] + threadIdx.x; e < offsets[r + 1]; e += blockDim.x) {
        const u32 tok = entry_tokens[e];
        if (tok >= (u32)vocab) continue;
        const u32 n = entry_counts[e];
        float l = row[tok];
        if (rep != 1.0f) l = l > 0.0f ? __fdiv_rn(l, rep) : __fmul_rn(l, rep);
        if (n > 0) l = __fsub_rn(l, __fadd_rn(pres, __fmul_rn(freq, (float)n)));
        row[tok] = l;
    }
}

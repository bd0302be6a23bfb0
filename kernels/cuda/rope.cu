// Rotary position embeddings on Q and K, with the optional per-head RMSNorm
// that Qwen3 applies to Q and K before rotating.
#include "common.cuh"

#define ROPE_WARPS 4
#define ROPE_MAX_HEAD_DIM 256

// In place on q ([tokens, q_stride], the first heads * head_dim elements of a row)
// and k ([tokens, k_stride], kv_heads * head_dim), for token t at positions[t]:
//   1. when q_norm / k_norm is given: x = x / sqrt(mean(x^2) + eps) * norm over each head;
//   2. rotate pairs with angle positions[t] * inv_freq[i] for i < rot_half:
//      (i, i + rot_half) when interleaved == 0 (Hugging Face rotate_half, GPT-NeoX),
//      (2i, 2i + 1) when interleaved != 0 (GPT-J, llama.cpp's llama GGUFs);
//      cos and sin are multiplied by attention_factor. Dimensions >= 2 * rot_half
//      are left as they are (partial rotary).
// inv_freq is the host's table with any scaling folded in (linear, llama3's
// piecewise scaling, GGUF rope_freqs), exactly what the CPU path uses.
// Math in f32, one rounding to bf16 at the end. head_dim <= 256, even.
// Grid: one block per token; block: ROPE_WARPS warps, one head per warp at a time.
extern "C" __global__ void rope_qk_bf16(bf16_t* __restrict__ q, bf16_t* __restrict__ k,
                                        const int* __restrict__ positions,
                                        const float* __restrict__ inv_freq,
                                        const bf16_t* __restrict__ q_norm,
                                        const bf16_t* __restrict__ k_norm, int heads,
                                        int kv_heads, int head_dim, int rot_half, int q_stride,
                                        int k_stride, int interleaved, float attention_factor,
                                        float eps) {
    __shared__ float buf[ROPE_WARPS][ROPE_MAX_HEAD_DIM];
    const int t = blockIdx.x;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const float pos = (float)positions[t];
    float* s = buf[warp];
    for (int h = warp; h < heads + kv_heads; h += ROPE_WARPS) {
        const bool is_q = h < heads;
        bf16_t* x = is_q ? q + (size_t)t * q_stride + (size_t)h * head_dim
                         : k + (size_t)t * k_stride + (size_t)(h - heads) * head_dim;
        const bf16_t* norm = is_q ? q_norm : k_norm;
        float ss = 0.0f;
        for (int j = lane; j < head_dim; j += WARP_SIZE) {
            const float v = bf16_to_f32(x[j]);
            s[j] = v;
            ss = fmaf(v, v, ss);
        }
        if (norm) {
            const float inv = rsqrtf(warp_sum(ss) / (float)head_dim + eps);
            for (int j = lane; j < head_dim; j += WARP_SIZE) s[j] = s[j] * inv * bf16_to_f32(norm[j]);
        }
        __syncwarp();
        for (int i = lane; i < rot_half; i += WARP_SIZE) {
            const int a = interleaved ? 2 * i : i;
            const int b = interleaved ? 2 * i + 1 : i + rot_half;
            // Same f32 steps as the CPU: the angle pos * inv_freq, then cos and sin.
            const float angle = __fmul_rn(pos, inv_freq[i]);
            float sn, cs;
            sincosf(angle, &sn, &cs);
            cs *= attention_factor;
            sn *= attention_factor;
            const float x0 = s[a], x1 = s[b];
            s[a] = x0 * cs - x1 * sn;
            s[b] = x1 * cs + x0 * sn;
        }
        __syncwarp();
        for (int j = lane; j < head_dim; j += WARP_SIZE) x[j] = f32_to_bf16(s[j]);
        __syncwarp();  // the next head reuses s
    }
}

// Fused residual add + RMSNorm.
#include "common.cuh"

// For each row r (one block per row):
//   residual[r] += delta[r]            (skipped when delta is null, e.g. before layer 0)
//   out[r] = bf16(residual[r] / sqrt(mean(residual[r]^2) + eps) * weight)
// residual: [rows, d] f32 (the residual stream stays f32, as on the CPU);
// delta: [rows, d] bf16 or null; weight: [d] bf16; out: [rows, d] bf16.
// The sum of squares is accumulated in f32 in a fixed order (per thread, then
// the block tree), so the result does not depend on the launch.
extern "C" __global__ void add_rms_norm_bf16(float* __restrict__ residual,
                                             const bf16_t* __restrict__ delta,
                                             const bf16_t* __restrict__ weight,
                                             bf16_t* __restrict__ out, int d, float eps) {
    __shared__ float scratch[32];
    float* x = residual + (size_t)blockIdx.x * d;
    const bf16_t* dx = delta ? delta + (size_t)blockIdx.x * d : nullptr;
    bf16_t* o = out + (size_t)blockIdx.x * d;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float v = x[i];
        if (dx) {
            v += bf16_to_f32(dx[i]);
            x[i] = v;
        }
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / (float)d + eps);
    // Each thread reads back only the elements it wrote itself: no barrier needed.
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        o[i] = f32_to_bf16(x[i] * inv * bf16_to_f32(weight[i]));
    }
}

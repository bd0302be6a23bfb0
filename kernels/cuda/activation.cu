// SwiGLU's middle: silu(gate) * up.
#include "common.cuh"

// out[r, i] = bf16(silu(gate[r, i]) * up[r, i]) for i < ff, silu(g) = g / (1 + exp(-g)).
// gate and up rows are in_stride elements apart: a fused [gate | up] projection
// has up = gate + ff and in_stride = 2 * ff; separate buffers use in_stride = ff.
// out: [rows, ff]. Grid: (ceil(ff / (8 * blockDim.x)), rows).
extern "C" __global__ void silu_mul_bf16(const bf16_t* __restrict__ gate,
                                         const bf16_t* __restrict__ up,
                                         bf16_t* __restrict__ out, int ff, int in_stride) {
    const size_t r = blockIdx.y;
    const bf16_t* g = gate + r * in_stride;
    const bf16_t* u = up + r * in_stride;
    bf16_t* o = out + r * ff;
    const int base = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (base >= ff) return;
    if (base + 8 <= ff && aligned16(g + base) && aligned16(u + base) && aligned16(o + base)) {
        float gf[8], uf[8];
        unpack8(*reinterpret_cast<const uint4*>(g + base), gf);
        unpack8(*reinterpret_cast<const uint4*>(u + base), uf);
        float y[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) y[j] = gf[j] / (1.0f + expf(-gf[j])) * uf[j];
        uint4 w;
        w.x = pack_bf16x2(y[0], y[1]);
        w.y = pack_bf16x2(y[2], y[3]);
        w.z = pack_bf16x2(y[4], y[5]);
        w.w = pack_bf16x2(y[6], y[7]);
        *reinterpret_cast<uint4*>(o + base) = w;
    } else {
        for (int i = base; i < min(base + 8, ff); ++i) {
            const float gv = bf16_to_f32(g[i]);
            o[i] = f32_to_bf16(gv / (1.0f + expf(-gv)) * bf16_to_f32(u[i]));
        }
    }
}

// Embedding gather: the first step of the forward pass.
#include "common.cuh"

// out[t, :] = table[tokens[t], :] as f32 (the residual stream is f32).
// table: [vocab, hidden] bf16; tokens: [num_tokens]; out: [num_tokens, hidden].
// A token outside the vocabulary gives a row of zeros instead of a stray read
// (the host validates tokens before launching; this is the last line of defence).
// Grid: one block per token.
extern "C" __global__ void embedding_gather_bf16(const bf16_t* __restrict__ table,
                                                 const u32* __restrict__ tokens,
                                                 float* __restrict__ out, int hidden, int vocab) {
    const u32 tok = tokens[blockIdx.x];
    float* o = out + (size_t)blockIdx.x * hidden;
    if (tok >= (u32)vocab) {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = 0.0f;
        return;
    }
    const bf16_t* row = table + (size_t)tok * hidden;
    if ((hidden & 7) == 0 && aligned16(row) && aligned16(o)) {
        const uint4* src = reinterpret_cast<const uint4*>(row);
        float4* dst = reinterpret_cast<float4*>(o);
        for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) {
            float f[8];
            unpack8(src[i], f);
            dst[2 * i] = make_float4(f[0], f[1], f[2], f[3]);
            dst[2 * i + 1] = make_float4(f[4], f[5], f[6], f[7]);
        }
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = bf16_to_f32(row[i]);
    }
}

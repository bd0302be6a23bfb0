// Small kernels the executor needs around the GEMMs: bias add, row gather,
// and device-side weight initialisation (benchmarks without downloads).
#include "common.cuh"

// y[r, i] = bf16(y[r, i] + b[i]) for i < n; rows `stride` elements apart.
// Grid: (column blocks, rows).
extern "C" __global__ void bias_add_bf16(bf16_t* __restrict__ y, const bf16_t* __restrict__ b,
                                         int n, int stride) {
    bf16_t* row = y + (size_t)blockIdx.y * stride;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        row[i] = f32_to_bf16(bf16_to_f32(row[i]) + bf16_to_f32(b[i]));
}

// dst[i, :] = src[rows[i], :] (`width` f32 each); a row index outside
// [0, src_rows) gives zeros. Grid: one block per output row.
extern "C" __global__ void gather_rows_f32(const float* __restrict__ src, const int* __restrict__ rows,
                                           float* __restrict__ dst, int width, int src_rows) {
    const int r = rows[blockIdx.x];
    float* o = dst + (size_t)blockIdx.x * width;
    const bool ok = r >= 0 && r < src_rows;
    const float* s = src + (size_t)(ok ? r : 0) * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) o[i] = ok ? s[i] : 0.0f;
}

// The same for bf16 rows.
extern "C" __global__ void gather_rows_bf16(const bf16_t* __restrict__ src, const int* __restrict__ rows,
                                            bf16_t* __restrict__ dst, int width, int src_rows) {
    const int r = rows[blockIdx.x];
    bf16_t* o = dst + (size_t)blockIdx.x * width;
    const bool ok = r >= 0 && r < src_rows;
    const bf16_t* s = src + (size_t)(ok ? r : 0) * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) o[i] = ok ? s[i] : (bf16_t)0;
}

// splitmix64's finaliser: a counter-based hash, so element i's value depends
// only on (seed, i), whatever the launch shape.
__device__ __forceinline__ u64 mix64(u64 x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// out[i] = bf16(scale * (2u - 1)) with u = top 24 bits of mix64(seed + i * golden) / 2^24:
// uniform in [-scale, scale). Grid-stride over n elements.
extern "C" __global__ void fill_uniform_bf16(bf16_t* __restrict__ out, u64 n, u64 seed, float scale) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        const u64 h = mix64(seed + i * 0x9e3779b97f4a7c15ull);
        const float u = (float)(h >> 40) * (1.0f / 16777216.0f);
        out[i] = f32_to_bf16(__fmul_rn(scale, __fsub_rn(__fmul_rn(2.0f, u), 1.0f)));
    }
}

// out[i] = bf16(value). Grid-stride over n elements.
extern "C" __global__ void fill_bf16(bf16_t* __restrict__ out, u64 n, float value) {
    const bf16_t v = f32_to_bf16(value);
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        out[i] = v;
}

// The paged KV cache: writing this step's K/V rows and copying blocks.
//
// Layout of one layer's K (and, separately, V): [num_blocks, block_size, kv_heads,
// head_dim] bf16, i.e. [num_slots, kv_dim] with slot = block * block_size + offset,
// the CPU cache's layout. The executor keeps all layers in one allocation,
// [layers][2 (K, V)][num_blocks * block_size * kv_dim], each K or V a "plane".
#include "common.cuh"

// k_cache[slots[t], :] = k[t, :kv_dim] and v_cache[slots[t], :] = v[t, :kv_dim];
// k and v rows are k_stride / v_stride elements apart (they may sit inside a fused
// QKV buffer). A negative slot skips the token (padding rows of a captured batch);
// so does a slot >= num_slots (never written out of bounds).
// Grid: one block per token.
extern "C" __global__ void write_kv_bf16(const bf16_t* __restrict__ k,
                                         const bf16_t* __restrict__ v,
                                         bf16_t* __restrict__ k_cache,
                                         bf16_t* __restrict__ v_cache,
                                         const int* __restrict__ slots, int kv_dim, int k_stride,
                                         int v_stride, int num_slots) {
    const int t = blockIdx.x;
    const int slot = slots[t];
    if (slot < 0 || slot >= num_slots) return;
    const bf16_t* ks = k + (size_t)t * k_stride;
    const bf16_t* vs = v + (size_t)t * v_stride;
    bf16_t* kd = k_cache + (size_t)slot * kv_dim;
    bf16_t* vd = v_cache + (size_t)slot * kv_dim;
    if ((kv_dim & 7) == 0 && aligned16(ks) && aligned16(vs) && aligned16(kd) && aligned16(vd)) {
        for (int i = threadIdx.x; i < kv_dim / 8; i += blockDim.x) {
            reinterpret_cast<uint4*>(kd)[i] = reinterpret_cast<const uint4*>(ks)[i];
            reinterpret_cast<uint4*>(vd)[i] = reinterpret_cast<const uint4*>(vs)[i];
        }
    } else {
        for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
            kd[i] = ks[i];
            vd[i] = vs[i];
        }
    }
}

// For each pair p (grid.x) and each plane (grid.y): copies block pairs[2p] to block
// pairs[2p + 1] in plane `blockIdx.y`, planes being plane_elems elements apart from
// `cache`. block_elems = block_size * kv_dim; a pair naming a block outside
// 0..num_blocks is skipped. Copy-on-write for shared prefixes.
extern "C" __global__ void copy_blocks_bf16(bf16_t* __restrict__ cache,
                                            const int* __restrict__ pairs, i64 plane_elems,
                                            int block_elems, int num_blocks) {
    const int src = pairs[2 * blockIdx.x], dst = pairs[2 * blockIdx.x + 1];
    if (src < 0 || dst < 0 || src >= num_blocks || dst >= num_blocks) return;
    bf16_t* plane = cache + (size_t)blockIdx.y * plane_elems;
    const bf16_t* s = plane + (size_t)src * block_elems;
    bf16_t* d = plane + (size_t)dst * block_elems;
    if ((block_elems & 7) == 0 && aligned16(s) && aligned16(d)) {
        for (int i = threadIdx.x; i < block_elems / 8; i += blockDim.x)
            reinterpret_cast<uint4*>(d)[i] = reinterpret_cast<const uint4*>(s)[i];
    } else {
        for (int i = threadIdx.x; i < block_elems; i += blockDim.x) d[i] = s[i];
    }
}

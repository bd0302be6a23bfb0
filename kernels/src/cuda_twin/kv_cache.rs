//! Twin of kv_cache.cu: writing new K/V rows into the paged cache and copying blocks.

use half::bf16;

/// `k_cache[slots[t]] = k[t]`, `v_cache[slots[t]] = v[t]` (rows of `kv_dim`;
/// input rows `k_stride` / `v_stride` apart); a slot outside the cache
/// (negative, or past its end) skips the token.
#[allow(clippy::too_many_arguments)]
pub fn write_kv(
    k: &[bf16],
    v: &[bf16],
    k_stride: usize,
    v_stride: usize,
    kv_dim: usize,
    slots: &[i32],
    k_cache: &mut [bf16],
    v_cache: &mut [bf16],
) {
    for (t, &slot) in slots.iter().enumerate() {
        let Ok(s) = usize::try_from(slot) else {
            continue;
        };
        if (s + 1) * kv_dim > k_cache.len() {
            continue;
        }
        k_cache[s * kv_dim..(s + 1) * kv_dim]
            .copy_from_slice(&k[t * k_stride..t * k_stride + kv_dim]);
        v_cache[s * kv_dim..(s + 1) * kv_dim]
            .copy_from_slice(&v[t * v_stride..t * v_stride + kv_dim]);
    }
}

/// For every plane (`cache.len() / plane_elems` of them: each layer's K and V)
/// and every `(src, dst)` pair: copies block `src` to block `dst`
/// (`block_elems = block_size * kv_dim` elements).
pub fn copy_blocks(
    cache: &mut [bf16],
    pairs: &[(i32, i32)],
    plane_elems: usize,
    block_elems: usize,
) {
    let blocks = (plane_elems / block_elems) as i32;
    for plane in cache.chunks_exact_mut(plane_elems) {
        for &(src, dst) in pairs {
            if !(0..blocks).contains(&src) || !(0..blocks).contains(&dst) {
                continue;
            }
            let (s, d) = (src as usize * block_elems, dst as usize * block_elems);
            plane.copy_within(s..s + block_elems, d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::attention::write_kv as cpu_write_kv;
    use crate::cuda_twin::{to_bf16, to_f32};

    #[test]
    fn write_matches_the_cpu_cache_and_skips_negative_slots() {
        let (kv_dim, stride, slots_total) = (8usize, 24usize, 12usize);
        let qkv = to_bf16(&(0..5 * stride).map(|i| i as f32).collect::<Vec<f32>>());
        // K at offset 8, V at offset 16 of each fused row.
        let slots = [5i32, -1, 0, 11, 12];
        let mut kc = vec![bf16::ZERO; slots_total * kv_dim];
        let mut vc = vec![bf16::ZERO; slots_total * kv_dim];
        write_kv(
            &qkv[8..],
            &qkv[16..],
            stride,
            stride,
            kv_dim,
            &slots,
            &mut kc,
            &mut vc,
        );

        let rows = |off: usize| -> Vec<f32> {
            [0usize, 2, 3]
                .iter()
                .flat_map(|&t| to_f32(&qkv[t * stride + off..t * stride + off + kv_dim]))
                .collect()
        };
        let mut ck = vec![0f32; slots_total * kv_dim];
        let mut cv = vec![0f32; slots_total * kv_dim];
        cpu_write_kv(&mut ck, &mut cv, &[5, 0, 11], &rows(8), &rows(16));
        assert_eq!(to_f32(&kc), ck);
        assert_eq!(to_f32(&vc), cv);
    }

    #[test]
    fn copy_blocks_copies_in_every_plane_only() {
        let (planes, blocks, be) = (4usize, 5usize, 6usize);
        let orig = to_bf16(
            &(0..planes * blocks * be)
                .map(|i| i as f32)
                .collect::<Vec<f32>>(),
        );
        let mut c = orig.clone();
        copy_blocks(&mut c, &[(1, 3), (4, 0), (2, 5), (-1, 2)], blocks * be, be);
        for p in 0..planes {
            for b in 0..blocks {
                let src = match b {
                    3 => 1,
                    0 => 4,
                    b => b,
                };
                let at = |blk: usize| p * blocks * be + blk * be;
                assert_eq!(c[at(b)..at(b) + be], orig[at(src)..at(src) + be]);
            }
        }
    }
}

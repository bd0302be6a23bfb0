//! Every CUDA kernel against its CPU twin (factory_kernels::cuda_twin) on
//! fresh random inputs, with outputs poisoned (NaN) before each launch so an
//! unwritten element shows. Without a GPU each test prints a loud
//! "SKIPPED: no CUDA device" and passes.
#![cfg(feature = "cuda")]

mod cuda_common;

use cuda_common::{gemm_or_skip, gpu_or_skip};
use factory_kernels::cuda::ops::{DecodeAttention, DecodeScratch, PrefillAttention, RopeShape};
use factory_kernels::cuda::{
    CudaError, CudaKernels, CudaSlice, CudaStream, DevicePtrDyn, DeviceRepr,
};
use factory_kernels::cuda_twin::attention::{BlockTables, Heads, PagedKv, PrefillSeqs};
use factory_kernels::cuda_twin::sampling::{Penalties, SampleParams};
use factory_kernels::cuda_twin::{self as twin, bf16, to_bf16, to_f32};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

type Rng64 = rand::rngs::StdRng;

fn rng(test: &str) -> Rng64 {
    // A different stream per test and per run: the kernels must be right on any input.
    let seed = rand::rng().random::<u64>();
    eprintln!("{test}: seed {seed}");
    Rng64::seed_from_u64(seed)
}

fn randn(rng: &mut Rng64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect()
}

fn up<T: DeviceRepr>(s: &Arc<CudaStream>, v: &[T]) -> CudaSlice<T> {
    s.clone_htod(v).expect("upload")
}

fn down<T: DeviceRepr>(s: &Arc<CudaStream>, v: &CudaSlice<T>) -> Vec<T> {
    let out = s.clone_dtoh(v).expect("download");
    s.synchronize().expect("synchronize");
    out
}

/// ‖a − b‖ / ‖b‖ over f32 views, and every element of `a` finite.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert!(
        a.iter().all(|v| v.is_finite()),
        "non-finite output (unwritten element?)"
    );
    let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f32 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-30)).sqrt()
}

fn kernels(test: &str) -> Option<(Arc<CudaStream>, CudaKernels)> {
    let (dev, k) = gpu_or_skip(test)?;
    Some((dev.stream.clone(), k))
}

#[test]
fn embedding_gather_matches_the_twin() {
    let Some((s, k)) = kernels("embedding_gather_matches_the_twin") else {
        return;
    };
    let mut r = rng("embedding");
    for (vocab, hidden) in [(1000usize, 192usize), (77, 100)] {
        let table = to_bf16(&randn(&mut r, vocab * hidden, 2.0));
        let mut tokens: Vec<u32> = (0..33).map(|_| r.random_range(0..vocab as u32)).collect();
        tokens[5] = vocab as u32 + 3; // outside the vocabulary: zeros
        let mut want = vec![f32::NAN; tokens.len() * hidden];
        twin::embedding::embedding_gather(&table, hidden, &tokens, &mut want);
        let (t, tok) = (up(&s, &table), up(&s, &tokens));
        let mut out = up(&s, &vec![f32::NAN; want.len()]);
        k.embedding_gather(&t, vocab, hidden, &tok, &mut out)
            .unwrap();
        assert_eq!(down(&s, &out), want);
    }
}

#[test]
fn add_rms_norm_matches_the_twin() {
    let Some((s, k)) = kernels("add_rms_norm_matches_the_twin") else {
        return;
    };
    let mut r = rng("add_rms_norm");
    for (rows, d, with_delta) in [(7usize, 4096usize, true), (3, 100, false), (1, 576, true)] {
        let x = randn(&mut r, rows * d, 3.0);
        let delta = to_bf16(&randn(&mut r, rows * d, 1.0));
        let w = to_bf16(
            &(0..d)
                .map(|_| r.random_range(0.5f32..1.5))
                .collect::<Vec<_>>(),
        );
        let mut want_res = x.clone();
        let mut want = vec![bf16::NAN; rows * d];
        twin::norm::add_rms_norm(
            &mut want_res,
            with_delta.then_some(&delta[..]),
            &w,
            1e-5,
            &mut want,
        );
        let mut res = up(&s, &x);
        let (dl, wd) = (up(&s, &delta), up(&s, &w));
        let mut out = up(&s, &vec![bf16::NAN; rows * d]);
        let delta_arg: Option<&dyn DevicePtrDyn<bf16>> = if with_delta { Some(&dl) } else { None };
        k.add_rms_norm(&mut res, delta_arg, &wd, 1e-5, &mut out)
            .unwrap();
        // The residual add is one f32 addition per element: bit for bit.
        assert_eq!(down(&s, &res), want_res);
        let e = rel_err(&to_f32(&down(&s, &out)), &to_f32(&want));
        assert!(e < 4e-3, "rms d={d}: {e}");
    }
}

#[test]
fn rope_matches_the_twin() {
    let Some((s, k)) = kernels("rope_matches_the_twin") else {
        return;
    };
    let mut r = rng("rope");
    for (heads, kv_heads, hd, rot_half) in [
        (32usize, 8usize, 128usize, 64usize),
        (9, 3, 64, 32),
        (4, 2, 64, 24),
    ] {
        for (interleaved, norm) in [(false, false), (true, false), (false, true)] {
            let tokens = 37;
            let stride = (heads + 2 * kv_heads) * hd;
            let inv_freq: Vec<f32> = (0..rot_half)
                .map(|i| 500000f32.powf(-((2 * i) as f32) / (2 * rot_half) as f32))
                .collect();
            let positions: Vec<i32> = (0..tokens).map(|_| r.random_range(0..131072)).collect();
            let qkv = to_bf16(&randn(&mut r, tokens * stride, 2.0));
            let qn = to_bf16(
                &(0..hd)
                    .map(|_| r.random_range(0.5f32..1.5))
                    .collect::<Vec<_>>(),
            );
            let kn = to_bf16(
                &(0..hd)
                    .map(|_| r.random_range(0.5f32..1.5))
                    .collect::<Vec<_>>(),
            );
            let tp = twin::rope::RopeQk {
                heads,
                kv_heads,
                head_dim: hd,
                q_offset: 0,
                k_offset: heads * hd,
                q_stride: stride,
                k_stride: stride,
                inv_freq: &inv_freq,
                interleaved,
                attention_factor: 1.0,
                q_norm: norm.then_some(&qn[..]),
                k_norm: norm.then_some(&kn[..]),
                eps: 1e-6,
            };
            let mut want = qkv.clone();
            twin::rope::rope_qk(&mut want, &positions, &tp);
            let mut buf = up(&s, &qkv);
            let (pos, f, qnd, knd) = (
                up(&s, &positions),
                up(&s, &inv_freq),
                up(&s, &qn),
                up(&s, &kn),
            );
            let shape = RopeShape {
                tokens,
                heads,
                kv_heads,
                head_dim: hd,
                q_offset: 0,
                q_stride: stride,
                k_offset: heads * hd,
                k_stride: stride,
                rot_half,
                interleaved,
                attention_factor: 1.0,
                eps: 1e-6,
            };
            let (qa, ka): (
                Option<&dyn DevicePtrDyn<bf16>>,
                Option<&dyn DevicePtrDyn<bf16>>,
            ) = if norm {
                (Some(&qnd), Some(&knd))
            } else {
                (None, None)
            };
            k.rope_qk(&mut buf, &pos, &f, qa, ka, &shape).unwrap();
            let got = down(&s, &buf);
            let e = rel_err(&to_f32(&got), &to_f32(&want));
            assert!(
                e < 4e-3,
                "rope {heads}/{kv_heads}/{hd} interleaved={interleaved} norm={norm}: {e}"
            );
            // V is untouched.
            for t in 0..tokens {
                let v = t * stride + (heads + kv_heads) * hd..(t + 1) * stride;
                assert_eq!(got[v.clone()], qkv[v]);
            }
        }
    }
}

#[test]
fn silu_mul_matches_the_twin() {
    let Some((s, k)) = kernels("silu_mul_matches_the_twin") else {
        return;
    };
    let mut r = rng("silu_mul");
    for (rows, ff) in [(9usize, 1536usize), (4, 1000), (2, 13)] {
        let buf = to_bf16(&randn(&mut r, rows * 2 * ff, 6.0));
        let mut want = vec![bf16::NAN; rows * ff];
        twin::activation::silu_mul(&buf, &buf[ff..], rows, ff, 2 * ff, &mut want);
        let d = up(&s, &buf);
        let mut out = up(&s, &vec![bf16::NAN; rows * ff]);
        let (gate, upv) = (d.slice(..), d.slice(ff..));
        k.silu_mul(&gate, &upv, rows, ff, 2 * ff, &mut out).unwrap();
        let e = rel_err(&to_f32(&down(&s, &out)), &to_f32(&want));
        assert!(e < 4e-3, "silu ff={ff}: {e}");
    }
}

#[test]
fn kv_cache_write_and_copy_match_the_twin() {
    let Some((s, k)) = kernels("kv_cache_write_and_copy_match_the_twin") else {
        return;
    };
    let mut r = rng("kv_cache");
    let (layers, blocks, bs, kv_heads, hd) = (3usize, 20usize, 16usize, 2usize, 64usize);
    let kv_dim = kv_heads * hd;
    let plane = blocks * bs * kv_dim;
    let cache0 = to_bf16(&randn(&mut r, 2 * layers * plane, 1.0));
    let tokens = 40;
    let stride = 4 * kv_dim;
    let qkv = to_bf16(&randn(&mut r, tokens * stride, 1.0));
    let mut slots: Vec<i32> = (0..(blocks * bs) as i32).collect();
    slots.shuffle(&mut r);
    slots.truncate(tokens);
    slots[3] = -1;
    slots[7] = (blocks * bs + 5) as i32; // past the cache: skipped
    let mut want = cache0.clone();
    {
        let (kc, vc) = want[..2 * plane].split_at_mut(plane);
        twin::kv_cache::write_kv(
            &qkv[2 * kv_dim..],
            &qkv[3 * kv_dim..],
            stride,
            stride,
            kv_dim,
            &slots,
            kc,
            vc,
        );
    }
    let pairs = [(2i32, 9i32), (11, 0), (19, 4)];
    twin::kv_cache::copy_blocks(&mut want, &pairs, plane, bs * kv_dim);

    let mut cache = up(&s, &cache0);
    let (src, sl) = (up(&s, &qkv), up(&s, &slots));
    {
        let (mut layer0, _) = cache.split_at_mut(2 * plane);
        let (mut kc, mut vc) = layer0.split_at_mut(plane);
        k.write_kv(
            &src.slice(2 * kv_dim..),
            &src.slice(3 * kv_dim..),
            stride,
            stride,
            kv_dim,
            &sl,
            &mut kc,
            &mut vc,
        )
        .unwrap();
    }
    let flat: Vec<i32> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    let p = up(&s, &flat);
    k.copy_blocks(&mut cache, &p, plane, bs * kv_dim).unwrap();
    assert_eq!(down(&s, &cache), want);
}

/// A random paged cache for `seqs` (query rows, context) with scrambled block
/// tables and NaN in every slot no sequence owns.
struct Paged {
    k: Vec<bf16>,
    v: Vec<bf16>,
    tables: Vec<i32>,
    max_blocks: usize,
    ctx: Vec<i32>,
    q_starts: Vec<i32>,
    q_lens: Vec<i32>,
    q: Vec<bf16>,
}

fn paged(
    r: &mut Rng64,
    seqs: &[(usize, usize)],
    heads: usize,
    kv_heads: usize,
    hd: usize,
    bs: usize,
) -> Paged {
    let row = kv_heads * hd;
    let max_blocks = seqs
        .iter()
        .map(|&(_, c)| c.div_ceil(bs))
        .max()
        .unwrap_or(1)
        .max(1);
    let total: usize = seqs.iter().map(|&(_, c)| c.div_ceil(bs)).sum::<usize>() + 2;
    let mut free: Vec<i32> = (0..total as i32).collect();
    free.shuffle(r);
    let mut k = vec![bf16::NAN; total * bs * row];
    let mut v = vec![bf16::NAN; total * bs * row];
    let mut tables = vec![0i32; seqs.len() * max_blocks];
    let (mut ctx, mut q_starts, mut q_lens, mut rows) = (vec![], vec![], vec![], 0);
    for (si, &(ql, c)) in seqs.iter().enumerate() {
        for b in 0..c.div_ceil(bs) {
            tables[si * max_blocks + b] = free.pop().unwrap_or(0);
        }
        for p in 0..c {
            let slot = tables[si * max_blocks + p / bs] as usize * bs + p % bs;
            for j in 0..row {
                k[slot * row + j] =
                    bf16::from_f32(r.random_range(-1.0f32..1.0) * (1.0 + p as f32 / 256.0));
                v[slot * row + j] = bf16::from_f32(r.random_range(-1.0f32..1.0));
            }
        }
        ctx.push(c as i32);
        q_starts.push(rows as i32);
        q_lens.push(ql as i32);
        rows += ql;
    }
    let q = to_bf16(&randn(r, rows * heads * hd, 1.0));
    Paged {
        k,
        v,
        tables,
        max_blocks,
        ctx,
        q_starts,
        q_lens,
        q,
    }
}

#[test]
fn decode_attention_matches_the_twin_with_and_without_split_k() {
    let Some((s, k)) = kernels("decode_attention_matches_the_twin_with_and_without_split_k") else {
        return;
    };
    let mut r = rng("decode");
    let bs = 16;
    for (heads, kv_heads, hd) in [
        (32usize, 8usize, 128usize),
        (9, 3, 64),
        (14, 2, 64),
        (8, 8, 128),
        (16, 1, 64),
    ] {
        let ctxs: Vec<(usize, usize)> = [1usize, 15, 16, 17, 300, 2049]
            .iter()
            .map(|&c| (1, c))
            .collect();
        let b = paged(&mut r, &ctxs, heads, kv_heads, hd, bs);
        let scale = 1.0 / (hd as f32).sqrt();
        let kv = PagedKv {
            k: &b.k,
            v: &b.v,
            block_size: bs,
            kv_heads,
            head_dim: hd,
        };
        let tables = BlockTables {
            tables: &b.tables,
            max_blocks: b.max_blocks,
        };
        let heads_t = Heads {
            heads,
            kv_heads,
            scale,
        };
        let max_ctx = 2049;
        for partition_size in [512usize, 128, 64] {
            let mut want = vec![bf16::NAN; b.q.len()];
            twin::attention::paged_attention_decode(
                &b.q,
                heads * hd,
                &kv,
                tables,
                &b.ctx,
                heads_t,
                partition_size,
                &mut want,
            );
            let a = DecodeAttention {
                heads,
                kv_heads,
                head_dim: hd,
                block_size: bs,
                max_blocks: b.max_blocks,
                scale,
                partition_size,
            };
            let n = a.scratch_len(ctxs.len(), max_ctx);
            let mut scratch = DecodeScratch {
                part_out: up(&s, &vec![f32::NAN; n]),
                part_max: up(&s, &vec![f32::NAN; n / hd]),
                part_sum: up(&s, &vec![f32::NAN; n / hd]),
            };
            let (q, kc, vc, bt, cl) = (
                up(&s, &b.q),
                up(&s, &b.k),
                up(&s, &b.v),
                up(&s, &b.tables),
                up(&s, &b.ctx),
            );
            let mut out = up(&s, &vec![bf16::NAN; b.q.len()]);
            k.paged_attention_decode(
                &q,
                heads * hd,
                &kc,
                &vc,
                &bt,
                &cl,
                max_ctx,
                &a,
                Some(&mut scratch),
                &mut out,
            )
            .unwrap();
            let e = rel_err(&to_f32(&down(&s, &out)), &to_f32(&want));
            assert!(
                e < 1e-2,
                "decode {heads}/{kv_heads}/{hd} partition {partition_size}: {e}"
            );
        }
    }
}

#[test]
fn prefill_attention_matches_the_twin_on_mixed_batches() {
    let Some((s, k)) = kernels("prefill_attention_matches_the_twin_on_mixed_batches") else {
        return;
    };
    let mut r = rng("prefill");
    let bs = 16;
    for (heads, kv_heads, hd) in [
        (32usize, 8usize, 128usize),
        (9, 3, 64),
        (14, 2, 64),
        (4, 4, 128),
    ] {
        // Chunks with cached prefixes, a whole prompt, decode rows, a long chunk.
        let seqs = [
            (37usize, 100usize),
            (1, 50),
            (64, 64),
            (5, 5),
            (130, 400),
            (1, 1),
        ];
        let b = paged(&mut r, &seqs, heads, kv_heads, hd, bs);
        let scale = 1.0 / (hd as f32).sqrt();
        let kv = PagedKv {
            k: &b.k,
            v: &b.v,
            block_size: bs,
            kv_heads,
            head_dim: hd,
        };
        let tables = BlockTables {
            tables: &b.tables,
            max_blocks: b.max_blocks,
        };
        let ps = PrefillSeqs {
            q_starts: &b.q_starts,
            q_lens: &b.q_lens,
            context_lens: &b.ctx,
        };
        let mut want = vec![bf16::NAN; b.q.len()];
        twin::attention::paged_attention_prefill(
            &b.q,
            heads * hd,
            &kv,
            tables,
            ps,
            Heads {
                heads,
                kv_heads,
                scale,
            },
            &mut want,
        );
        let a = PrefillAttention {
            heads,
            kv_heads,
            head_dim: hd,
            block_size: bs,
            max_blocks: b.max_blocks,
            scale,
        };
        let (q, kc, vc, bt) = (up(&s, &b.q), up(&s, &b.k), up(&s, &b.v), up(&s, &b.tables));
        let (qs, ql, cl) = (up(&s, &b.q_starts), up(&s, &b.q_lens), up(&s, &b.ctx));
        let mut out = up(&s, &vec![bf16::NAN; b.q.len()]);
        let total = b.q.len() / (heads * hd);
        k.paged_attention_prefill(
            &q,
            heads * hd,
            &kc,
            &vc,
            &bt,
            &qs,
            &ql,
            &cl,
            130,
            total,
            &a,
            &mut out,
        )
        .unwrap();
        let e = rel_err(&to_f32(&down(&s, &out)), &to_f32(&want));
        assert!(e < 1e-2, "prefill {heads}/{kv_heads}/{hd}: {e}");
    }
}

#[test]
fn sampling_and_penalties_match_the_twin_bit_for_bit() {
    let Some((s, k)) = kernels("sampling_and_penalties_match_the_twin_bit_for_bit") else {
        return;
    };
    let mut r = rng("sampling");
    for vocab in [32000usize, 151_936, 77] {
        let rows = 24;
        let mut logits: Vec<f32> = randn(&mut r, rows * vocab, 8.0);
        // Ties and non-finite values.
        for row in logits.chunks_mut(vocab) {
            let i = r.random_range(0..vocab);
            row[(i + 1) % vocab] = row[i];
            row[(i + 2) % vocab] = f32::NAN;
            row[(i + 3) % vocab] = f32::NEG_INFINITY;
        }
        let mut pen = Penalties {
            offsets: vec![0],
            ..Default::default()
        };
        let mut params = Vec::new();
        for row in 0..rows {
            let mut ids: Vec<u32> = (0..vocab as u32).collect();
            ids.shuffle(&mut r);
            for &t in &ids[..r.random_range(0..40usize.min(vocab))] {
                pen.tokens.push(t);
                pen.counts.push(r.random_range(0..4));
            }
            pen.offsets.push(pen.tokens.len() as i32);
            pen.repetition.push(if row % 2 == 0 {
                1.0
            } else {
                r.random_range(0.5f32..2.0)
            });
            pen.presence.push(r.random_range(-2.0f32..2.0));
            pen.frequency.push(r.random_range(-2.0f32..2.0));
            params.push(SampleParams {
                temperature: if row % 6 == 0 {
                    0.0
                } else {
                    r.random_range(0.1f32..2.0)
                },
                top_k: if row % 3 == 0 {
                    0
                } else {
                    r.random_range(1..200)
                },
                top_p: if row % 4 == 0 {
                    1.0
                } else {
                    r.random_range(0.05f32..1.0)
                },
                min_p: if row % 5 == 0 {
                    0.0
                } else {
                    r.random_range(0.0f32..0.3)
                },
                seed: r.random(),
                counter: row as u64,
            });
        }
        let mut want_logits = logits.clone();
        twin::sampling::apply_penalties(&mut want_logits, vocab, &pen);
        let want: Vec<u32> = want_logits
            .chunks(vocab)
            .zip(&params)
            .map(|(l, p)| twin::sampling::sample_row(l, p).token)
            .collect();

        let mut dl = up(&s, &logits);
        let (of, tk, ct) = (
            up(&s, &pen.offsets),
            up(&s, &pen.tokens),
            up(&s, &pen.counts),
        );
        let (rp, pr, fr) = (
            up(&s, &pen.repetition),
            up(&s, &pen.presence),
            up(&s, &pen.frequency),
        );
        k.apply_penalties(&mut dl, vocab, &of, &tk, &ct, &rp, &pr, &fr)
            .unwrap();
        let got_logits = down(&s, &dl);
        let same = got_logits
            .iter()
            .zip(&want_logits)
            .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
        assert!(
            same,
            "penalised logits differ from the twin (vocab {vocab})"
        );
        let dp = up(&s, &params);
        let mut tokens = up(&s, &vec![u32::MAX; rows]);
        k.sample(&dl, vocab, &dp, &mut tokens).unwrap();
        assert_eq!(down(&s, &tokens), want, "vocab {vocab}");
    }
}

/// A product's result, or None after a loud note when cuBLASLt has no
/// algorithm for a shape or alignment off the 16-byte fast path (a clear
/// `CudaError::Gemm`, which is the documented behaviour there). Any other
/// error, or "no algorithm" on the fast path, fails.
fn product_ran(res: Result<(), CudaError>, fast_path: bool, what: &str) -> bool {
    match res {
        Ok(()) => true,
        Err(CudaError::Gemm(msg)) if !fast_path && msg.contains("no algorithm") => {
            cuda_common::loud(&format!("NOTE {what}: unsupported by cuBLASLt here: {msg}"));
            false
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn linear_matches_the_twin_on_decode_and_prefill_shapes() {
    let Some((dev, g)) = gemm_or_skip("linear_matches_the_twin_on_decode_and_prefill_shapes")
    else {
        return;
    };
    let s = dev.stream.clone();
    let mut r = rng("linear");
    // n and k multiples of 8 (16-byte rows: the tensor-core path) and not.
    for (n, k) in [(256usize, 512usize), (200, 136), (77, 100), (8, 4096)] {
        let fast = n % 8 == 0 && k % 8 == 0;
        let w = to_bf16(&randn(&mut r, n * k, 1.0 / (k as f32).sqrt()));
        let wd = up(&s, &w);
        for m in [1usize, 7, 64, 300] {
            let x = to_bf16(&randn(&mut r, m * k, 2.0));
            let xd = up(&s, &x);
            let mut want = vec![f32::NAN; m * n];
            twin::linear::linear_f32(&x, &w, m, n, k, &mut want);
            let mut want16 = vec![bf16::NAN; m * n];
            twin::linear::linear_bf16(&x, &w, m, n, k, &mut want16);

            let what = format!("linear_bf16 {m}x{n}x{k}");
            let mut y = up(&s, &vec![bf16::NAN; m * n]);
            if product_ran(g.linear_bf16(&xd, &wd, &mut y, m, n, k), fast, &what) {
                let e = rel_err(&to_f32(&down(&s, &y)), &to_f32(&want16));
                assert!(e < 4e-3, "{what}: {e}");
            }

            let what = format!("linear_bf16_f32 {m}x{n}x{k}");
            let mut y32 = up(&s, &vec![f32::NAN; m * n]);
            if product_ran(g.linear_bf16_f32(&xd, &wd, &mut y32, m, n, k), fast, &what) {
                let e = rel_err(&down(&s, &y32), &want);
                assert!(e < 1e-4, "{what}: {e}");
            }
        }
    }
    // Views at odd element offsets (2-byte alignment) get a plan of their own.
    let (m, n, k) = (5usize, 24usize, 40usize);
    let x = to_bf16(&randn(&mut r, m * k + 1, 1.0));
    let w = to_bf16(&randn(&mut r, n * k + 3, 1.0));
    let mut want = vec![f32::NAN; m * n];
    twin::linear::linear_f32(&x[1..], &w[3..], m, n, k, &mut want);
    let (xd, wd) = (up(&s, &x), up(&s, &w));
    let mut y = up(&s, &vec![f32::NAN; m * n + 1]);
    let plans = g.cached_plans();
    let (xv, wv) = (xd.slice(1..), wd.slice(3..));
    let res = g.linear_bf16_f32(&xv, &wv, &mut y.slice_mut(1..), m, n, k);
    if product_ran(res, false, "unaligned views") {
        let got = down(&s, &y);
        assert!(got[0].is_nan(), "wrote before the output view");
        let e = rel_err(&got[1..], &want);
        assert!(e < 1e-4, "unaligned views: {e}");
        assert_eq!(g.cached_plans(), plans + 1);
        // The same call again reuses the plan.
        g.linear_bf16_f32(&xv, &wv, &mut y.slice_mut(1..), m, n, k)
            .unwrap();
        assert_eq!(g.cached_plans(), plans + 1);
    }
}

#[test]
fn linear_rejects_buffers_shorter_than_the_shape() {
    let Some((dev, g)) = gemm_or_skip("linear_rejects_buffers_shorter_than_the_shape") else {
        return;
    };
    let s = dev.stream.clone();
    let (xd, wd) = (up(&s, &[bf16::ONE; 4 * 16]), up(&s, &[bf16::ONE; 8 * 16]));
    let mut y = up(&s, &[bf16::ZERO; 4 * 8 - 1]);
    let err = g.linear_bf16(&xd, &wd, &mut y, 4, 8, 16).unwrap_err();
    assert!(err.to_string().contains("linear y"), "{err}");
    let err = g.linear_bf16(&xd, &wd, &mut y, 5, 7, 16).unwrap_err();
    assert!(err.to_string().contains("linear x"), "{err}");
}

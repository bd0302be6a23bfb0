//! Every SIMD kernel the CPU supports against its scalar reference.

use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Isa, Kernels};
use crate::cpu::quant::{self, BlockQ8, QK};
use crate::cpu::{matmul, weight};

/// Lengths for float kernels: around every vector width and unroll edge.
const FLOAT_LENS: [usize; 22] = [
    0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 100, 127, 129, 576, 1541,
];
/// Lengths for quantized kernels (whole blocks).
const QUANT_LENS: [usize; 8] = [32, 64, 96, 128, 160, 576, 1536, 32 * 33];

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn random(r: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

/// Every table this CPU runs, the scalar one included (trivially equal).
fn tables() -> Vec<&'static Kernels> {
    let t: Vec<_> = Kernels::available().collect();
    eprintln!(
        "testing kernels: {:?}",
        t.iter().map(|k| k.isa).collect::<Vec<_>>()
    );
    assert_eq!(t[0].isa, Isa::Scalar);
    t
}

/// `bytes` copied to an odd address, to exercise unaligned loads.
fn unaligned(bytes: &[u8]) -> (Vec<u8>, std::ops::Range<usize>) {
    let mut v = vec![0u8; bytes.len() + 1];
    v[1..].copy_from_slice(bytes);
    (v, 1..bytes.len() + 1)
}

#[track_caller]
fn assert_close(isa: Isa, what: &str, got: f32, want: f32, scale: f32) {
    let tol = 2e-6 * scale + 1e-30;
    assert!(
        (got - want).abs() <= tol,
        "{isa} {what}: got {got}, want {want} (|diff| {} > {tol})",
        (got - want).abs()
    );
}

#[test]
fn chosen_table_is_the_best_supported() {
    let best = Isa::ALL.into_iter().rev().find(|i| i.supported());
    // FACTORY_KERNELS may cap the choice; it never picks something unsupported.
    let got = Kernels::get().isa;
    assert!(got.supported());
    if std::env::var_os("FACTORY_KERNELS").is_none() {
        assert_eq!(Some(got), best);
    }
    for k in Kernels::available() {
        assert!(k.isa.supported());
        assert_eq!(Kernels::for_isa(k.isa).map(|t| t.isa), Some(k.isa));
    }
}

#[test]
fn float_row_dots_match_scalar() {
    let mut r = rng(1);
    for k in tables() {
        for &n in &FLOAT_LENS {
            let w = random(&mut r, n);
            let x = random(&mut r, n);
            let scale: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            let f32b: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
            let f16b: Vec<u8> = w
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect();
            let bf16b: Vec<u8> = w
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect();
            type Case = (
                &'static str,
                Vec<u8>,
                fn(&[u8], &[f32]) -> f32,
                fn(&[u8], &[f32]) -> f32,
            );
            let cases: [Case; 3] = [
                ("f32", f32b, k.dot_f32, matmul::dot_f32_f32),
                ("f16", f16b, k.dot_f16, matmul::dot_f32_f16),
                ("bf16", bf16b, k.dot_bf16, matmul::dot_f32_bf16),
            ];
            for (name, bytes, simd, reference) in cases {
                let want = reference(&bytes, &x);
                assert_close(
                    k.isa,
                    &format!("{name} n={n}"),
                    simd(&bytes, &x),
                    want,
                    scale,
                );
                let (buf, at) = unaligned(&bytes);
                let got = simd(&buf[at], &x);
                assert_close(k.isa, &format!("{name} unaligned n={n}"), got, want, scale);
                // A longer activation reads only as far as the row.
                let mut xl = x.clone();
                xl.push(1e9);
                assert_close(
                    k.isa,
                    &format!("{name} long x n={n}"),
                    simd(&bytes, &xl),
                    want,
                    scale,
                );
            }
        }
    }
}

#[test]
fn plain_dot_axpy_and_scale_match_scalar() {
    let mut r = rng(2);
    for k in tables() {
        for &n in &FLOAT_LENS {
            let a = random(&mut r, n);
            let b = random(&mut r, n);
            let scale: f32 = a.iter().zip(&b).map(|(p, q)| (p * q).abs()).sum();
            let want = matmul::dot_plain(&a, &b);
            assert_close(
                k.isa,
                &format!("dot_plain n={n}"),
                (k.dot_plain)(&a, &b),
                want,
                scale,
            );

            let alpha = r.random_range(-2.0f32..2.0);
            let mut y = b.clone();
            let mut y_ref = b.clone();
            (k.axpy)(alpha, &a, &mut y);
            super::scalar::axpy(alpha, &a, &mut y_ref);
            for (i, (g, w)) in y.iter().zip(&y_ref).enumerate() {
                // FMA rounds once where the reference rounds twice.
                assert_close(k.isa, &format!("axpy n={n} i={i}"), *g, *w, 2.0 + w.abs());
            }
            (k.scale)(alpha, &mut y);
            super::scalar::scale(alpha, &mut y_ref);
            for (g, w) in y.iter().zip(&y_ref) {
                assert_close(k.isa, &format!("scale n={n}"), *g, *w, 4.0 + w.abs());
            }
        }
    }
}

type Encode = fn(&[f32]) -> Vec<u8>;
type ExactDot = fn(&[u8], &[f32]) -> f32;
type FastDot = fn(&[u8], &[BlockQ8]) -> f32;

fn quant_formats(k: &Kernels) -> [(&'static str, Encode, ExactDot, ExactDot, FastDot, FastDot); 3] {
    [
        (
            "q8_0",
            quant::quantize_row_q8_0,
            k.dot_q8_0,
            quant::dot_f32_q8_0,
            k.qdot_q8_0,
            quant::dot_q8_q8_0,
        ),
        (
            "q4_0",
            quant::quantize_row_q4_0,
            k.dot_q4_0,
            quant::dot_f32_q4_0,
            k.qdot_q4_0,
            quant::dot_q8_q4_0,
        ),
        (
            "q4_1",
            quant::quantize_row_q4_1,
            k.dot_q4_1,
            quant::dot_f32_q4_1,
            k.qdot_q4_1,
            quant::dot_q8_q4_1,
        ),
    ]
}

/// Σ|w·x| over the dequantized row: the scale of the dot's rounding error.
fn magnitude(dtype: weight::WeightDType, row: &[u8], x: &[f32]) -> f32 {
    let mut deq = vec![0f32; x.len()];
    weight::dequantize_row(dtype, row, &mut deq);
    deq.iter().zip(x).map(|(a, b)| (a * b).abs()).sum()
}

fn dtype_of(name: &str) -> weight::WeightDType {
    match name {
        "q8_0" => weight::WeightDType::Q8_0,
        "q4_0" => weight::WeightDType::Q4_0,
        _ => weight::WeightDType::Q4_1,
    }
}

#[test]
fn quantized_row_dots_match_scalar() {
    let mut r = rng(3);
    for k in tables() {
        for &n in &QUANT_LENS {
            // Offsets make Q4_1 minima and Q4_0 asymmetry matter.
            let w: Vec<f32> = random(&mut r, n).iter().map(|v| v * 2.0 + 0.3).collect();
            let x = random(&mut r, n);
            let mut xq = vec![BlockQ8::default(); n / QK];
            quant::quantize_q8(&x, &mut xq);
            let xd: Vec<f32> = xq
                .iter()
                .flat_map(|b| b.qs.map(|q| b.d * f32::from(q)))
                .collect();
            for (name, enc, exact, exact_ref, fast, fast_ref) in quant_formats(k) {
                let row = enc(&w);
                let dt = dtype_of(name);
                let (buf, at) = unaligned(&row);
                let sc = magnitude(dt, &row, &x);
                let want = exact_ref(&row, &x);
                assert_close(
                    k.isa,
                    &format!("{name} exact n={n}"),
                    exact(&row, &x),
                    want,
                    sc,
                );
                assert_close(
                    k.isa,
                    &format!("{name} exact unaligned n={n}"),
                    exact(&buf[at.clone()], &x),
                    want,
                    sc,
                );
                // Integer dots are exact; only the per-block float sums may round differently.
                let sc = magnitude(dt, &row, &xd) + xq.iter().map(|b| b.s.abs()).sum::<f32>();
                let want = fast_ref(&row, &xq);
                assert_close(
                    k.isa,
                    &format!("{name} fast n={n}"),
                    fast(&row, &xq),
                    want,
                    sc,
                );
                assert_close(
                    k.isa,
                    &format!("{name} fast unaligned n={n}"),
                    fast(&buf[at], &xq),
                    want,
                    sc,
                );
                // A shorter activation stops the dot early, as the references' zips do.
                let half = n / QK / 2 * QK;
                assert_close(
                    k.isa,
                    &format!("{name} short x n={n}"),
                    exact(&row, &x[..half]),
                    exact_ref(&row, &x[..half]),
                    sc,
                );
                assert_close(
                    k.isa,
                    &format!("{name} short xq n={n}"),
                    fast(&row, &xq[..half / QK]),
                    fast_ref(&row, &xq[..half / QK]),
                    sc,
                );
            }
        }
    }
}

#[test]
fn prepared_q4_dots_match_scalar() {
    let mut r = rng(7);
    for k in tables() {
        let Some(prep) = k.prepare_q4 else { continue };
        for &n in &QUANT_LENS {
            let w: Vec<f32> = random(&mut r, n).iter().map(|v| v * 2.0 + 0.3).collect();
            let x = random(&mut r, n);
            let mut xp = vec![0f32; n / QK * super::PREPARED_Q4_BLOCK];
            prep(&x, &mut xp);
            for (name, enc, dot, reference) in [
                (
                    "q4_0",
                    quant::quantize_row_q4_0 as Encode,
                    k.dot_q4_0p,
                    quant::dot_f32_q4_0 as ExactDot,
                ),
                (
                    "q4_1",
                    quant::quantize_row_q4_1,
                    k.dot_q4_1p,
                    quant::dot_f32_q4_1,
                ),
            ] {
                let Some(dot) = dot else {
                    panic!("{} has prepare_q4 but no {name} dot", k.isa)
                };
                let row = enc(&w);
                let sc = magnitude(dtype_of(name), &row, &x);
                let want = reference(&row, &x);
                let (buf, at) = unaligned(&row);
                assert_close(
                    k.isa,
                    &format!("{name} prepared n={n}"),
                    dot(&row, &xp),
                    want,
                    sc,
                );
                assert_close(
                    k.isa,
                    &format!("{name} prepared unaligned n={n}"),
                    dot(&buf[at], &xp),
                    want,
                    sc,
                );
                let half = n / QK / 2;
                let want = reference(&row, &x[..half * QK]);
                let got = dot(&row, &xp[..half * super::PREPARED_Q4_BLOCK]);
                assert_close(
                    k.isa,
                    &format!("{name} prepared short n={n}"),
                    got,
                    want,
                    sc,
                );
            }
        }
    }
}

#[test]
fn integer_dots_do_not_saturate_at_the_extremes() {
    // Q8_0 weights of -128 (never produced by our quantizer, legal in files)
    // against activations of ±127: the largest products an i16 pair sees.
    let d = f16::from_f32(0.5).to_le_bytes();
    let mut row = Vec::new();
    for b in 0..4 {
        row.extend_from_slice(&d);
        row.extend((0..32).map(|j| if (b + j) % 3 == 0 { 0x81u8 } else { 0x80 }));
    }
    let xq: Vec<BlockQ8> = (0..4)
        .map(|b| BlockQ8 {
            d: 0.25,
            s: 0.25 * 127.0 * 32.0 * if b % 2 == 0 { 1.0 } else { -1.0 },
            qs: [if b % 2 == 0 { 127 } else { -127 }; 32],
        })
        .collect();
    // Q4 nibbles of 15 and 0 (extremes of both formats).
    let mut q4_0 = Vec::new();
    let mut q4_1 = Vec::new();
    for b in 0..4u8 {
        let nib = if b % 2 == 0 { 0xffu8 } else { 0x00 };
        q4_0.extend_from_slice(&d);
        q4_0.extend([nib; 16]);
        q4_1.extend_from_slice(&d);
        q4_1.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        q4_1.extend([nib; 16]);
    }
    for k in tables() {
        for (name, row, fast, reference) in [
            ("q8_0", &row, k.qdot_q8_0, quant::dot_q8_q8_0 as FastDot),
            ("q4_0", &q4_0, k.qdot_q4_0, quant::dot_q8_q4_0),
            ("q4_1", &q4_1, k.qdot_q4_1, quant::dot_q8_q4_1),
        ] {
            let want = reference(row, &xq);
            assert_close(
                k.isa,
                &format!("{name} extremes"),
                fast(row, &xq),
                want,
                want.abs().max(1.0),
            );
        }
    }
}

fn assert_blocks_identical(isa: Isa, what: &str, got: &[BlockQ8], want: &[BlockQ8]) {
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.qs, w.qs, "{isa} {what} block {i} qs");
        assert!(
            same(g.d, w.d),
            "{isa} {what} block {i} d: {} vs {}",
            g.d,
            w.d
        );
        assert!(
            same(g.s, w.s),
            "{isa} {what} block {i} s: {} vs {}",
            g.s,
            w.s
        );
    }
}

#[test]
fn activation_quantization_is_bit_identical() {
    let mut r = rng(4);
    for k in tables() {
        for &n in &QUANT_LENS {
            let x: Vec<f32> = random(&mut r, n).iter().map(|v| v * 7.0).collect();
            let mut got = vec![BlockQ8::default(); n / QK];
            let mut want = vec![BlockQ8::default(); n / QK];
            (k.quantize_q8)(&x, &mut got);
            quant::quantize_q8(&x, &mut want);
            assert_blocks_identical(k.isa, &format!("n={n}"), &got, &want);
        }
        // Halfway cases (amax 127 makes the scale exactly 1), zeros, signed
        // zeros, and non-finite values.
        let mut x = vec![0f32; 6 * QK];
        for (j, v) in x[..QK].iter_mut().enumerate() {
            *v = j as f32 - 15.5;
        }
        x[QK - 1] = 127.0;
        x[QK..2 * QK]
            .iter_mut()
            .enumerate()
            .for_each(|(j, v)| *v = -(j as f32) - 0.5);
        x[2 * QK + 3] = -0.0;
        x[3 * QK + 5] = f32::NAN;
        x[3 * QK + 6] = 0.75;
        x[4 * QK + 1] = f32::INFINITY;
        x[4 * QK + 2] = 0.5;
        x[5 * QK..]
            .iter_mut()
            .enumerate()
            .for_each(|(j, v)| *v = 1e-30 * j as f32);
        let mut got = vec![BlockQ8::default(); 6];
        let mut want = vec![BlockQ8::default(); 6];
        (k.quantize_q8)(&x, &mut got);
        quant::quantize_q8(&x, &mut want);
        assert_blocks_identical(k.isa, "edge cases", &got, &want);
    }
}

#[test]
fn dequantizers_match_scalar() {
    let mut r = rng(5);
    for k in tables() {
        for &n in &QUANT_LENS {
            let w: Vec<f32> = random(&mut r, n).iter().map(|v| v * 3.0 - 0.2).collect();
            let f16b: Vec<u8> = w
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect();
            let bf16b: Vec<u8> = w
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect();
            use weight::WeightDType as D;
            for (dt, bytes) in [
                (D::F16, f16b),
                (D::BF16, bf16b),
                (D::Q8_0, quant::quantize_row_q8_0(&w)),
                (D::Q4_0, quant::quantize_row_q4_0(&w)),
                (D::Q4_1, quant::quantize_row_q4_1(&w)),
            ] {
                let Some(dq) = k.dequant(dt) else {
                    panic!("no dequant for {dt:?}")
                };
                let mut got = vec![f32::NAN; n];
                let mut want = vec![0f32; n];
                dq(&bytes, &mut got);
                weight::dequantize_row(dt, &bytes, &mut want);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_close(
                        k.isa,
                        &format!("{dt:?} n={n} i={i}"),
                        *g,
                        *w,
                        w.abs() + 1e-3,
                    );
                }
            }
        }
        // Float formats at odd lengths too.
        for &n in &FLOAT_LENS {
            let w = random(&mut r, n);
            let bytes: Vec<u8> = w
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect();
            let mut got = vec![f32::NAN; n];
            let mut want = vec![0f32; n];
            (k.dequant_bf16)(&bytes, &mut got);
            weight::dequantize_row(weight::WeightDType::BF16, &bytes, &mut want);
            assert_eq!(got, want, "{} bf16 n={n}", k.isa);
            let bytes: Vec<u8> = w
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect();
            (k.dequant_f16)(&bytes, &mut got);
            weight::dequantize_row(weight::WeightDType::F16, &bytes, &mut want);
            assert_eq!(got, want, "{} f16 n={n}", k.isa);
        }
    }
}

#[test]
fn block_product_matches_scalar_dots() {
    let mut r = rng(6);
    for k in tables() {
        for &(m, c, kk) in &[
            (1, 1, 1),
            (1, 4, 16),
            (2, 3, 7),
            (3, 5, 33),
            (6, 4, 64),
            (7, 9, 100),
            (13, 8, 576),
            (12, 6, 17),
            (5, 1, 1541),
            // Three k panels (the last partial) over several row tiles.
            (8, 7, 1600),
        ] {
            let x = random(&mut r, m * kk);
            let w = random(&mut r, c * kk);
            let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
            let (buf, at) = unaligned(&bytes);
            let rows: Vec<&[u8]> = buf[at].chunks_exact(4 * kk).collect();
            let mut got = vec![f32::NAN; m * c];
            (k.gemm_rows)(&x, kk, &rows, &mut got);
            for i in 0..m {
                for j in 0..c {
                    let xr = &x[i * kk..(i + 1) * kk];
                    let want = matmul::dot_f32_f32(rows[j], xr);
                    let sc: f32 = xr
                        .iter()
                        .zip(&w[j * kk..(j + 1) * kk])
                        .map(|(a, b)| (a * b).abs())
                        .sum();
                    assert_close(
                        k.isa,
                        &format!("gemm m={m} c={c} k={kk} ({i},{j})"),
                        got[i * c + j],
                        want,
                        sc,
                    );
                }
            }
        }
    }
}

#[test]
fn transposed_block_product_matches_scalar_dots() {
    use crate::cpu::simd::GEMM_T_LANES as L;
    let mut r = rng(7);
    for k in tables() {
        let Some(gt) = k.gemm_t else { continue };
        for &(m, c, kk) in &[
            (1, 1, 1),
            (32, 12, 16),
            (5, 13, 33),
            (31, 25, 576),
            (17, 7, 1541),
        ] {
            let x = random(&mut r, m * kk);
            let w = random(&mut r, c * kk);
            let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
            let (buf, at) = unaligned(&bytes);
            let rows: Vec<&[u8]> = buf[at].chunks_exact(4 * kk).collect();
            // Lanes past m hold NaN: they must not leak into real lanes.
            let mut xt = vec![f32::NAN; kk * L];
            for i in 0..m {
                for e in 0..kk {
                    xt[e * L + i] = x[i * kk + e];
                }
            }
            let mut got = vec![f32::NAN; c * L];
            gt(&xt, kk, &rows, &mut got);
            for i in 0..m {
                for j in 0..c {
                    let xr = &x[i * kk..(i + 1) * kk];
                    let want = matmul::dot_f32_f32(rows[j], xr);
                    let sc: f32 = xr
                        .iter()
                        .zip(&w[j * kk..(j + 1) * kk])
                        .map(|(a, b)| (a * b).abs())
                        .sum();
                    assert_close(
                        k.isa,
                        &format!("gemm_t m={m} c={c} k={kk} ({i},{j})"),
                        got[j * L + i],
                        want,
                        sc,
                    );
                }
            }
        }
    }
}

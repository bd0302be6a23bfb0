//! Twin of sampling.cu: penalties, then greedy or temperature / top-k / min-p /
//! top-p and a seeded Philox draw.
//!
//! The GPU kernel selects thresholds by radix passes; this twin sorts. Masses are
//! 64-bit fixed-point integers and `exp` is [`exp_nonpos`] in both, so the twin
//! and the kernel pick the same token for the same inputs, bit for bit.

/// One row's sampling parameters; the layout matches `struct SampleParams` in
/// kernels/cuda/sampling.cu (32 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SampleParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1.0 means no nucleus cut.
    pub top_p: f32,
    /// 0.0 means no min-p cut.
    pub min_p: f32,
    /// 0 means no top-k cut.
    pub top_k: i32,
    /// The request's seed (Philox key).
    pub seed: u64,
    /// Which draw of the request this is (Philox counter).
    pub counter: u64,
}

/// Fixed-point scale of probability masses: 2^40.
const FX_ONE: f32 = 1_099_511_627_776.0;

/// Philox4x32-10 of `counter` (words: low, high, 0, 0) under `seed` (low, high);
/// the first two output words as `low | high << 32`.
pub fn philox_u64(seed: u64, counter: u64) -> u64 {
    let w = philox4x32_10(
        [counter as u32, (counter >> 32) as u32, 0, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    u64::from(w[0]) | (u64::from(w[1]) << 32)
}

/// The Philox4x32 block function with 10 rounds (Salmon et al., Random123).
pub fn philox4x32_10(mut c: [u32; 4], mut k: [u32; 2]) -> [u32; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    for _ in 0..10 {
        let p0 = M0 * u64::from(c[0]);
        let p1 = M1 * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [
            k[0].wrapping_add(0x9E37_79B9),
            k[1].wrapping_add(0xBB67_AE85),
        ];
    }
    c
}

/// `exp(x)` for `x <= 0`, the same f32 operations as `exp_nonpos` in common.cuh
/// (so the same bits). Relative error below 3e-7; NaN stays NaN.
pub fn exp_nonpos(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (-n).mul_add(0.693_359_4, x);
    let r = (-n).mul_add(-2.121_944_4e-4, r);
    let mut p = 1.0f32 / 5040.0;
    for c in [
        1.0f32 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p.mul_add(r, c);
    }
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The total order of candidates: larger is better (higher value, then lower id).
pub fn order_key(v: f32, id: usize) -> u64 {
    let u = v.to_bits();
    let u = if u & 0x8000_0000 != 0 {
        !u
    } else {
        u | 0x8000_0000
    };
    (u64::from(u) << 32) | u64::from(u32::MAX - id as u32)
}

fn fx_mass(e: f32) -> u64 {
    // f32 -> u64 conversion truncates, as __float2ull_rz.
    (e * FX_ONE) as u64
}

/// Index of the largest non-NaN logit, the lowest index on ties (0 when all are NaN).
pub fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_nan())
        .map(|(i, &l)| (order_key(l, i), i))
        .max()
        .map_or(0, |(_, i)| i as u32)
}

/// What one row's sampling decided: the token and the kept candidates (ids).
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// The ids the cuts kept, best first (empty for greedy).
    pub kept: Vec<u32>,
}

/// Samples one row of (penalised) logits.
pub fn sample_row(logits: &[f32], p: &SampleParams) -> Sampled {
    let greedy = || Sampled {
        token: argmax(logits),
        kept: Vec::new(),
    };
    if p.temperature.is_nan() || p.temperature <= 0.0 {
        return greedy();
    }
    let inv_t = 1.0f32 / p.temperature;
    // (key, scaled logit, id), best first.
    let mut cand: Vec<(u64, f32, usize)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, &l)| (i, l * inv_t))
        .filter(|(_, c)| !c.is_nan())
        .map(|(i, c)| (order_key(c, i), c, i))
        .collect();
    if cand.is_empty() {
        return greedy();
    }
    cand.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
    let max = cand[0].1;
    if !max.is_finite() {
        return greedy();
    }
    if p.top_k > 0 && (p.top_k as usize) < cand.len() {
        cand.truncate(p.top_k as usize);
    }
    let e: Vec<f32> = cand.iter().map(|c| exp_nonpos(c.1 - max)).collect();
    let fx: Vec<u64> = e.iter().map(|&v| fx_mass(v)).collect();
    let total: u64 = fx.iter().sum();
    let mut keep = cand.len();
    if p.min_p > 0.0 {
        // Keys down to the lowest one whose e reaches min_p (e_max = 1).
        if let Some(last) = e.iter().rposition(|&v| v >= p.min_p) {
            keep = keep.min(last + 1);
        }
    }
    if p.top_p < 1.0 {
        let target = ((f64::from(p.top_p) * total as f64).ceil() as u64).max(1);
        let mut acc = 0u64;
        if let Some(n) = fx.iter().position(|&m| {
            acc += m;
            acc >= target
        }) {
            keep = keep.min(n + 1);
        }
    }
    let kept_fx: u64 = fx[..keep].iter().sum();
    let r = ((u128::from(philox_u64(p.seed, p.counter)) * u128::from(kept_fx)) >> 64) as u64;
    // Walk the kept candidates in id order.
    let mut by_id: Vec<(usize, u64)> = cand[..keep]
        .iter()
        .zip(&fx)
        .map(|(c, &m)| (c.2, m))
        .collect();
    by_id.sort_unstable();
    let mut acc = 0u64;
    let token = by_id
        .iter()
        .find(|&&(_, m)| {
            acc += m;
            acc > r
        })
        .map_or(cand[0].2, |&(i, _)| i);
    Sampled {
        token: token as u32,
        kept: cand[..keep].iter().map(|c| c.2 as u32).collect(),
    }
}

/// The penalties of one batch, as the kernel takes them: row `r`'s entries are
/// `offsets[r]..offsets[r + 1]` of `tokens` / `counts` (count 0: prompt only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Penalties {
    pub offsets: Vec<i32>,
    pub tokens: Vec<u32>,
    pub counts: Vec<u32>,
    pub repetition: Vec<f32>,
    pub presence: Vec<f32>,
    pub frequency: Vec<f32>,
}

/// Applies the penalties to `logits` (`[rows, vocab]`) in place: repetition
/// (divide positive, multiply negative), then `presence + frequency * count`
/// subtracted for tokens of the output.
pub fn apply_penalties(logits: &mut [f32], vocab: usize, p: &Penalties) {
    for (r, row) in logits.chunks_exact_mut(vocab).enumerate() {
        let (rep, pres, freq) = (p.repetition[r], p.presence[r], p.frequency[r]);
        for e in p.offsets[r] as usize..p.offsets[r + 1] as usize {
            let Some(l) = row.get_mut(p.tokens[e] as usize) else {
                continue;
            };
            if rep != 1.0 {
                *l = if *l > 0.0 { *l / rep } else { *l * rep };
            }
            let n = p.counts[e];
            if n > 0 {
                *l -= pres + freq * n as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn philox_matches_the_random123_known_answers() {
        // Random123 tests/kat_vectors, the three "philox4x32 10" lines.
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn exp_nonpos_matches_libm() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -(i as f32) * 0.0005;
            let want = x.exp();
            if want > 1e-30 {
                worst = worst.max(((exp_nonpos(x) - want) / want).abs());
            }
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert!(exp_nonpos(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_nonpos(f32::NAN).is_nan());
    }

    #[test]
    fn order_key_orders_by_value_then_lower_id() {
        let vals = [-f32::INFINITY, -3.5, -0.0, 0.0, 1e-30, 2.0, f32::INFINITY];
        for w in vals.windows(2) {
            assert!(order_key(w[0], 0) < order_key(w[1], 0), "{} {}", w[0], w[1]);
        }
        assert!(order_key(1.0, 3) > order_key(1.0, 4));
        assert!(order_key(f32::NEG_INFINITY, u32::MAX as usize - 1) > 0);
    }

    /// The CPU engine's rule (engine/src/sampling.rs), by a full sort with f32
    /// probabilities: the ids top-k, min-p and top-p allow.
    fn cpu_allowed(logits: &[f32], p: &SampleParams) -> Vec<u32> {
        let mut c: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l * (1.0 / p.temperature)))
            .collect();
        c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 {
            c.truncate(p.top_k as usize);
        }
        let max = c[0].1;
        let total: f32 = c.iter().map(|x| (x.1 - max).exp()).sum();
        let probs: Vec<f32> = c.iter().map(|x| (x.1 - max).exp() / total).collect();
        let mut keep = c.len();
        if p.min_p > 0.0 {
            keep = keep.min(
                probs
                    .iter()
                    .take_while(|&&q| q >= p.min_p * probs[0])
                    .count()
                    .max(1),
            );
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let n = probs
                .iter()
                .take_while(|&&q| {
                    let inside = acc < p.top_p;
                    acc += q;
                    inside
                })
                .count();
            keep = keep.min(n.max(1));
        }
        c[..keep].iter().map(|x| x.0).collect()
    }

    #[test]
    fn cuts_keep_what_the_cpu_sampler_allows() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        for case in 0..400 {
            let vocab = rng.random_range(1..300);
            let logits: Vec<f32> = (0..vocab).map(|_| rng.random_range(-4.0..4.0)).collect();
            let p = SampleParams {
                temperature: rng.random_range(0.3..2.0),
                top_k: if case % 3 == 0 {
                    0
                } else {
                    rng.random_range(1..50)
                },
                top_p: if case % 4 == 0 {
                    1.0
                } else {
                    rng.random_range(0.05..1.0)
                },
                min_p: if case % 5 == 0 {
                    0.0
                } else {
                    rng.random_range(0.0..0.5)
                },
                seed: rng.random(),
                counter: case,
            };
            let got = sample_row(&logits, &p);
            assert_eq!(got.kept, cpu_allowed(&logits, &p), "case {case}: {p:?}");
            assert!(got.kept.contains(&got.token));
        }
    }

    #[test]
    fn draws_follow_the_softmax() {
        // p ∝ exp([0, 1, 2, 3]) at temperature 1: 3.2%, 8.7%, 23.7%, 64.4%.
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let n = 40_000;
        let mut counts = [0usize; 4];
        for i in 0..n {
            let p = SampleParams {
                temperature: 1.0,
                top_p: 1.0,
                seed: 1234,
                counter: i,
                ..Default::default()
            };
            counts[sample_row(&logits, &p).token as usize] += 1;
        }
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        for (c, l) in counts.iter().zip(logits) {
            let want = l.exp() / z;
            let got = *c as f32 / n as f32;
            // Five standard deviations of a binomial proportion.
            let sd = (want * (1.0 - want) / n as f32).sqrt();
            assert!((got - want).abs() < 5.0 * sd, "{got} vs {want}");
        }
    }

    #[test]
    fn greedy_fallbacks_and_seed_reproducibility() {
        let logits = [0.5f32, 2.0, f32::NAN, 2.0, -1.0];
        let greedy = SampleParams::default();
        assert_eq!(sample_row(&logits, &greedy).token, 1);
        // No finite candidate: argmax of what is there.
        let inf = [f32::NEG_INFINITY, f32::INFINITY, f32::NAN];
        let hot = SampleParams {
            temperature: 1.0,
            top_p: 1.0,
            ..Default::default()
        };
        assert_eq!(sample_row(&inf, &hot).token, 1);
        // Same seed and counter, same token; the counter moves the stream.
        let l: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 300.0)
            .collect();
        let p = SampleParams {
            temperature: 1.0,
            top_p: 0.9,
            seed: 5,
            counter: 3,
            ..Default::default()
        };
        assert_eq!(sample_row(&l, &p), sample_row(&l, &p));
        let draws: std::collections::HashSet<u32> = (0..50)
            .map(|c| sample_row(&l, &SampleParams { counter: c, ..p }).token)
            .collect();
        assert!(draws.len() > 5);
    }

    /// sampling.cu's radix_select, step for step: byte histograms from the most
    /// significant byte, early exit once the bucket is settled.
    fn radix_select(items: &[(u64, u64)], floor: u64, by_mass: bool, mut need: u64) -> u64 {
        let (mut prefix, mut mask) = (0u64, 0u64);
        for shift in (0..8).rev().map(|i| i * 8) {
            let (mut cnt, mut mass) = ([0u64; 256], [0u64; 256]);
            for &(key, fx) in items {
                if key < floor || key & mask != prefix {
                    continue;
                }
                let b = ((key >> shift) & 0xff) as usize;
                cnt[b] += 1;
                mass[b] += fx;
            }
            let (mut above, mut b) = (0u64, 255usize);
            while b > 0 {
                let here = if by_mass { mass[b] } else { cnt[b] };
                if above + here >= need {
                    break;
                }
                above += here;
                b -= 1;
            }
            prefix |= (b as u64) << shift;
            mask |= 0xff << shift;
            need -= above;
            if (by_mass && cnt[b] == 1) || (!by_mass && cnt[b] == need) {
                break;
            }
        }
        prefix
    }

    /// sample_tokens_f32's algorithm on the CPU (thresholds by radix passes, the
    /// draw by per-thread chunks and a scan), to check it against the sort-based twin.
    fn kernel_emulated(logits: &[f32], p: &SampleParams) -> Sampled {
        const THREADS: usize = 512;
        if p.temperature.is_nan() || p.temperature <= 0.0 {
            return sample_row(logits, p);
        }
        let inv_t = 1.0f32 / p.temperature;
        let cand = |i: usize| -> Option<(u64, f32)> {
            let l = logits[i];
            let c = l * inv_t;
            (l.is_finite() && !c.is_nan()).then(|| (order_key(c, i), c))
        };
        let all: Vec<(usize, u64, f32)> = (0..logits.len())
            .filter_map(|i| cand(i).map(|(k, c)| (i, k, c)))
            .collect();
        let max = all.iter().map(|x| x.2).fold(f32::NEG_INFINITY, f32::max);
        if all.is_empty() || !max.is_finite() {
            return sample_row(logits, p);
        }
        let fx = |c: f32| fx_mass(exp_nonpos(c - max));
        let items: Vec<(u64, u64)> = all.iter().map(|&(_, k, c)| (k, fx(c))).collect();
        let n = items.len() as u64;
        let kk = if p.top_k > 0 && (p.top_k as u64) < n {
            radix_select(&items, 0, false, p.top_k as u64)
        } else {
            0
        };
        let total: u64 = items.iter().filter(|x| x.0 >= kk).map(|x| x.1).sum();
        let km = if p.min_p > 0.0 {
            all.iter()
                .filter(|x| x.1 >= kk && exp_nonpos(x.2 - max) >= p.min_p)
                .map(|x| x.1)
                .min()
                .unwrap_or(u64::MAX)
        } else {
            0
        };
        let kp = if p.top_p < 1.0 {
            let target = (f64::from(p.top_p) * total as f64).ceil() as u64;
            radix_select(&items, kk, true, target.max(1))
        } else {
            0
        };
        let keep = kk.max(km).max(kp);
        let kept_of = |i: usize| cand(i).filter(|x| x.0 >= keep).map_or(0, |x| fx(x.1));
        let chunk = logits.len().div_ceil(THREADS);
        let sums: Vec<u64> = (0..THREADS)
            .map(|t| {
                let lo = (t * chunk).min(logits.len());
                (lo..(lo + chunk).min(logits.len())).map(kept_of).sum()
            })
            .collect();
        let kept_total: u64 = sums.iter().sum();
        let r = ((u128::from(philox_u64(p.seed, p.counter)) * u128::from(kept_total)) >> 64) as u64;
        let best = all.iter().map(|x| (x.1, x.0)).max().map_or(0, |x| x.1);
        let mut token = best;
        let mut excl = 0u64;
        for (t, &mine) in sums.iter().enumerate() {
            if mine > 0 && r >= excl && r < excl + mine {
                let lo = (t * chunk).min(logits.len());
                let mut acc = excl;
                for i in lo..(lo + chunk).min(logits.len()) {
                    acc += kept_of(i);
                    if kept_of(i) > 0 && acc > r {
                        token = i;
                        break;
                    }
                }
            }
            excl += mine;
        }
        let mut kept: Vec<(u64, usize)> = all
            .iter()
            .filter(|x| x.1 >= keep)
            .map(|x| (x.1, x.0))
            .collect();
        kept.sort_unstable_by(|a, b| b.cmp(a));
        Sampled {
            token: token as u32,
            kept: kept.iter().map(|x| x.1 as u32).collect(),
        }
    }

    /// The kernel's radix thresholds and chunked draw pick what the sorting twin
    /// picks, bit for bit, also with many tied logits (ties broken by id) and
    /// vocabularies larger than the kernel's thread count.
    #[test]
    fn the_kernel_algorithm_equals_the_twin() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
        for case in 0..300u64 {
            let vocab = if case % 7 == 0 {
                rng.random_range(1000..5000)
            } else {
                rng.random_range(1..400)
            };
            let levels = if case % 2 == 0 { 6 } else { 100_000 };
            let mut logits: Vec<f32> = (0..vocab)
                .map(|_| (rng.random_range(0..levels) as f32 / levels as f32 - 0.5) * 12.0)
                .collect();
            if case % 5 == 0 {
                logits[rng.random_range(0..vocab)] = f32::NAN;
                logits[rng.random_range(0..vocab)] = f32::NEG_INFINITY;
            }
            let p = SampleParams {
                temperature: rng.random_range(0.2..2.0),
                top_k: if case % 3 == 0 {
                    0
                } else {
                    rng.random_range(1..80)
                },
                top_p: if case % 4 == 0 {
                    1.0
                } else {
                    rng.random_range(0.02..1.0)
                },
                min_p: if case % 5 == 1 {
                    0.0
                } else {
                    rng.random_range(0.0..0.6)
                },
                seed: rng.random(),
                counter: case,
            };
            assert_eq!(
                kernel_emulated(&logits, &p),
                sample_row(&logits, &p),
                "case {case}: {p:?}"
            );
        }
    }

    #[test]
    fn penalties_follow_the_cpu_order() {
        let mut logits = vec![2.0f32, -1.0, 1.0, 3.0, 0.5, 0.5];
        let p = Penalties {
            offsets: vec![0, 3, 4],
            tokens: vec![0, 1, 2, 99],
            counts: vec![0, 2, 1, 5],
            repetition: vec![2.0, 1.0],
            presence: vec![0.5, 1.0],
            frequency: vec![0.25, 1.0],
        };
        apply_penalties(&mut logits, 3, &p);
        // Row 0: token 0 prompt-only (2/2), token 1 twice (-1*2 - 0.5 - 0.5),
        // token 2 once (1/2 - 0.5 - 0.25). Row 1: an out-of-vocabulary id only.
        assert_eq!(logits, vec![1.0, -3.0, -0.25, 3.0, 0.5, 0.5]);
    }
}

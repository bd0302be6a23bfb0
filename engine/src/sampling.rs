//! Choosing the next token from logits: repetition, presence and frequency
//! penalties, then greedy, temperature, top-k, top-p, min-p, with a seeded
//! generator per request.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};

/// Bound on |presence_penalty| and |frequency_penalty|, as in the OpenAI API.
pub const MAX_ADDITIVE_PENALTY: f32 = 2.0;

/// How a request samples.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    /// 1.0 means no nucleus cut.
    pub top_p: f32,
    /// 0.0 means no min-p cut.
    pub min_p: f32,
    /// Seed of this request's generator; `None` draws one.
    pub seed: Option<u64>,
    /// Divides positive (multiplies negative) logits of tokens seen in the
    /// prompt or the output; 1.0 means off.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already in the output;
    /// 0.0 means off.
    pub presence_penalty: f32,
    /// Subtracted per occurrence from the logit of tokens in the output;
    /// 0.0 means off.
    pub frequency_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: None,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

/// A parameter outside its range.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplingError {
    #[error("temperature must be finite and >= 0, got {0}")]
    Temperature(f32),
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    #[error("min_p must be in [0, 1], got {0}")]
    MinP(f32),
    #[error("repetition_penalty must be finite and > 0, got {0}")]
    RepetitionPenalty(f32),
    #[error("presence_penalty must be in [-2, 2], got {0}")]
    PresencePenalty(f32),
    #[error("frequency_penalty must be in [-2, 2], got {0}")]
    FrequencyPenalty(f32),
}

impl SamplingParams {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(SamplingError::MinP(self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(SamplingError::RepetitionPenalty(self.repetition_penalty));
        }
        let additive = -MAX_ADDITIVE_PENALTY..=MAX_ADDITIVE_PENALTY;
        if !additive.contains(&self.presence_penalty) {
            return Err(SamplingError::PresencePenalty(self.presence_penalty));
        }
        if !additive.contains(&self.frequency_penalty) {
            return Err(SamplingError::FrequencyPenalty(self.frequency_penalty));
        }
        Ok(())
    }

    /// Whether any penalty changes the logits.
    pub fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }
}

/// A request's sampler: its parameters, its own generator (so the output is
/// reproducible whatever else runs beside it) and the token history its
/// penalties need.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: rand::rngs::StdRng,
    /// Output occurrences per token; prompt-only tokens are present with 0 so
    /// the repetition penalty sees them. Sparse: a request touches few ids.
    /// Left empty when no penalty is active.
    counts: HashMap<u32, u32>,
    /// Penalized copy of the logits, reused across steps.
    scratch: Vec<f32>,
    /// Candidate (token, scaled logit) pairs, reused across steps.
    cand: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler for `params` (validated by the caller) on a request whose
    /// prompt is `prompt`.
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Self {
        let rng = match params.seed {
            Some(s) => rand::rngs::StdRng::seed_from_u64(s),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        let mut counts = HashMap::new();
        // Only the repetition penalty looks at the prompt.
        if params.repetition_penalty != 1.0 {
            counts.extend(prompt.iter().map(|&t| (t, 0)));
        }
        Self {
            params,
            rng,
            counts,
            scratch: Vec::new(),
            cand: Vec::new(),
        }
    }

    /// Records `token` as appended to the output, for the penalties.
    pub fn accept(&mut self, token: u32) {
        if self.params.has_penalties() {
            *self.counts.entry(token).or_insert(0) += 1;
        }
    }

    /// Picks the next token from `logits`, after the penalties.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if !self.params.has_penalties() {
            return self.pick(logits);
        }
        // Taken out of self so `pick` can borrow the generator mutably.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(logits);
        self.penalize(&mut scratch);
        let token = self.pick(&scratch);
        self.scratch = scratch;
        token
    }

    /// Applies the penalties in place: repetition first, then presence and
    /// frequency, the order vLLM uses.
    fn penalize(&self, logits: &mut [f32]) {
        let p = &self.params;
        for (&token, &n) in &self.counts {
            // Ids beyond the vocabulary cannot be sampled; nothing to adjust.
            let Some(l) = logits.get_mut(token as usize) else {
                continue;
            };
            if p.repetition_penalty != 1.0 {
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
            if n > 0 {
                *l -= p.presence_penalty + p.frequency_penalty * n as f32;
            }
        }
    }

    /// Temperature, top-k, min-p, top-p and the draw, on final logits.
    ///
    /// Never sorts the whole vocabulary: top-k is a selection, and the
    /// min-p / top-p cuts sort only a head of the best candidates, grown
    /// until both cuts fall inside it.
    fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.params.temperature;
        let mut cand = std::mem::take(&mut self.cand);
        cand.clear();
        cand.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (i as u32, l * inv_t)),
        );
        let token = self.pick_from(&mut cand).unwrap_or_else(|| argmax(logits));
        self.cand = cand;
        token
    }

    fn pick_from(&mut self, cand: &mut Vec<(u32, f32)>) -> Option<u32> {
        // Highest first; ties broken by id so the order is deterministic.
        let better = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let p = &self.params;
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, better);
            cand.truncate(p.top_k);
        }
        let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return None;
        }
        let total: f32 = cand.iter().map(|c| (c.1 - max).exp()).sum();
        if p.min_p <= 0.0 && p.top_p >= 1.0 {
            // No cut by rank: draw straight from the softmax.
            let mut r = self.rng.random::<f32>() * total;
            for c in cand.iter() {
                let w = (c.1 - max).exp();
                if r < w {
                    return Some(c.0);
                }
                r -= w;
            }
            return cand.last().map(|c| c.0);
        }
        let mut head = cand.len().min(64);
        loop {
            if head < cand.len() {
                cand.select_nth_unstable_by(head - 1, better);
            }
            cand[..head].sort_unstable_by(better);
            let probs: Vec<f32> = cand[..head]
                .iter()
                .map(|c| (c.1 - max).exp() / total)
                .collect();
            let mut keep = head;
            let mut settled = true;
            if p.min_p > 0.0 {
                let floor = p.min_p * probs[0];
                let n = probs.iter().take_while(|&&q| q >= floor).count();
                settled &= n < head || head == cand.len();
                keep = keep.min(n.max(1));
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
                settled &= n < head || head == cand.len();
                keep = keep.min(n.max(1));
            }
            if settled {
                let kept: f32 = probs[..keep].iter().sum();
                let mut r = self.rng.random::<f32>() * kept;
                for (i, q) in probs[..keep].iter().enumerate() {
                    if r < *q {
                        return Some(cand[i].0);
                    }
                    r -= q;
                }
                return Some(cand[keep - 1].0);
            }
            head = (head * 4).min(cand.len());
        }
    }
}

/// Most alternatives a request may ask for per token (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Log-probabilities of one generated token under the model's distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// ln p(sampled token); `-inf` for a token the model rules out.
    pub logprob: f32,
    /// The most likely tokens as (id, ln p), best first, ties by lower id.
    pub top: Vec<(u32, f32)>,
}

/// Log-softmax of the raw `logits` at `token`, and the `top_n` most likely
/// tokens.
///
/// The raw logits are the model's own distribution: before penalties and
/// temperature, as OpenAI and vLLM (`raw_logprobs`) report it, so the numbers
/// do not change with the sampling settings. One pass for the maximum, one
/// for the normalizer and the top-`top_n` kept by insertion into a short
/// sorted list: O(vocab), no allocation beyond `top_n`.
/// Non-finite logits count as impossible tokens.
pub fn logprobs(logits: &[f32], token: u32, top_n: usize) -> TokenLogprobs {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return TokenLogprobs {
            logprob: f32::NEG_INFINITY,
            top: Vec::new(),
        };
    }
    // f32 exponentials (libm's f32 exp is ~1.7x its f64 one, and the
    // exponentials are the cost of this pass), summed in f32 over blocks of
    // 1024 and the blocks in f64: the rounding stays far below the digits a
    // logprob shows.
    let mut sum = 0f64;
    for block in logits.chunks(1024) {
        let part: f32 = block
            .iter()
            .filter(|l| l.is_finite())
            .map(|&l| (l - max).exp())
            .sum();
        sum += f64::from(part);
    }
    // The log of the normalizer, relative to `max`; `sum >= 1` (the max term).
    let log_z = sum.ln();
    let lp = |l: f32| -> f32 {
        if l.is_finite() {
            (f64::from(l - max) - log_z) as f32
        } else {
            f32::NEG_INFINITY
        }
    };
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(top_n + 1);
    if top_n > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if !l.is_finite() {
                continue;
            }
            // Scanning in id order with a strict `>` keeps the lower id on ties.
            if top.len() == top_n && top.last().is_some_and(|w| l <= w.1) {
                continue;
            }
            let at = top.partition_point(|c| c.1 >= l);
            top.insert(at, (i as u32, l));
            top.truncate(top_n);
        }
    }
    for c in &mut top {
        c.1 = lp(c.1);
    }
    let logprob = logits
        .get(token as usize)
        .map_or(f32::NEG_INFINITY, |&l| lp(l));
    TokenLogprobs { logprob, top }
}

/// Index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (just detected), all `argmax_avx2` enables.
        return unsafe { argmax_avx2(logits) };
    }
    argmax_lanes(logits)
}

/// [`argmax_lanes`] compiled for AVX2 (the build targets baseline x86-64,
/// whose SSE2 has no blend to vectorize it with).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn argmax_avx2(logits: &[f32]) -> u32 {
    argmax_lanes(logits)
}

#[inline(always)]
fn argmax_lanes(logits: &[f32]) -> u32 {
    // The first index holding the largest value, as a plain scan keeping the
    // first strictly greater value finds it (NaNs never win; a NaN in front
    // keeps index 0, as the scan would). Two passes without loop-carried
    // branches, which the compiler vectorizes: a lane-wise maximum, then
    // the first chunk holding it. Greedy sampling runs this over the whole
    // vocabulary for every sequence of every step.
    const L: usize = 16;
    let Some(&first) = logits.first() else {
        return 0;
    };
    if first.is_nan() {
        return 0;
    }
    let mut lanes = [f32::NEG_INFINITY; L];
    let mut chunks = logits.chunks_exact(L);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = lanes
        .iter()
        .chain(chunks.remainder())
        .fold(first, |m, &v| if v > m { v } else { m });
    for (ci, c) in logits.chunks(L).enumerate() {
        if c.iter().fold(false, |hit, &v| hit | (v == max)) {
            let j = c.iter().position(|&v| v == max).unwrap_or(0);
            return (ci * L + j) as u32;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_is_the_first_index_of_the_largest_value() {
        // What a scan keeping the first strictly greater value returns.
        fn scan(x: &[f32]) -> u32 {
            let mut best = 0;
            for (i, &v) in x.iter().enumerate() {
                if v > x[best] {
                    best = i;
                }
            }
            best as u32
        }
        let mut cases: Vec<Vec<f32>> = vec![
            vec![],
            vec![1.0],
            vec![f32::NAN, 5.0, 2.0],
            vec![1.0, f32::NAN, 3.0, 3.0],
            vec![f32::NEG_INFINITY; 40],
            vec![0.0, -0.0, 0.0],
            vec![-0.0, 0.0],
            vec![2.0, f32::INFINITY, f32::INFINITY, 1.0],
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for n in [15, 16, 17, 33, 1000, 49_152] {
            // Few distinct values, so ties are common and land in every lane.
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(0..7) as f32).collect();
            cases.push(v);
        }
        let mut big = vec![0.5f32; 49_152];
        big[49_151] = 9.0;
        big[12] = f32::NAN;
        cases.push(big);
        for c in &cases {
            assert_eq!(argmax(c), scan(c), "{c:?}");
        }
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = Sampler::new(SamplingParams::default(), &[]);
        assert_eq!(s.sample(&[0.1, 3.0, 2.9]), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_one_is_greedy() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let p = SamplingParams {
            temperature: 1.0,
            seed: Some(7),
            ..Default::default()
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(p.clone(), &[]);
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(p, &[]);
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
        let mut k1 = Sampler::new(
            SamplingParams {
                temperature: 1.0,
                top_k: 1,
                seed: Some(1),
                ..Default::default()
            },
            &[],
        );
        assert!((0..20).all(|_| k1.sample(&logits) == argmax(&logits)));
    }

    #[test]
    fn top_p_never_picks_outside_the_nucleus() {
        // p ≈ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps only the first two.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(
            SamplingParams {
                temperature: 1.0,
                top_p: 0.8,
                seed: Some(3),
                ..Default::default()
            },
            &[],
        );
        assert!((0..500).all(|_| s.sample(&logits) < 2));
        let mut m = Sampler::new(
            SamplingParams {
                temperature: 1.0,
                min_p: 0.5,
                seed: Some(3),
                ..Default::default()
            },
            &[],
        );
        assert!((0..500).all(|_| m.sample(&logits) == 0));
    }

    #[test]
    fn bad_params_are_rejected() {
        assert!(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            min_p: 2.0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    fn greedy_with(p: SamplingParams, prompt: &[u32]) -> Sampler {
        Sampler::new(
            SamplingParams {
                temperature: 0.0,
                ..p
            },
            prompt,
        )
    }

    #[test]
    fn repetition_penalty_counts_prompt_and_output_and_both_signs() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        // Token 0 is in the prompt: 2.0 / 2 = 1.0 < 1.5.
        assert_eq!(greedy_with(p.clone(), &[0]).sample(&[2.0, 1.5, -1.0]), 1);
        // A negative logit is multiplied: -1.0 * 2 = -2.0 < -1.5.
        assert_eq!(greedy_with(p.clone(), &[0]).sample(&[-1.0, -1.5]), 1);
        // An output token is penalized too, and only once however often seen.
        let mut s = greedy_with(p, &[]);
        assert_eq!(s.sample(&[2.0, 1.5]), 0);
        s.accept(0);
        s.accept(0);
        assert_eq!(s.sample(&[2.0, 1.5]), 1);
        assert_eq!(s.sample(&[4.0, 1.5]), 0);
    }

    #[test]
    fn presence_penalty_is_output_only_and_flat() {
        let p = SamplingParams {
            presence_penalty: 0.5,
            ..Default::default()
        };
        // The prompt does not count for presence.
        let mut s = greedy_with(p, &[0]);
        assert_eq!(s.sample(&[1.0, 0.8]), 0);
        s.accept(0);
        // 1.0 - 0.5 = 0.5 < 0.8.
        assert_eq!(s.sample(&[1.0, 0.8]), 1);
        s.accept(0);
        // Still 0.5 however many times: 0.5 > 0.4.
        assert_eq!(s.sample(&[1.0, 0.4]), 0);
    }

    #[test]
    fn frequency_penalty_grows_with_the_count() {
        let mut s = greedy_with(
            SamplingParams {
                frequency_penalty: 0.2,
                ..Default::default()
            },
            &[0, 0, 0, 0],
        );
        let logits = [1.0, 0.5];
        // 1.0, 0.8, 0.6 beat 0.5; 0.4 does not.
        for _ in 0..3 {
            assert_eq!(s.sample(&logits), 0);
            s.accept(0);
        }
        assert_eq!(s.sample(&logits), 1);
    }

    #[test]
    fn negative_additive_penalties_encourage_repeats() {
        let mut s = greedy_with(
            SamplingParams {
                presence_penalty: -1.0,
                ..Default::default()
            },
            &[],
        );
        s.accept(1);
        assert_eq!(s.sample(&[1.0, 0.5]), 1);
    }

    #[test]
    fn out_of_vocabulary_history_is_ignored() {
        let mut s = greedy_with(
            SamplingParams {
                repetition_penalty: 3.0,
                frequency_penalty: 1.0,
                ..Default::default()
            },
            &[1000],
        );
        s.accept(u32::MAX);
        assert_eq!(s.sample(&[0.0, 1.0]), 1);
    }

    #[test]
    fn bad_penalties_are_rejected_and_bounds_accepted() {
        let check = |p: SamplingParams| p.validate();
        for r in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let p = SamplingParams {
                repetition_penalty: r,
                ..Default::default()
            };
            assert!(check(p).is_err(), "{r}");
        }
        for v in [2.5, -2.5, f32::NAN, f32::NEG_INFINITY] {
            assert!(check(SamplingParams {
                presence_penalty: v,
                ..Default::default()
            })
            .is_err());
            assert!(check(SamplingParams {
                frequency_penalty: v,
                ..Default::default()
            })
            .is_err());
        }
        assert_eq!(
            check(SamplingParams {
                presence_penalty: 3.0,
                ..Default::default()
            }),
            Err(SamplingError::PresencePenalty(3.0))
        );
        assert!(check(SamplingParams {
            repetition_penalty: 0.5,
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            ..Default::default()
        })
        .is_ok());
    }

    /// Penalized logits computed the slow, obvious way, as an oracle.
    fn reference_penalized(
        logits: &[f32],
        prompt: &[u32],
        out: &[u32],
        p: &SamplingParams,
    ) -> Vec<f32> {
        let mut l = logits.to_vec();
        for (t, v) in l.iter_mut().enumerate() {
            let t = t as u32;
            let n = out.iter().filter(|&&o| o == t).count() as f32;
            if prompt.contains(&t) || n > 0.0 {
                *v = if *v > 0.0 {
                    *v / p.repetition_penalty
                } else {
                    *v * p.repetition_penalty
                };
            }
            if n > 0.0 {
                *v -= p.presence_penalty + p.frequency_penalty * n;
            }
        }
        l
    }

    /// The tokens top-k, min-p and top-p allow, by a full sort.
    fn allowed_by_full_sort(logits: &[f32], p: &SamplingParams) -> Vec<u32> {
        let mut c: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / p.temperature))
            .collect();
        c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 {
            c.truncate(p.top_k);
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
    fn logprobs_are_a_log_softmax() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, f32::NEG_INFINITY];
        let lp = logprobs(&logits, 2, 3);
        let z: f64 = [1.0f64, 3.0, 2.0, 3.0].iter().map(|l| l.exp()).sum();
        assert!((f64::from(lp.logprob) - (2.0 - z.ln())).abs() < 1e-6);
        // Best first; the tie between ids 1 and 3 goes to the lower id.
        let ids: Vec<u32> = lp.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        assert_eq!(lp.top[0].1, lp.top[1].1);
        assert_eq!(logprobs(&logits, 4, 0).logprob, f32::NEG_INFINITY);
        assert!(logprobs(&logits, 4, 0).top.is_empty());
        // Past the vocabulary: impossible, not a panic.
        assert_eq!(logprobs(&logits, 99, 1).logprob, f32::NEG_INFINITY);
        // More alternatives than finite logits: only the possible ones.
        assert_eq!(logprobs(&logits, 0, 20).top.len(), 4);
    }

    proptest::proptest! {
        /// Probabilities of the whole vocabulary sum to 1; the top list is
        /// sorted, holds the largest values, and the sampled token's logprob
        /// is the one the list gives it.
        #[test]
        fn logprobs_sum_to_one_and_top_is_the_head(
            logits in proptest::collection::vec(-30.0f32..30.0, 1..300),
            top_n in 0usize..=MAX_TOP_LOGPROBS,
            pick: proptest::sample::Index,
        ) {
            let token = pick.index(logits.len()) as u32;
            let all = logprobs(&logits, token, logits.len());
            let total: f64 = all.top.iter().map(|t| f64::from(t.1).exp()).sum();
            proptest::prop_assert!((total - 1.0).abs() < 1e-4, "sum {}", total);
            let lp = logprobs(&logits, token, top_n);
            proptest::prop_assert_eq!(lp.top.len(), top_n.min(logits.len()));
            proptest::prop_assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
            // The head of an independent full ranking (ties by lower id).
            let mut order: Vec<u32> = (0..logits.len() as u32).collect();
            order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
            let ids: Vec<u32> = lp.top.iter().map(|t| t.0).collect();
            proptest::prop_assert_eq!(&ids[..], &order[..ids.len()]);
            proptest::prop_assert_eq!(&lp.top[..], &all.top[..lp.top.len()]);
            let at = all.top.iter().find(|t| t.0 == token).map(|t| t.1);
            proptest::prop_assert_eq!(Some(lp.logprob), at);
            proptest::prop_assert!(lp.logprob <= 0.0);
            if top_n > 0 {
                // Greedy sampling picks the token the top-1 names.
                let mut s = Sampler::new(SamplingParams::default(), &[]);
                proptest::prop_assert_eq!(s.sample(&logits), lp.top[0].0);
            }
        }

        /// Sorting only a growing head picks from exactly the set a full
        /// sort allows, also when the nucleus is wider than the first head.
        #[test]
        fn partial_sort_cuts_match_a_full_sort(
            logits in proptest::collection::vec(-3.0f32..3.0, 1..600),
            top_k in 0usize..400,
            top_p in 0.05f32..1.0,
            min_p in 0.0f32..0.5,
            seed: u64,
        ) {
            let p = SamplingParams { temperature: 1.0, top_k, top_p, min_p, seed: Some(seed), ..Default::default() };
            let allowed = allowed_by_full_sort(&logits, &p);
            let mut s = Sampler::new(p, &[]);
            for _ in 0..20 {
                let t = s.sample(&logits);
                proptest::prop_assert!(allowed.contains(&t), "{} not in {:?}", t, allowed);
            }
        }

        #[test]
        fn neutral_penalties_change_nothing(
            logits in proptest::collection::vec(-5.0f32..5.0, 1..20),
            prompt in proptest::collection::vec(0u32..20, 0..10),
            out in proptest::collection::vec(0u32..20, 0..10),
            seed: u64,
            temperature in 0.0f32..2.0,
        ) {
            let base = SamplingParams { temperature, seed: Some(seed), ..Default::default() };
            let explicit = SamplingParams {
                repetition_penalty: 1.0,
                presence_penalty: 0.0,
                frequency_penalty: 0.0,
                ..base.clone()
            };
            let mut a = Sampler::new(base, &[]);
            let mut b = Sampler::new(explicit, &prompt);
            for &t in &out {
                b.accept(t);
            }
            for _ in 0..5 {
                proptest::prop_assert_eq!(a.sample(&logits), b.sample(&logits));
            }
        }

        #[test]
        fn greedy_with_penalties_matches_the_reference(
            logits in proptest::collection::vec(-5.0f32..5.0, 1..20),
            prompt in proptest::collection::vec(0u32..20, 0..10),
            out in proptest::collection::vec(0u32..20, 0..10),
            repetition_penalty in 0.1f32..3.0,
            presence_penalty in -2.0f32..=2.0,
            frequency_penalty in -2.0f32..=2.0,
        ) {
            let p = SamplingParams {
                repetition_penalty,
                presence_penalty,
                frequency_penalty,
                ..Default::default()
            };
            let mut s = Sampler::new(p.clone(), &prompt);
            for &t in &out {
                s.accept(t);
            }
            let want = argmax(&reference_penalized(&logits, &prompt, &out, &p));
            proptest::prop_assert_eq!(s.sample(&logits), want);
        }

        #[test]
        fn penalized_sampling_is_reproducible_from_the_seed(
            logits in proptest::collection::vec(-5.0f32..5.0, 2..20),
            prompt in proptest::collection::vec(0u32..20, 0..10),
            seed: u64,
        ) {
            let p = SamplingParams {
                temperature: 1.0,
                seed: Some(seed),
                repetition_penalty: 1.3,
                presence_penalty: 0.5,
                frequency_penalty: 0.3,
                ..Default::default()
            };
            let run = || {
                let mut s = Sampler::new(p.clone(), &prompt);
                (0..10)
                    .map(|_| {
                        let t = s.sample(&logits);
                        s.accept(t);
                        t
                    })
                    .collect::<Vec<u32>>()
            };
            proptest::prop_assert_eq!(run(), run());
        }
    }
}

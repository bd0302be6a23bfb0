//! What each request asks: prompt text (synthetic lengths, a shared system
//! prompt, or a JSONL file) and its output limit. Requests are a pure function
//! of (seed, sweep point, index), so runs repeat exactly and no two points send
//! the same synthetic prompt (which the server's prefix cache would serve).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::prompt_text::TextSource;

/// A length: fixed, uniform over an inclusive range, or normal (rounded, at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LengthSpec {
    /// Always this.
    Fixed {
        /// The length.
        value: usize,
    },
    /// Uniform over `min..=max`.
    Uniform {
        /// Smallest.
        min: usize,
        /// Largest.
        max: usize,
    },
    /// Normal with this mean and standard deviation, rounded, at least 1.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
}

/// A length spec that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad length {0:?}: expected N, MIN..MAX (inclusive) or normal:MEAN,STD, all positive")]
pub struct BadLength(String);

impl FromStr for LengthSpec {
    type Err = BadLength;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadLength(s.to_string());
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("normal:") {
            let (m, d) = rest.split_once(',').ok_or_else(bad)?;
            let mean: f64 = m.trim().parse().map_err(|_| bad())?;
            let std: f64 = d.trim().parse().map_err(|_| bad())?;
            if !(mean >= 1.0 && std >= 0.0 && mean.is_finite() && std.is_finite()) {
                return Err(bad());
            }
            return Ok(Self::Normal { mean, std });
        }
        if let Some((a, b)) = s.split_once("..") {
            let min: usize = a.trim().parse().map_err(|_| bad())?;
            let max: usize = b
                .trim_start_matches('=')
                .trim()
                .parse()
                .map_err(|_| bad())?;
            if min == 0 || max < min {
                return Err(bad());
            }
            return Ok(Self::Uniform { min, max });
        }
        match s.parse() {
            Ok(value) if value > 0 => Ok(Self::Fixed { value }),
            _ => Err(bad()),
        }
    }
}

impl LengthSpec {
    /// One draw.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        match *self {
            Self::Fixed { value } => value,
            Self::Uniform { min, max } => rng.random_range(min..=max),
            Self::Normal { mean, std } => {
                // Box-Muller: one standard normal from two uniforms.
                let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
                let u2: f64 = rng.random();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (mean + std * z).round().max(1.0) as usize
            }
        }
    }
}

/// One request's content.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRequest {
    /// A system prompt (the shared prefix, and/or the file's `system`).
    pub system: Option<Arc<str>>,
    /// The user message.
    pub user: String,
    /// The output limit sent with the request.
    pub max_tokens: usize,
}

/// One line of a prompts file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct FileEntry {
    /// The user message.
    pub prompt: String,
    /// An optional system prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// An optional output limit (else the `--output-tokens` draw).
    #[serde(default)]
    pub max_tokens: Option<usize>,
}

/// A prompts file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PromptsFileError {
    /// Reading failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not a JSON string or an object with a string `prompt`.
    #[error("{path} line {line}: {detail}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// No prompts at all.
    #[error("{0} holds no prompts")]
    Empty(String),
}

/// Reads a JSONL file: each non-blank line a JSON string, or an object with
/// `prompt` and optional `system` and `max_tokens` (other keys are ignored, so
/// `factory batch` files work).
pub fn read_prompts_file(path: &Path) -> Result<Vec<FileEntry>, PromptsFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PromptsFileError::Read {
        path: name.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |detail: String| PromptsFileError::Line {
            path: name.clone(),
            line: i + 1,
            detail,
        };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        let entry = match v {
            serde_json::Value::String(prompt) => FileEntry {
                prompt,
                system: None,
                max_tokens: None,
            },
            v @ serde_json::Value::Object(_) => serde_json::from_value(v)
                .map_err(|e| err(format!("{e} (want {{\"prompt\": \"...\"}})")))?,
            _ => return Err(err("expected a JSON string or object".into())),
        };
        if entry.max_tokens == Some(0) {
            return Err(err("max_tokens must be at least 1".into()));
        }
        out.push(entry);
    }
    if out.is_empty() {
        return Err(PromptsFileError::Empty(name));
    }
    Ok(out)
}

/// Where user messages come from.
#[derive(Debug, Clone)]
pub enum Prompts {
    /// Synthetic text of `input` tokens.
    Synthetic {
        /// The text source.
        source: Arc<TextSource>,
        /// Input length per request.
        input: LengthSpec,
    },
    /// A file's entries, in order, cycling.
    File(Arc<Vec<FileEntry>>),
}

/// The whole workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// User messages.
    pub prompts: Prompts,
    /// Output limit per request.
    pub output: LengthSpec,
    /// Shared system prompts: request `i` gets `prefixes[i % len]`.
    pub prefixes: Vec<Arc<str>>,
    /// Base seed.
    pub seed: u64,
}

impl Workload {
    /// `groups` shared system prompts of `tokens` tokens each (none if `tokens` is 0).
    pub fn shared_prefixes(
        source: &TextSource,
        tokens: usize,
        groups: usize,
        seed: u64,
    ) -> Vec<Arc<str>> {
        if tokens == 0 {
            return Vec::new();
        }
        (0..groups.max(1))
            .map(|g| {
                let mut rng = StdRng::seed_from_u64(mix(seed, u64::MAX, g as u64));
                Arc::from(source.text(tokens, &mut rng))
            })
            .collect()
    }

    /// Request `index` of sweep point `point`.
    pub fn request(&self, point: usize, index: usize) -> PromptRequest {
        let mut rng = StdRng::seed_from_u64(mix(self.seed, point as u64, index as u64));
        let prefix =
            (!self.prefixes.is_empty()).then(|| &self.prefixes[index % self.prefixes.len()]);
        match &self.prompts {
            Prompts::Synthetic { source, input } => {
                let n = input.sample(&mut rng);
                PromptRequest {
                    system: prefix.cloned(),
                    user: source.text(n, &mut rng),
                    max_tokens: self.output.sample(&mut rng),
                }
            }
            Prompts::File(entries) => {
                let e = &entries[index % entries.len()];
                let system = match (prefix, &e.system) {
                    (Some(p), Some(s)) => Some(Arc::from(format!("{p}\n\n{s}"))),
                    (Some(p), None) => Some(p.clone()),
                    (None, Some(s)) => Some(Arc::from(s.as_str())),
                    (None, None) => None,
                };
                PromptRequest {
                    system,
                    user: e.prompt.clone(),
                    max_tokens: e.max_tokens.unwrap_or_else(|| self.output.sample(&mut rng)),
                }
            }
        }
    }
}

/// A well-spread seed from three numbers (splitmix64 finalizer over a combination).
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed
        ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(31);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn length_specs_parse() {
        assert_eq!("128".parse(), Ok(LengthSpec::Fixed { value: 128 }));
        assert_eq!(
            "16..512".parse(),
            Ok(LengthSpec::Uniform { min: 16, max: 512 })
        );
        assert_eq!(
            "16..=512".parse(),
            Ok(LengthSpec::Uniform { min: 16, max: 512 })
        );
        assert_eq!(
            "normal:200,50".parse(),
            Ok(LengthSpec::Normal {
                mean: 200.0,
                std: 50.0
            })
        );
        for bad in [
            "0",
            "-3",
            "x",
            "9..3",
            "0..4",
            "normal:5",
            "normal:0,1",
            "normal:5,-1",
        ] {
            assert!(bad.parse::<LengthSpec>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn samples_stay_in_range(min in 1usize..1000, extra in 0usize..1000, seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let u = LengthSpec::Uniform { min, max: min + extra };
            let n = LengthSpec::Normal { mean: min as f64, std: extra as f64 };
            for _ in 0..20 {
                let x = u.sample(&mut rng);
                prop_assert!(min <= x && x <= min + extra);
                prop_assert!(n.sample(&mut rng) >= 1);
            }
        }
    }

    #[test]
    fn normal_has_its_mean() {
        let mut rng = StdRng::seed_from_u64(5);
        let spec = LengthSpec::Normal {
            mean: 300.0,
            std: 40.0,
        };
        let n = 4000;
        let mean = (0..n).map(|_| spec.sample(&mut rng) as f64).sum::<f64>() / n as f64;
        assert!((mean - 300.0).abs() < 3.0, "{mean}");
    }

    fn synthetic(prefix_tokens: usize, groups: usize) -> Workload {
        let source = Arc::new(TextSource::words());
        Workload {
            prefixes: Workload::shared_prefixes(&source, prefix_tokens, groups, 9),
            prompts: Prompts::Synthetic {
                source,
                input: LengthSpec::Fixed { value: 40 },
            },
            output: LengthSpec::Uniform { min: 4, max: 8 },
            seed: 9,
        }
    }

    #[test]
    fn requests_repeat_per_seed_and_differ_across_points() {
        let w = synthetic(0, 1);
        assert_eq!(w.request(0, 3), w.request(0, 3));
        assert_ne!(w.request(0, 3).user, w.request(1, 3).user);
        assert_ne!(w.request(0, 3).user, w.request(0, 4).user);
        assert!(w.request(0, 0).system.is_none());
        let r = w.request(2, 1);
        assert!((4..=8).contains(&r.max_tokens));
    }

    #[test]
    fn shared_prefix_groups_cycle() {
        let w = synthetic(64, 2);
        let s = |i| w.request(0, i).system.expect("prefix");
        assert_eq!(s(0), s(2));
        assert_eq!(s(1), s(3));
        assert_ne!(s(0), s(1));
        // Different points share the prefixes (that is the point of them).
        assert_eq!(w.request(5, 0).system, w.request(0, 0).system);
    }

    #[test]
    fn prompts_file_lines() {
        let dir = std::env::temp_dir().join(format!("factory-bench-wl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("p.jsonl");
        std::fs::write(
            &path,
            "\"plain\"\n\n{\"prompt\": \"with system\", \"system\": \"S\", \"max_tokens\": 3, \"seed\": 1}\n",
        )
        .expect("write");
        let entries = read_prompts_file(&path).expect("reads");
        assert_eq!(entries.len(), 2);
        let w = Workload {
            prompts: Prompts::File(Arc::new(entries)),
            output: LengthSpec::Fixed { value: 11 },
            prefixes: vec![Arc::from("P")],
            seed: 0,
        };
        let a = w.request(0, 0);
        assert_eq!((a.user.as_str(), a.max_tokens), ("plain", 11));
        assert_eq!(a.system.as_deref(), Some("P"));
        let b = w.request(0, 1);
        assert_eq!((b.user.as_str(), b.max_tokens), ("with system", 3));
        assert_eq!(b.system.as_deref(), Some("P\n\nS"));
        assert_eq!(w.request(0, 2).user, "plain");

        std::fs::write(&path, "{\"text\": 1}\n").expect("write");
        let err = read_prompts_file(&path).expect_err("no prompt");
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::write(&path, "\n").expect("write");
        assert!(read_prompts_file(&path).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}

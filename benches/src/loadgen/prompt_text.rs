//! Prompt text of a requested token length.
//!
//! The text comes from a fixed English corpus (the Apache-2.0 license in
//! `benches/data/perplexity.txt`, whitespace collapsed) taken at random
//! offsets, so prompts differ and the server's prefix cache cannot help unless
//! a shared prefix is asked for. Lengths are exact in a tokenizer's tokens
//! when one is loaded (the default model's, from the factory cache, or a file
//! given), else approximate: words times a tokens-per-word ratio calibrated
//! once with the default model's tokenizer on the same corpus.

use std::path::Path;

use factory_models::gguf::GgufFile;
use factory_models::tokenizer::Tokenizer;
use rand::Rng;

const CORPUS: &str = include_str!("../../data/perplexity.txt");

/// SmolLM2-135M-Instruct tokens per corpus word (2053 tokens / 1581 words,
/// checked by `words_ratio_matches_the_default_tokenizer`).
pub const TOKENS_PER_WORD: f64 = 1.299;

/// Why a tokenizer could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PromptTextError {
    /// The file could not be read as a GGUF or tokenizer.json.
    #[error("loading the tokenizer from {path}: {detail}")]
    Load {
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// `default` was asked for and the default model is not cached.
    #[error("the default model is not cached at {0}; run `factory fetch-default-model`, pass a tokenizer file, or use --tokenizer words")]
    NoDefaultModel(String),
    /// The tokenizer failed on the corpus.
    #[error("tokenizing the corpus: {0}")]
    Tokenize(String),
}

/// Where prompt text comes from and how its length is counted.
pub enum TextSource {
    /// Windows of a tokenized corpus: lengths exact in this tokenizer's tokens.
    Tokens {
        /// The tokenizer.
        tokenizer: Box<Tokenizer>,
        /// The corpus, tokenized.
        ids: Vec<u32>,
        /// Where the tokenizer came from.
        name: String,
    },
    /// Windows of corpus words: `round(tokens / TOKENS_PER_WORD)` words.
    Words {
        /// The corpus words.
        words: Vec<&'static str>,
    },
}

impl std::fmt::Debug for TextSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.method())
    }
}

fn corpus_text() -> String {
    CORPUS.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl TextSource {
    /// From `spec`: `auto` (the default model's tokenizer if cached, else
    /// words), `default`, `words`, or a path to a `.gguf` or `tokenizer.json`.
    pub fn load(spec: &str) -> Result<Self, PromptTextError> {
        match spec {
            "words" => Ok(Self::words()),
            "auto" | "default" => {
                let path = factory_models::default_model::cached_path();
                if path.is_file() {
                    Self::from_file(&path)
                } else if spec == "auto" {
                    tracing::warn!(
                        "default model not cached at {}: prompt lengths approximated from words",
                        path.display()
                    );
                    Ok(Self::words())
                } else {
                    Err(PromptTextError::NoDefaultModel(path.display().to_string()))
                }
            }
            path => Self::from_file(Path::new(path)),
        }
    }

    /// Corpus words, lengths approximate.
    pub fn words() -> Self {
        Self::Words {
            words: CORPUS.split_whitespace().collect(),
        }
    }

    /// A tokenizer from a `.gguf` (its embedded vocabulary) or a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, PromptTextError> {
        let err = |detail: String| PromptTextError::Load {
            path: path.display().to_string(),
            detail,
        };
        let tokenizer = if path.extension().is_some_and(|e| e == "gguf") {
            let gguf = GgufFile::open(path).map_err(|e| err(e.to_string()))?;
            Tokenizer::from_gguf(&gguf.metadata).map_err(|e| err(e.to_string()))?
        } else {
            Tokenizer::from_file(path, None).map_err(|e| err(e.to_string()))?
        };
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        Self::from_tokenizer(tokenizer, name)
    }

    /// Windows of the corpus in `tokenizer`'s tokens.
    pub fn from_tokenizer(tokenizer: Tokenizer, name: String) -> Result<Self, PromptTextError> {
        let ids = tokenizer
            .encode(&corpus_text(), false)
            .map_err(|e| PromptTextError::Tokenize(e.to_string()))?;
        if ids.is_empty() {
            return Err(PromptTextError::Tokenize("no tokens".into()));
        }
        Ok(Self::Tokens {
            tokenizer: Box::new(tokenizer),
            ids,
            name,
        })
    }

    /// How lengths are counted, for reports.
    pub fn method(&self) -> String {
        match self {
            Self::Tokens { name, .. } => format!("exact, tokenizer of {name}"),
            Self::Words { .. } => format!(
                "approximate, {TOKENS_PER_WORD} tokens per word (calibrated with the default model's tokenizer)"
            ),
        }
    }

    /// Text of about `tokens` tokens (exactly, with a tokenizer, when the
    /// decoded window re-encodes to the same length, which it nearly always does).
    pub fn text(&self, tokens: usize, rng: &mut impl Rng) -> String {
        let tokens = tokens.max(1);
        match self {
            Self::Tokens { tokenizer, ids, .. } => {
                let start = rng.random_range(0..ids.len());
                let window: Vec<u32> = ids
                    .iter()
                    .cycle()
                    .skip(start)
                    .take(tokens)
                    .copied()
                    .collect();
                let mut text = tokenizer.decode(&window, false).unwrap_or_default();
                // Decoding then encoding can merge tokens across the window's
                // edges; trim to the count until it is stable.
                for _ in 0..3 {
                    match tokenizer.encode(&text, false) {
                        Ok(again) if again.len() > tokens => {
                            text = tokenizer.decode(&again[..tokens], false).unwrap_or(text);
                        }
                        _ => break,
                    }
                }
                text
            }
            Self::Words { words } => {
                let n = ((tokens as f64 / TOKENS_PER_WORD).round() as usize).max(1);
                let start = rng.random_range(0..words.len());
                words
                    .iter()
                    .cycle()
                    .skip(start)
                    .take(n)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
    }

    /// Tokens in `text`, when a tokenizer is loaded.
    pub fn count(&self, text: &str) -> Option<usize> {
        match self {
            Self::Tokens { tokenizer, .. } => tokenizer.encode(text, false).ok().map(|v| v.len()),
            Self::Words { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn default_tokens() -> Option<TextSource> {
        let path = factory_models::default_model::cached_path();
        if !path.is_file() {
            eprintln!(
                "SKIPPED: the default model is not cached at {}",
                path.display()
            );
            return None;
        }
        Some(TextSource::from_file(&path).expect("default tokenizer loads"))
    }

    #[test]
    fn tokenizer_prompts_have_the_requested_length() {
        let Some(src) = default_tokens() else { return };
        let mut rng = StdRng::seed_from_u64(7);
        for n in [1, 7, 32, 128, 1000, 5000] {
            for _ in 0..5 {
                let text = src.text(n, &mut rng);
                let got = src.count(&text).expect("tokenizer");
                // Exact but for a rare re-merge at the edges.
                assert!(got <= n && got + 2 >= n, "asked {n}, got {got}: {text:?}");
            }
        }
        assert!(src.method().contains("SmolLM2"));
    }

    #[test]
    fn words_ratio_matches_the_default_tokenizer() {
        let Some(src) = default_tokens() else { return };
        let text = corpus_text();
        let tokens = src.count(&text).expect("tokenizer") as f64;
        let words = text.split_whitespace().count() as f64;
        let ratio = tokens / words;
        assert!(
            (ratio - TOKENS_PER_WORD).abs() < 0.01,
            "measured {tokens} tokens / {words} words = {ratio:.3}"
        );
        // And word prompts land near the target in real tokens.
        let words = TextSource::words();
        let mut rng = StdRng::seed_from_u64(3);
        let mut total = 0.0;
        for _ in 0..50 {
            total += src.count(&words.text(256, &mut rng)).expect("count") as f64;
        }
        let mean = total / 50.0;
        assert!((mean - 256.0).abs() < 256.0 * 0.2, "mean {mean}");
    }

    #[test]
    fn words_source_needs_no_model() {
        let src = TextSource::load("words").expect("always available");
        let mut rng = StdRng::seed_from_u64(1);
        let t = src.text(130, &mut rng);
        assert_eq!(t.split(' ').count(), 100);
        assert!(src.method().starts_with("approximate"));
        assert!(TextSource::load("/nonexistent/tokenizer.json").is_err());
    }
}

//! Tokenizers: Hugging Face `tokenizer.json` files and GGUF vocabularies,
//! both run through the `tokenizers` crate.
//!
//! A GGUF carries no `tokenizer.json`; [`Tokenizer::from_gguf`] rebuilds the
//! equivalent pipeline from `tokenizer.ggml.*` metadata:
//!
//! - `gpt2` (byte-level BPE): vocabulary + merges, a byte-level
//!   pre-tokenizer whose split regex follows `tokenizer.ggml.pre`:
//!   - GPT-2 regex: `gpt2`, `gpt-2`, `default`, `phi-2`, `mpt`, `olmo`,
//!     `jais`, `roberta-bpe`, `jina-*`, a missing key, and (with a warning)
//!     any name not listed here;
//!   - digits split one by one, then the GPT-2 regex: `smollm`,
//!     `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`, `minerva`;
//!   - the Llama 3 regex (digits in runs of up to 3, merges ignored when the
//!     whole word is a token): `llama-bpe`, `llama3`, `llama-v3`, `dbrx`,
//!     `smaug-bpe`, `falcon3`, `pixtral`;
//!   - the Qwen2 regex (single digits) plus NFC normalization: `qwen2`,
//!     `deepseek-r1-qwen`, `megrez`.
//! - `llama` (SentencePiece BPE as in Llama 2 / Mistral): tokens + scores,
//!   merges rebuilt from the scores the way transformers' GGUF converter
//!   does, byte fallback to `<0xXX>` tokens, `▁` for spaces, a leading `▁`
//!   when `tokenizer.ggml.add_space_prefix` (default true).
//!
//! Control tokens (token type 3) become special added tokens, so
//! `<|im_start|>` in text is one token; user-defined tokens (type 4) become
//! non-special added tokens.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, NormalizerWrapper, SplitDelimiterBehavior};

use crate::gguf::GgufValue;

/// The Llama 3 split regex, as in Meta's `tokenizer.json`.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 split regex, as in Qwen's `tokenizer.json`.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp token type of control (special) tokens.
const TOKEN_TYPE_CONTROL: i64 = 3;
/// llama.cpp token type of user-defined tokens.
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Why a tokenizer could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `tokenizer.json` could not be parsed.
    #[error("loading tokenizer file {path}: {message}")]
    TokenizerFile {
        /// The file.
        path: PathBuf,
        /// What the `tokenizers` crate said.
        message: String,
    },
    /// A `tokenizer_config.json` is not valid JSON or has a malformed field.
    #[error("parsing tokenizer config {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A required GGUF metadata key is absent.
    #[error("GGUF metadata key `{key}` is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A GGUF metadata key holds a value of the wrong type or shape.
    #[error("GGUF metadata key `{key}` is malformed: {detail}")]
    BadKey {
        /// The key.
        key: String,
        /// What was wrong.
        detail: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer this module cannot build.
    #[error("unsupported GGUF tokenizer model `{model}` (key `tokenizer.ggml.model`; supported: gpt2, llama)")]
    UnsupportedModel {
        /// The model name.
        model: String,
    },
    /// The `tokenizers` pipeline could not be assembled.
    #[error("building the tokenizer: {0}")]
    Build(String),
    /// Encoding failed.
    #[error("encoding text: {0}")]
    Encode(String),
    /// Decoding failed.
    #[error("decoding ids: {0}")]
    Decode(String),
}

/// Results of this module.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// How a vocabulary entry's string maps to the bytes it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEncoding {
    /// GPT-2 byte-level: each char stands for one byte (`Ġ` = space).
    ByteLevel,
    /// SentencePiece: `▁` is a space, `<0xXX>` is one raw byte.
    SentencePiece,
    /// The token string is its own UTF-8 text.
    Plain,
}

/// The pre-tokenizer family chosen from `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreFamily {
    Gpt2,
    DigitsThenGpt2,
    Llama3,
    Qwen2,
}

impl PreFamily {
    /// The family for a `tokenizer.ggml.pre` value, and whether it was recognized.
    fn from_pre(pre: Option<&str>) -> (Self, bool) {
        let Some(pre) = pre else {
            return (Self::Gpt2, true);
        };
        match pre {
            "gpt2" | "gpt-2" | "default" | "phi-2" | "mpt" | "olmo" | "jais" | "roberta-bpe" => {
                (Self::Gpt2, true)
            }
            p if p.starts_with("jina-") => (Self::Gpt2, true),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva" => (Self::DigitsThenGpt2, true),
            "llama-bpe" | "llama3" | "llama-v3" | "dbrx" | "smaug-bpe" | "falcon3" | "pixtral" => {
                (Self::Llama3, true)
            }
            "qwen2" | "deepseek-r1-qwen" | "megrez" => (Self::Qwen2, true),
            _ => (Self::Gpt2, false),
        }
    }
}

/// A tokenizer: the `tokenizers` pipeline plus the special-token facts an
/// engine needs (BOS/EOS ids and strings, raw token bytes).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    encoding: TokenEncoding,
    bos_id: Option<u32>,
    bos_token: Option<String>,
    eos_ids: Vec<u32>,
    eos_token: Option<String>,
    /// Whether BOS should lead an encoding with special tokens (None: as the post-processor does).
    add_bos: Option<bool>,
    /// Whether EOS should end an encoding with special tokens (None: as the post-processor does).
    add_eos: Option<bool>,
    /// Whether the `tokenizers` post-processor itself adds BOS / EOS.
    post_adds_bos: bool,
    post_adds_eos: bool,
    strips_leading_space: bool,
    /// Raw bytes of every token, concatenated; `byte_offsets[id]..byte_offsets[id + 1]`.
    bytes: Vec<u8>,
    byte_offsets: Vec<usize>,
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`, with BOS/EOS tokens and
    /// `add_bos_token`/`add_eos_token` from `tokenizer_config.json` if given.
    pub fn from_file(tokenizer_json: &Path, tokenizer_config: Option<&Path>) -> Result<Self> {
        let bytes = std::fs::read(tokenizer_json).map_err(|source| TokenizerError::Io {
            path: tokenizer_json.to_path_buf(),
            source,
        })?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
            TokenizerError::TokenizerFile {
                path: tokenizer_json.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        let config = match tokenizer_config {
            Some(path) => Some(ConfigFacts::read(path)?),
            None => None,
        };
        let config = config.unwrap_or_default();

        let decoder_json = inner
            .get_decoder()
            .and_then(|d| serde_json::to_value(d).ok())
            .unwrap_or(serde_json::Value::Null);
        let encoding = encoding_from_decoder(&decoder_json);
        let strips_leading_space = decoder_strips_leading_space(&decoder_json);

        let bos_id = config
            .bos_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t));
        let eos_ids = config
            .eos_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t))
            .into_iter()
            .collect();
        Self::assemble(
            inner,
            encoding,
            strips_leading_space,
            bos_id,
            config.bos_token,
            eos_ids,
            config.eos_token,
            config.add_bos_token,
            config.add_eos_token,
        )
    }

    /// Builds the tokenizer a GGUF describes in its `tokenizer.ggml.*` metadata.
    pub fn from_gguf(metadata: &BTreeMap<String, GgufValue>) -> Result<Self> {
        let model = req_str(metadata, "tokenizer.ggml.model")?;
        let tokens = str_array(metadata, "tokenizer.ggml.tokens")?;
        let types = match metadata.get("tokenizer.ggml.token_type") {
            Some(v) => Some(int_array(v, "tokenizer.ggml.token_type", tokens.len())?),
            None => None,
        };
        let bos_id = opt_id(metadata, "tokenizer.ggml.bos_token_id", tokens.len())?;
        let eos_id = opt_id(metadata, "tokenizer.ggml.eos_token_id", tokens.len())?;
        let eot_id = opt_id(metadata, "tokenizer.ggml.eot_token_id", tokens.len())?;
        let eom_id = opt_id(metadata, "tokenizer.ggml.eom_token_id", tokens.len())?;
        let unk_id = opt_id(metadata, "tokenizer.ggml.unknown_token_id", tokens.len())?;

        let (inner, encoding, strips_leading_space, default_add_bos) = match model {
            "gpt2" => {
                let pre = opt_str(metadata, "tokenizer.ggml.pre")?;
                let (family, known) = PreFamily::from_pre(pre);
                if !known {
                    tracing::warn!(
                        "GGUF tokenizer.ggml.pre = {:?} is not known here; using the GPT-2 split regex",
                        pre.unwrap_or_default()
                    );
                }
                let merges =
                    merges_from_strings(metadata, "tokenizer.ggml.merges")?.ok_or_else(|| {
                        TokenizerError::MissingKey {
                            key: "tokenizer.ggml.merges".into(),
                        }
                    })?;
                (
                    build_byte_level(&tokens, merges, family)?,
                    TokenEncoding::ByteLevel,
                    false,
                    false,
                )
            }
            "llama" => {
                let scores = match metadata.get("tokenizer.ggml.scores") {
                    Some(v) => Some(float_array(v, "tokenizer.ggml.scores", tokens.len())?),
                    None => None,
                };
                let merges = match merges_from_strings(metadata, "tokenizer.ggml.merges")? {
                    Some(m) => m,
                    None => {
                        let scores =
                            scores
                                .as_deref()
                                .ok_or_else(|| TokenizerError::MissingKey {
                                    key: "tokenizer.ggml.scores".into(),
                                })?;
                        merges_from_scores(&tokens, scores)
                    }
                };
                let add_space_prefix =
                    opt_bool(metadata, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
                let unk = unk_id.map(|i| tokens[i as usize].to_string());
                (
                    build_sentencepiece(&tokens, merges, unk, add_space_prefix)?,
                    TokenEncoding::SentencePiece,
                    add_space_prefix,
                    true,
                )
            }
            other => {
                return Err(TokenizerError::UnsupportedModel {
                    model: other.to_string(),
                })
            }
        };
        let mut inner = inner;
        if let Some(types) = &types {
            add_typed_tokens(&mut inner, &tokens, types)?;
        }

        let add_bos =
            opt_bool(metadata, "tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos);
        let add_eos = opt_bool(metadata, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let mut eos_ids = Vec::new();
        for id in [eos_id, eot_id, eom_id].into_iter().flatten() {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        let bos_token = bos_id.map(|i| tokens[i as usize].to_string());
        let eos_token = eos_id.map(|i| tokens[i as usize].to_string());
        Self::assemble(
            inner,
            encoding,
            strips_leading_space,
            bos_id,
            bos_token,
            eos_ids,
            eos_token,
            Some(add_bos),
            Some(add_eos),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        inner: tokenizers::Tokenizer,
        encoding: TokenEncoding,
        strips_leading_space: bool,
        bos_id: Option<u32>,
        bos_token: Option<String>,
        eos_ids: Vec<u32>,
        eos_token: Option<String>,
        add_bos: Option<bool>,
        add_eos: Option<bool>,
    ) -> Result<Self> {
        // Probe what the post-processor does on its own.
        let with = inner
            .encode_fast("a", true)
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        let without = inner
            .encode_fast("a", false)
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        let (with, without) = (with.get_ids(), without.get_ids());
        let extra = with.len() > without.len();
        let post_adds_bos = extra && bos_id.is_some() && with.first().copied() == bos_id;
        let post_adds_eos = extra
            && eos_token.is_some()
            && with
                .last()
                .is_some_and(|last| eos_ids.first() == Some(last));

        let (bytes, byte_offsets) = token_byte_table(&inner, encoding);
        Ok(Self {
            inner,
            encoding,
            bos_id,
            bos_token,
            eos_ids,
            eos_token,
            add_bos,
            add_eos,
            post_adds_bos,
            post_adds_eos,
            strips_leading_space,
            bytes,
            byte_offsets,
        })
    }

    /// Encodes text; with `add_special_tokens`, BOS/EOS are added as the
    /// tokenizer's configuration says. Special tokens in the text are
    /// always recognized.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        if !add_special_tokens {
            return Ok(ids);
        }
        if let Some(bos) = self.bos_id {
            match self.add_bos {
                Some(true) if !self.post_adds_bos => ids.insert(0, bos),
                Some(false) if self.post_adds_bos && ids.first() == Some(&bos) => {
                    ids.remove(0);
                }
                _ => {}
            }
        }
        if let Some(&eos) = self.eos_ids.first() {
            match self.add_eos {
                Some(true) if !self.post_adds_eos => ids.push(eos),
                Some(false) if self.post_adds_eos && ids.last() == Some(&eos) => {
                    ids.pop();
                }
                _ => {}
            }
        }
        Ok(ids)
    }

    /// Decodes ids to text, optionally dropping special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The vocabulary string of a token id (added tokens included).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary string (added tokens included).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The BOS token id, if the tokenizer has one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The ids that end generation: the EOS token first, then any others.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Adds an id that ends generation (e.g. from `generation_config.json`).
    pub fn add_eos_token_id(&mut self, id: u32) {
        if !self.eos_ids.contains(&id) {
            self.eos_ids.push(id);
        }
    }

    /// The BOS token string (for chat templates).
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The EOS token string (for chat templates).
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Whether `encode(.., true)` puts BOS first.
    pub fn adds_bos_token(&self) -> bool {
        self.bos_id.is_some() && self.add_bos.unwrap_or(self.post_adds_bos)
    }

    /// Whether a token id is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .get_added_vocabulary()
            .get_added_tokens_decoder()
            .get(&id)
            .is_some_and(|t| t.special)
    }

    /// How vocabulary strings map to bytes.
    pub fn token_encoding(&self) -> TokenEncoding {
        self.encoding
    }

    /// Whether `decode` drops one leading space from its output
    /// (SentencePiece with a space prefix): incremental detokenizers
    /// concatenating [`Tokenizer::token_bytes`] must do the same.
    pub fn strips_leading_space(&self) -> bool {
        self.strips_leading_space
    }

    /// The raw bytes a token stands for (empty for an unknown id); a token
    /// may hold part of a UTF-8 character.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.token_bytes_ref(id)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// The raw bytes a token stands for, borrowed; `None` for an unknown id.
    pub fn token_bytes_ref(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let start = *self.byte_offsets.get(i)?;
        let end = *self.byte_offsets.get(i + 1)?;
        self.bytes.get(start..end)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// What `tokenizer_config.json` says about special tokens.
#[derive(Debug, Default)]
struct ConfigFacts {
    bos_token: Option<String>,
    eos_token: Option<String>,
    add_bos_token: Option<bool>,
    add_eos_token: Option<bool>,
}

impl ConfigFacts {
    fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| TokenizerError::Config {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let bad = |field: &str| TokenizerError::Config {
            path: path.to_path_buf(),
            message: format!("field `{field}` has an unexpected type"),
        };
        let token = |field: &str| -> Result<Option<String>> {
            match value.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(serde_json::Value::Object(o)) => match o.get("content") {
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    _ => Err(bad(field)),
                },
                Some(_) => Err(bad(field)),
            }
        };
        let flag = |field: &str| -> Result<Option<bool>> {
            match value.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
                Some(_) => Err(bad(field)),
            }
        };
        Ok(Self {
            bos_token: token("bos_token")?,
            eos_token: token("eos_token")?,
            add_bos_token: flag("add_bos_token")?,
            add_eos_token: flag("add_eos_token")?,
        })
    }
}

/// The token encoding a (serialized) decoder implies.
fn encoding_from_decoder(decoder: &serde_json::Value) -> TokenEncoding {
    let mut types = Vec::new();
    collect_decoder_types(decoder, &mut types);
    if types.iter().any(|t| t == "ByteLevel") {
        TokenEncoding::ByteLevel
    } else if types
        .iter()
        .any(|t| t == "ByteFallback" || t == "Metaspace" || t == "Replace")
    {
        TokenEncoding::SentencePiece
    } else {
        TokenEncoding::Plain
    }
}

fn collect_decoder_types(decoder: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(t) = decoder.get("type").and_then(|t| t.as_str()) {
        out.push(t.to_string());
    }
    if let Some(list) = decoder.get("decoders").and_then(|d| d.as_array()) {
        for d in list {
            collect_decoder_types(d, out);
        }
    }
}

/// Whether a (serialized) decoder strips the leading space of its output.
fn decoder_strips_leading_space(decoder: &serde_json::Value) -> bool {
    match decoder.get("type").and_then(|t| t.as_str()) {
        Some("Strip") => {
            decoder.get("content").and_then(|c| c.as_str()) == Some(" ")
                && decoder.get("start").and_then(|s| s.as_u64()).unwrap_or(0) > 0
        }
        Some("Metaspace") => {
            let scheme = decoder.get("prepend_scheme").and_then(|s| s.as_str());
            let legacy = decoder.get("add_prefix_space").and_then(|s| s.as_bool());
            matches!(scheme, Some("always") | Some("first")) || legacy == Some(true)
        }
        Some("Sequence") => decoder
            .get("decoders")
            .and_then(|d| d.as_array())
            .is_some_and(|list| list.iter().any(decoder_strips_leading_space)),
        _ => false,
    }
}

/// GPT-2's byte → char table (`bytes_to_unicode`).
fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\0');
    }
    table
}

/// The inverse of [`byte_to_char_table`], indexed by code point (< 324).
fn char_to_byte_table() -> Vec<Option<u8>> {
    let mut inverse = vec![None; 324];
    for (b, c) in byte_to_char_table().iter().enumerate() {
        if let Some(slot) = inverse.get_mut(*c as usize) {
            *slot = u8::try_from(b).ok();
        }
    }
    inverse
}

/// Raw bytes of a byte-level token string; `None` if a char is outside the alphabet.
fn byte_level_bytes(token: &str, inverse: &[Option<u8>]) -> Option<Vec<u8>> {
    token
        .chars()
        .map(|c| inverse.get(c as usize).copied().flatten())
        .collect()
}

/// Raw bytes of a SentencePiece token string.
fn sentencepiece_bytes(token: &str) -> Vec<u8> {
    if let Some(b) = parse_byte_token(token) {
        return vec![b];
    }
    token.replace('\u{2581}', " ").into_bytes()
}

/// `<0xXX>` → the byte, as the `ByteFallback` decoder reads it.
fn parse_byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The concatenated raw bytes of every token and their offsets.
fn token_byte_table(
    inner: &tokenizers::Tokenizer,
    encoding: TokenEncoding,
) -> (Vec<u8>, Vec<usize>) {
    let n = inner.get_vocab_size(true);
    let added = inner.get_added_tokens_decoder();
    let inverse = char_to_byte_table();
    let max_id = added.keys().copied().max().map_or(0, |m| m as usize + 1);
    let n = n.max(max_id);
    let mut bytes = Vec::with_capacity(n * 4);
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0);
    for id in 0..n {
        let id32 = u32::try_from(id).unwrap_or(u32::MAX);
        if let Some(tok) = added.get(&id32) {
            bytes.extend_from_slice(tok.content.as_bytes());
        } else if let Some(tok) = inner.id_to_token(id32) {
            match encoding {
                TokenEncoding::ByteLevel => match byte_level_bytes(&tok, &inverse) {
                    Some(b) => bytes.extend_from_slice(&b),
                    None => bytes.extend_from_slice(tok.as_bytes()),
                },
                TokenEncoding::SentencePiece => bytes.extend_from_slice(&sentencepiece_bytes(&tok)),
                TokenEncoding::Plain => bytes.extend_from_slice(tok.as_bytes()),
            }
        }
        offsets.push(bytes.len());
    }
    (bytes, offsets)
}

/// The byte-level BPE pipeline of a `gpt2` GGUF.
fn build_byte_level(
    tokens: &[&str],
    merges: Vec<(String, String)>,
    family: PreFamily,
) -> Result<tokenizers::Tokenizer> {
    let vocab = vocab_map(tokens);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(family == PreFamily::Llama3)
        .build()
        .map_err(|e| TokenizerError::Build(format!("BPE model: {e}")))?;
    let mut tk = tokenizers::Tokenizer::new(ModelWrapper::BPE(bpe));
    let byte_level =
        |use_regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, use_regex));
    let split = |regex: &str| -> Result<PreTokenizerWrapper> {
        Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map(PreTokenizerWrapper::Split)
        .map_err(|e| TokenizerError::Build(format!("split regex: {e}")))
    };
    let pre = match family {
        PreFamily::Gpt2 => byte_level(true),
        PreFamily::DigitsThenGpt2 => {
            PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level(true),
            ]))
        }
        PreFamily::Llama3 => PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(vec![
            split(LLAMA3_REGEX)?,
            byte_level(false),
        ])),
        PreFamily::Qwen2 => PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(vec![
            split(QWEN2_REGEX)?,
            byte_level(false),
        ])),
    };
    if family == PreFamily::Qwen2 {
        tk.with_normalizer(Some(NormalizerWrapper::NFC(NFC)))
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
    }
    tk.with_pre_tokenizer(Some(pre));
    tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))));
    Ok(tk)
}

/// The SentencePiece-style BPE pipeline of a `llama` GGUF.
fn build_sentencepiece(
    tokens: &[&str],
    merges: Vec<(String, String)>,
    unk: Option<String>,
    add_space_prefix: bool,
) -> Result<tokenizers::Tokenizer> {
    let vocab = vocab_map(tokens);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| TokenizerError::Build(format!("BPE model: {e}")))?;
    let mut tk = tokenizers::Tokenizer::new(ModelWrapper::BPE(bpe));
    let mut norms = Vec::new();
    if add_space_prefix {
        norms.push(NormalizerWrapper::Prepend(Prepend::new("\u{2581}".into())));
    }
    norms.push(NormalizerWrapper::Replace(
        Replace::new(" ", "\u{2581}").map_err(|e| TokenizerError::Build(e.to_string()))?,
    ));
    tk.with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(
        norms,
    ))))
    .map_err(|e| TokenizerError::Build(e.to_string()))?;
    let mut decoders = vec![
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
        DecoderWrapper::Replace(
            Replace::new("\u{2581}", " ").map_err(|e| TokenizerError::Build(e.to_string()))?,
        ),
    ];
    if add_space_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tk.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
        decoders,
    ))));
    Ok(tk)
}

/// token → id; a repeated token keeps its last id (as a Python dict would).
fn vocab_map(tokens: &[&str]) -> Vocab {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert((*t).to_string(), i as u32);
    }
    vocab
}

/// Registers control tokens as special and user-defined tokens as plain added tokens.
fn add_typed_tokens(tk: &mut tokenizers::Tokenizer, tokens: &[&str], types: &[i64]) -> Result<()> {
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (tok, ty) in tokens.iter().zip(types) {
        match *ty {
            TOKEN_TYPE_CONTROL => {
                special.push(AddedToken::from((*tok).to_string(), true).normalized(false))
            }
            TOKEN_TYPE_USER_DEFINED => {
                user.push(AddedToken::from((*tok).to_string(), false).normalized(false))
            }
            _ => {}
        }
    }
    if !special.is_empty() {
        tk.add_special_tokens(special)
            .map_err(|e| TokenizerError::Build(format!("special tokens: {e}")))?;
    }
    if !user.is_empty() {
        tk.add_tokens(user)
            .map_err(|e| TokenizerError::Build(format!("user-defined tokens: {e}")))?;
    }
    Ok(())
}

/// Merges for a SentencePiece vocabulary without explicit merges, built
/// from the scores exactly as transformers' `GGUFTokenizerSkeleton` does:
/// every split of a token into two vocabulary pieces, ranked by the
/// token's score (ties: by the pieces' scores, then vocabulary order).
fn merges_from_scores(tokens: &[&str], scores: &[f64]) -> Vec<(String, String)> {
    // Python dict semantics: first position, last value.
    let mut score_of: HashMap<&str, f64> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    for (t, s) in tokens.iter().zip(scores) {
        if score_of.insert(t, *s).is_none() {
            order.push(t);
        }
    }
    let present: HashSet<&str> = tokens.iter().copied().collect();
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    let mut local: Vec<(&str, &str, f64)> = Vec::new();
    for merged in order {
        let score = score_of.get(merged).copied().unwrap_or(0.0);
        local.clear();
        // Python iterates over code points: split only at char boundaries.
        for (idx, _) in merged.char_indices().skip(1) {
            let (l, r) = merged.split_at(idx);
            if present.contains(l) && present.contains(r) {
                local.push((l, r, score));
            }
        }
        let key = |m: &(&str, &str, f64)| {
            (
                score_of.get(m.0).copied().unwrap_or(0.0),
                score_of.get(m.1).copied().unwrap_or(0.0),
            )
        };
        // sorted(..., key=(score_l, score_r), reverse=True) is stable: keep ties in order.
        local.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            kb.0.total_cmp(&ka.0).then(kb.1.total_cmp(&ka.1))
        });
        merges.extend_from_slice(&local);
    }
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

fn req<'a>(md: &'a BTreeMap<String, GgufValue>, key: &str) -> Result<&'a GgufValue> {
    md.get(key)
        .ok_or_else(|| TokenizerError::MissingKey { key: key.into() })
}

fn bad_key(key: &str, detail: impl Into<String>) -> TokenizerError {
    TokenizerError::BadKey {
        key: key.into(),
        detail: detail.into(),
    }
}

fn req_str<'a>(md: &'a BTreeMap<String, GgufValue>, key: &str) -> Result<&'a str> {
    req(md, key)?
        .as_str()
        .ok_or_else(|| bad_key(key, "expected a string"))
}

fn opt_str<'a>(md: &'a BTreeMap<String, GgufValue>, key: &str) -> Result<Option<&'a str>> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| bad_key(key, "expected a string")),
    }
}

fn opt_bool(md: &BTreeMap<String, GgufValue>, key: &str) -> Result<Option<bool>> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| bad_key(key, "expected a bool")),
    }
}

/// An optional token id, checked against the vocabulary size.
fn opt_id(md: &BTreeMap<String, GgufValue>, key: &str, n_tokens: usize) -> Result<Option<u32>> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    // llama.cpp writes -1 (as a signed value) for "none".
    if value_i64(v).is_some_and(|i| i < 0) {
        return Ok(None);
    }
    let id = v
        .as_u64()
        .ok_or_else(|| bad_key(key, "expected an integer token id"))?;
    if id as usize >= n_tokens {
        return Err(bad_key(
            key,
            format!("token id {id} is outside the vocabulary of {n_tokens} tokens"),
        ));
    }
    Ok(Some(id as u32))
}

fn str_array<'a>(md: &'a BTreeMap<String, GgufValue>, key: &str) -> Result<Vec<&'a str>> {
    let arr = req(md, key)?
        .as_array()
        .ok_or_else(|| bad_key(key, "expected an array of strings"))?;
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .ok_or_else(|| bad_key(key, format!("element {i} is not a string")))
        })
        .collect()
}

fn merges_from_strings(
    md: &BTreeMap<String, GgufValue>,
    key: &str,
) -> Result<Option<Vec<(String, String)>>> {
    if !md.contains_key(key) {
        return Ok(None);
    }
    let strings = str_array(md, key)?;
    strings
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(l, r)| (l.to_string(), r.to_string()))
                .ok_or_else(|| bad_key(key, format!("merge {i} ({m:?}) has no space")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn value_i64(v: &GgufValue) -> Option<i64> {
    match *v {
        GgufValue::I8(x) => Some(x.into()),
        GgufValue::I16(x) => Some(x.into()),
        GgufValue::I32(x) => Some(x.into()),
        GgufValue::I64(x) => Some(x),
        _ => v.as_u64().and_then(|u| i64::try_from(u).ok()),
    }
}

fn int_array(v: &GgufValue, key: &str, expect_len: usize) -> Result<Vec<i64>> {
    let arr = v
        .as_array()
        .ok_or_else(|| bad_key(key, "expected an array of integers"))?;
    if arr.len() != expect_len {
        return Err(bad_key(
            key,
            format!("{} entries for {expect_len} tokens", arr.len()),
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            value_i64(x).ok_or_else(|| bad_key(key, format!("element {i} is not an integer")))
        })
        .collect()
}

fn float_array(v: &GgufValue, key: &str, expect_len: usize) -> Result<Vec<f64>> {
    let arr = v
        .as_array()
        .ok_or_else(|| bad_key(key, "expected an array of numbers"))?;
    if arr.len() != expect_len {
        return Err(bad_key(
            key,
            format!("{} entries for {expect_len} tokens", arr.len()),
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64()
                .ok_or_else(|| bad_key(key, format!("element {i} is not a number")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_roundtrips() {
        let table = byte_to_char_table();
        let inverse = char_to_byte_table();
        for (b, c) in table.iter().enumerate() {
            assert_eq!(inverse[*c as usize], Some(b as u8));
        }
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn sentencepiece_token_bytes() {
        assert_eq!(sentencepiece_bytes("<0x0A>"), vec![b'\n']);
        assert_eq!(sentencepiece_bytes("▁hello"), b" hello".to_vec());
        assert_eq!(sentencepiece_bytes("<0x0>"), b"<0x0>".to_vec());
    }

    #[test]
    fn pre_families() {
        assert_eq!(
            PreFamily::from_pre(Some("smollm")),
            (PreFamily::DigitsThenGpt2, true)
        );
        assert_eq!(
            PreFamily::from_pre(Some("llama-bpe")),
            (PreFamily::Llama3, true)
        );
        assert_eq!(PreFamily::from_pre(Some("qwen2")), (PreFamily::Qwen2, true));
        assert_eq!(PreFamily::from_pre(None), (PreFamily::Gpt2, true));
        assert_eq!(
            PreFamily::from_pre(Some("unheard-of")),
            (PreFamily::Gpt2, false)
        );
    }

    #[test]
    fn merges_from_scores_ranks_by_merged_score() {
        let tokens = ["a", "b", "c", "ab", "bc", "abc"];
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -0.5];
        let merges = merges_from_scores(&tokens, &scores);
        let m: Vec<(&str, &str)> = merges
            .iter()
            .map(|(l, r)| (l.as_str(), r.as_str()))
            .collect();
        assert_eq!(m, vec![("a", "bc"), ("ab", "c"), ("a", "b"), ("b", "c")]);
    }
}

//! The decode roofline of a dense model: the bytes one decode step must read
//! (every weight once, every sequence's cached K/V once) and the FLOPs it must
//! do, and from them, given a card's measured bandwidth and GEMM rate, the
//! shortest time a step can take. Plain arithmetic: tested without a GPU.

use std::path::Path;

use factory_models::ModelConfig;

/// What one decode step (one new token for each of `batch` sequences) must move and compute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeStep {
    /// Weight bytes read: every projection, norm and the LM head once, plus
    /// `batch` embedding rows (the whole table only when it is also the LM head).
    pub weight_bytes: u64,
    /// K/V bytes read: each sequence's `context + 1` cached positions, every layer.
    pub kv_bytes: u64,
    /// FLOPs: 2 per weight per token for the products, plus QKᵀ and PV over the context.
    pub flops: f64,
}

impl DecodeStep {
    /// Bytes of the roofline: weights + KV (activations are left out; they are
    /// small beside these until batch sizes in the hundreds).
    pub fn bytes(&self) -> u64 {
        self.weight_bytes + self.kv_bytes
    }

    /// The roofline time in seconds: the larger of bytes over bandwidth and
    /// FLOPs over the GEMM rate (when one is known).
    pub fn floor_seconds(&self, bytes_per_s: f64, flops_per_s: Option<f64>) -> f64 {
        let mem = self.bytes() as f64 / bytes_per_s;
        let compute = flops_per_s.map_or(0.0, |r| self.flops / r);
        mem.max(compute)
    }
}

/// Elements of the weights a token passes through in one layer (projections only).
fn layer_matmul_params(c: &ModelConfig) -> u64 {
    let h = c.hidden_size as u64;
    let attn = h * c.q_dim() as u64 * 2 + h * c.kv_dim() as u64 * 2;
    attn + 3 * h * c.intermediate_size as u64
}

/// Elements of a layer's norm weights.
fn layer_norm_params(c: &ModelConfig) -> u64 {
    2 * c.hidden_size as u64 + if c.qk_norm { 2 * c.head_dim as u64 } else { 0 }
}

/// Every parameter of the model (embeddings, layers, final norm, untied LM head).
pub fn param_count(c: &ModelConfig) -> u64 {
    let (h, v) = (c.hidden_size as u64, c.vocab_size as u64);
    let head = if c.tie_word_embeddings { 0 } else { v * h };
    v * h + head + c.num_layers as u64 * (layer_matmul_params(c) + layer_norm_params(c)) + h
}

/// K/V bytes of one position over all layers (`elem_bytes` per element).
pub fn kv_bytes_per_token(c: &ModelConfig, elem_bytes: u64) -> u64 {
    c.num_layers as u64 * 2 * c.kv_dim() as u64 * elem_bytes
}

/// One decode step of `batch` sequences that each hold `context` cached
/// positions, with `elem_bytes`-byte weights and K/V (2 for bf16).
pub fn decode_step(c: &ModelConfig, batch: usize, context: usize, elem_bytes: u64) -> DecodeStep {
    let (h, v, b) = (c.hidden_size as u64, c.vocab_size as u64, batch as u64);
    let layers = c.num_layers as u64;
    let body = layers * (layer_matmul_params(c) + layer_norm_params(c)) + h;
    let lm_head = v * h;
    let embed_rows = if c.tie_word_embeddings { 0 } else { b * h };
    let weight_bytes = (body + lm_head + embed_rows) * elem_bytes;
    let kv_bytes = b * (context as u64 + 1) * kv_bytes_per_token(c, elem_bytes);
    let matmul_flops = 2.0 * (layers * layer_matmul_params(c) + lm_head) as f64 * b as f64;
    // QKᵀ and PV: 2 FLOPs each per head, dim and attended position.
    let attn_flops = 4.0 * layers as f64 * c.q_dim() as f64 * (context as f64 + 1.0) * b as f64;
    DecodeStep {
        weight_bytes,
        kv_bytes,
        flops: matmul_flops + attn_flops,
    }
}

/// The two ceilings `gpu_ceilings --json` measured, in bytes/s and FLOP/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceilings {
    /// Device-to-device copy bandwidth, bytes read + written per second.
    pub copy_bytes_per_s: f64,
    /// Streaming-read bandwidth (`read.gbps`), when measured.
    pub read_bytes_per_s: Option<f64>,
    /// The best bf16 GEMM rate measured, if any.
    pub gemm_flops_per_s: Option<f64>,
}

/// A ceilings file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CeilingsError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: no copy bandwidth (`copy.gbps_read_plus_write`) in it")]
    NoBandwidth { path: String },
}

/// Reads the JSON `gpu_ceilings --json` writes: `copy.gbps_read_plus_write`
/// (GB/s, 1e9), `read.gbps` and the largest `tflops` of its `gemm_bf16` rows.
pub fn read_ceilings(path: &Path) -> Result<Ceilings, CeilingsError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CeilingsError::Read {
        path: p.clone(),
        message: e.to_string(),
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| CeilingsError::Read {
        path: p.clone(),
        message: e.to_string(),
    })?;
    ceilings_from_json(&v).ok_or(CeilingsError::NoBandwidth { path: p })
}

/// [`read_ceilings`] on parsed JSON; `None` without a positive copy bandwidth.
pub fn ceilings_from_json(v: &serde_json::Value) -> Option<Ceilings> {
    let gbps = v
        .pointer("/copy/gbps_read_plus_write")
        .and_then(serde_json::Value::as_f64)
        .filter(|g| *g > 0.0)?;
    let mut best: Option<f64> = None;
    let mut visit = |row: &serde_json::Value| {
        if let Some(t) = row.get("tflops").and_then(serde_json::Value::as_f64) {
            if t > 0.0 && best.is_none_or(|b| t > b) {
                best = Some(t);
            }
        }
    };
    for key in ["gemm_bf16", "gemm"] {
        match v.get(key) {
            Some(serde_json::Value::Array(rows)) => rows.iter().for_each(&mut visit),
            Some(serde_json::Value::Object(o)) => o.values().for_each(&mut visit),
            _ => {}
        }
    }
    let read = v
        .pointer("/read/gbps")
        .and_then(serde_json::Value::as_f64)
        .filter(|g| *g > 0.0);
    Some(Ceilings {
        copy_bytes_per_s: gbps * 1e9,
        read_bytes_per_s: read.map(|g| g * 1e9),
        gemm_flops_per_s: best.map(|t| t * 1e12),
    })
}

/// Nearest-rank percentile of `v` (`p` in 0..=100); 0 for an empty slice.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_8b() -> ModelConfig {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("data/llama-3.1-8b-config.json");
        ModelConfig::from_hf_file(&path).expect("llama config")
    }

    #[test]
    fn llama_8b_batch_1_reads_its_weights_once_without_the_embedding_table() {
        let c = llama_8b();
        assert_eq!(param_count(&c), 8_030_261_248);
        let s = decode_step(&c, 1, 0, 2);
        // All parameters minus the untied embedding table plus one row of it.
        let embed = 128_256u64 * 4096;
        assert_eq!(s.weight_bytes, (8_030_261_248 - embed + 4096) * 2);
        // One position, 32 layers, K and V, 8 heads x 128, bf16: 128 KiB.
        assert_eq!(s.kv_bytes, 128 * 1024);
        // ~15 GB at 3.0 TB/s: ~5.0 ms.
        let t = s.floor_seconds(3.0e12, None);
        assert!((t - 5.0e-3).abs() < 0.05e-3, "{t}");
    }

    #[test]
    fn kv_grows_with_batch_and_context_and_compute_can_bind() {
        let c = llama_8b();
        let a = decode_step(&c, 64, 2047, 2);
        assert_eq!(a.kv_bytes, 64 * 2048 * 128 * 1024);
        let big = decode_step(&c, 256, 511, 2);
        // At batch 256 the products are ~3.9 TFLOP: at 100 TFLOP/s compute binds.
        let mem = big.bytes() as f64 / 3.0e12;
        assert!(big.floor_seconds(3.0e12, Some(100e12)) > mem);
        assert_eq!(big.floor_seconds(3.0e12, Some(1e18)), mem);
    }

    #[test]
    fn ceilings_json_gives_bandwidth_and_best_gemm_rate() {
        let v = serde_json::json!({
            "copy": {"gbps_read_plus_write": 3000.0},
            "read": {"gbps": 3100.0},
            "gemm_bf16": [{"tflops": 650.0}, {"tflops": 790.5}, {"tflops": 12.0}]
        });
        let c = ceilings_from_json(&v).expect("ceilings");
        assert_eq!(c.copy_bytes_per_s, 3.0e12);
        assert_eq!(c.gemm_flops_per_s, Some(790.5e12));
        assert_eq!(c.read_bytes_per_s, Some(3.1e12));
        assert!(ceilings_from_json(&serde_json::json!({"gemm": []})).is_none());
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 90.0), 5.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}

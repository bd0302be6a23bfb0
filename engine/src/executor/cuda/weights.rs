//! The model's weights on the device, bf16: uploaded from a loaded CPU model
//! (converted or dequantized row by row into pinned staging memory) or
//! initialised in place with random values (benchmarks without downloads).
//!
//! Layout per layer: one fused `[q | k | v]` projection `[q_dim + 2 kv_dim,
//! hidden]` (one GEMM, RoPE and the KV write read q/k/v inside its output),
//! one fused `[gate | up]` `[2 ff, hidden]`, and `[o]`, `[down]` as stored.

use std::sync::Arc;

use factory_kernels::cuda::cudarc::driver::{CudaEvent, PinnedHostSlice};
use factory_kernels::cuda::{CudaError, CudaSlice, CudaStream, UtilKernels};
use factory_kernels::cuda_twin::bf16;
use factory_models::tensor::Tensor;
use factory_models::{Model, ModelConfig};
use rayon::prelude::*;

/// bf16 elements of each pinned staging buffer (32 MiB).
const STAGING_ELEMS: usize = 16 << 20;

/// One decoder layer on the device.
#[derive(Debug)]
pub struct LayerDev {
    pub attn_norm: CudaSlice<bf16>,
    /// `[q_dim + 2 kv_dim, hidden]`.
    pub wqkv: CudaSlice<bf16>,
    /// `[q_dim + 2 kv_dim]` (zeros where a projection has no bias).
    pub bqkv: Option<CudaSlice<bf16>>,
    pub q_norm: Option<CudaSlice<bf16>>,
    pub k_norm: Option<CudaSlice<bf16>>,
    pub wo: CudaSlice<bf16>,
    pub ffn_norm: CudaSlice<bf16>,
    /// `[2 ff, hidden]`.
    pub w_gate_up: CudaSlice<bf16>,
    pub w_down: CudaSlice<bf16>,
}

/// All weights on the device.
#[derive(Debug)]
pub struct DeviceWeights {
    pub embed: CudaSlice<bf16>,
    /// `None` when tied to the embedding (uploaded once).
    pub lm_head: Option<CudaSlice<bf16>>,
    pub final_norm: CudaSlice<bf16>,
    pub layers: Vec<LayerDev>,
    /// Bytes on the device.
    pub bytes: u64,
}

impl DeviceWeights {
    /// The output projection `[vocab, hidden]`.
    pub fn lm_head(&self) -> &CudaSlice<bf16> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

fn qkv_rows(cfg: &ModelConfig) -> usize {
    cfg.q_dim() + 2 * cfg.kv_dim()
}

/// Copies host tensors to the device through two pinned staging buffers: one
/// is filled (dequantized on all cores) while the other's copy is in flight.
struct Uploader {
    stream: Arc<CudaStream>,
    staging: [PinnedHostSlice<bf16>; 2],
    /// Recorded after each buffer's last copy; waited on before refilling it.
    in_flight: [Option<CudaEvent>; 2],
    next: usize,
    bytes: u64,
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // Never free pinned memory a copy may still read (error paths included).
        let _ = self.stream.synchronize();
    }
}

impl Uploader {
    fn new(stream: Arc<CudaStream>, min_elems: usize) -> Result<Self, CudaError> {
        let len = STAGING_ELEMS.max(min_elems);
        let ctx = stream.context();
        // SAFETY: each buffer is written (fully, per chunk) before it is read.
        let staging = unsafe {
            [
                ctx.alloc_pinned::<bf16>(len)?,
                ctx.alloc_pinned::<bf16>(len)?,
            ]
        };
        Ok(Self {
            stream,
            staging,
            in_flight: [None, None],
            next: 0,
            bytes: 0,
        })
    }

    /// `tensors` stacked by rows (same column count) into one new device matrix.
    fn matrix(&mut self, tensors: &[&Tensor]) -> Result<CudaSlice<bf16>, CudaError> {
        let cols = tensors.first().map_or(0, |t| t.cols);
        let rows: usize = tensors.iter().map(|t| t.rows).sum();
        if tensors.iter().any(|t| t.cols != cols) {
            return Err(CudaError::Launch(
                "fused tensors differ in column count".into(),
            ));
        }
        // SAFETY: every element is written by the copies below before any read.
        let mut dst = unsafe { self.stream.alloc::<bf16>(rows * cols) }?;
        let chunk_rows = (self.staging[0].len() / cols.max(1)).max(1);
        let mut off = 0;
        for t in tensors {
            let m = t.matrix();
            let mut r0 = 0;
            while r0 < t.rows {
                let n = chunk_rows.min(t.rows - r0);
                let i = self.next;
                self.next ^= 1;
                if let Some(ev) = self.in_flight[i].take() {
                    ev.synchronize()?;
                }
                let stage = &mut self.staging[i].as_mut_slice()?[..n * cols];
                stage.par_chunks_mut(cols.max(1)).enumerate().for_each_init(
                    || vec![0f32; cols],
                    |row, (i, out)| {
                        m.dequantize_row(r0 + i, row);
                        for (o, v) in out.iter_mut().zip(row.iter()) {
                            *o = bf16::from_f32(*v);
                        }
                    },
                );
                let src = &self.staging[i].as_slice()?[..n * cols];
                let mut view = dst.slice_mut(off..off + n * cols);
                // Pinned memory passed as a plain slice: the copy is truly
                // asynchronous and cudarc records nothing, hence the event.
                self.stream.memcpy_htod(src, &mut view)?;
                self.in_flight[i] = Some(self.stream.record_event(None)?);
                off += n * cols;
                r0 += n;
            }
        }
        self.bytes += (rows * cols * 2) as u64;
        Ok(dst)
    }

    /// A small f32 vector (norm weights, biases) as bf16.
    fn vector(&mut self, v: &[f32]) -> Result<CudaSlice<bf16>, CudaError> {
        let h: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
        self.bytes += (h.len() * 2) as u64;
        Ok(self.stream.clone_htod(&h)?)
    }
}

impl DeviceWeights {
    /// Uploads `model`'s weights (any stored dtype) as bf16.
    pub fn upload(model: &Model, stream: &Arc<CudaStream>) -> Result<Self, CudaError> {
        let cfg = &model.config;
        let w = &model.weights;
        let mut up = Uploader::new(stream.clone(), cfg.hidden_size.max(cfg.intermediate_size))?;
        let embed = up.matrix(&[&w.embed])?;
        let tied = std::ptr::eq(w.embed.data().as_ptr(), w.lm_head.data().as_ptr())
            && w.embed.data().len() == w.lm_head.data().len();
        let lm_head = if tied {
            None
        } else {
            Some(up.matrix(&[&w.lm_head])?)
        };
        let final_norm = up.vector(&w.final_norm)?;
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let bqkv = if l.bq.is_some() || l.bk.is_some() || l.bv.is_some() {
                let mut b = Vec::with_capacity(qd + 2 * kvd);
                for (bias, len) in [(&l.bq, qd), (&l.bk, kvd), (&l.bv, kvd)] {
                    match bias {
                        Some(v) => b.extend_from_slice(v),
                        None => b.extend(std::iter::repeat_n(0.0, len)),
                    }
                }
                Some(up.vector(&b)?)
            } else {
                None
            };
            layers.push(LayerDev {
                attn_norm: up.vector(&l.attn_norm)?,
                wqkv: up.matrix(&[&l.wq, &l.wk, &l.wv])?,
                bqkv,
                q_norm: l.q_norm.as_deref().map(|v| up.vector(v)).transpose()?,
                k_norm: l.k_norm.as_deref().map(|v| up.vector(v)).transpose()?,
                wo: up.matrix(&[&l.wo])?,
                ffn_norm: up.vector(&l.ffn_norm)?,
                w_gate_up: up.matrix(&[&l.w_gate, &l.w_up])?,
                w_down: up.matrix(&[&l.w_down])?,
            });
        }
        stream.synchronize()?;
        Ok(Self {
            embed,
            lm_head,
            final_norm,
            layers,
            bytes: up.bytes,
        })
    }

    /// Random weights of `cfg`'s shape, initialised on the device: matrices
    /// uniform with standard deviation 0.02 (a common init), norms 1, biases 0.
    /// Each tensor has its own seed derived from `seed`; the output head is
    /// tied to the embedding when the config says so.
    pub fn random(
        cfg: &ModelConfig,
        seed: u64,
        stream: &Arc<CudaStream>,
        util: &UtilKernels,
    ) -> Result<Self, CudaError> {
        // Uniform on [-s, s) has standard deviation s / sqrt(3).
        let scale = 0.02 * 3f32.sqrt();
        let mut bytes = 0u64;
        let mut next = 0u64;
        let mut matrix = |rows: usize, cols: usize| -> Result<CudaSlice<bf16>, CudaError> {
            // SAFETY: the fill below writes every element.
            let mut t = unsafe { stream.alloc::<bf16>(rows * cols) }?;
            next += 1;
            util.fill_uniform(
                &mut t,
                seed ^ next.wrapping_mul(0xd1b5_4a32_d192_ed03),
                scale,
            )?;
            bytes += (rows * cols * 2) as u64;
            Ok(t)
        };
        let (h, ff) = (cfg.hidden_size, cfg.intermediate_size);
        let embed = matrix(cfg.vocab_size, h)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(matrix(cfg.vocab_size, h)?)
        };
        let mut mats = Vec::with_capacity(cfg.num_layers);
        for _ in 0..cfg.num_layers {
            mats.push((
                matrix(qkv_rows(cfg), h)?,
                matrix(h, cfg.q_dim())?,
                matrix(2 * ff, h)?,
                matrix(h, ff)?,
            ));
        }
        let mut constant = |len: usize, value: f32| -> Result<CudaSlice<bf16>, CudaError> {
            // SAFETY: the fill below writes every element.
            let mut t = unsafe { stream.alloc::<bf16>(len) }?;
            util.fill(&mut t, value)?;
            bytes += (len * 2) as u64;
            Ok(t)
        };
        let final_norm = constant(h, 1.0)?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for (wqkv, wo, w_gate_up, w_down) in mats {
            layers.push(LayerDev {
                attn_norm: constant(h, 1.0)?,
                wqkv,
                bqkv: if cfg.attention_bias {
                    Some(constant(qkv_rows(cfg), 0.0)?)
                } else {
                    None
                },
                q_norm: if cfg.qk_norm {
                    Some(constant(cfg.head_dim, 1.0)?)
                } else {
                    None
                },
                k_norm: if cfg.qk_norm {
                    Some(constant(cfg.head_dim, 1.0)?)
                } else {
                    None
                },
                wo,
                ffn_norm: constant(h, 1.0)?,
                w_gate_up,
                w_down,
            });
        }
        stream.synchronize()?;
        Ok(Self {
            embed,
            lm_head,
            final_norm,
            layers,
            bytes,
        })
    }
}

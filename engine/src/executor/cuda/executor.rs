//! The CUDA executor: models/src/forward.rs on the GPU.
//!
//! f32 residual stream, bf16 matmul inputs and outputs (cuBLASLt, f32
//! accumulate), the kernels of kernels/cuda for everything else. A step is:
//! embedding gather, then per layer add+RMSNorm, fused QKV GEMM (+ bias),
//! RoPE (+ q/k norm), K/V write, attention (the decode kernel when every
//! sequence brings one token, the prefill kernel - which serves mixed batches -
//! otherwise), o GEMM, add+RMSNorm, fused gate/up GEMM, SiLU-mul, down GEMM;
//! finally the rows that want logits are gathered, normed and projected to
//! f32 logits, which are copied to the host.

use std::time::Instant;

use factory_kernels::cpu::RopeStyle;
use factory_kernels::cuda::gemm::Gemm;
use factory_kernels::cuda::ops::{
    DecodeAttention, DecodeScratch, PrefillAttention, RopeShape, ATTENTION_HEAD_DIMS,
    MAX_DECODE_PARTITION,
};
use factory_kernels::cuda::{
    default_cache_dir, CudaDevice, CudaError, CudaKernels, CudaSlice, ModuleCache, Nvrtc,
    UtilKernels,
};
use factory_kernels::cuda_twin::bf16;
use factory_models::{Model, ModelConfig};

use super::options::{kv_bytes_per_block, plan_kv_blocks, CudaExecutorOptions, CudaStartup};
use super::plan::{plan_step, StepLimits, StepPlan};
use super::weights::DeviceWeights;
use crate::executor::{Batch, Capabilities, Executor, ExecutorError, StepOutput};

/// Device memory kept free beyond the KV cache: cuBLASLt workspaces, the
/// driver's own allocations, fragmentation.
const RESERVE_BYTES: u64 = 512 << 20;

fn dev(e: impl std::fmt::Display) -> ExecutorError {
    ExecutorError::Backend(format!("CUDA: {e}"))
}

/// Whether the kernels can run `cfg` (attention is instantiated for a few head sizes).
pub fn check_supported(cfg: &ModelConfig) -> Result<(), ExecutorError> {
    if !ATTENTION_HEAD_DIMS.contains(&cfg.head_dim) {
        return Err(ExecutorError::Backend(format!(
            "head_dim {} is not supported by the CUDA attention kernels (supported: {:?})",
            cfg.head_dim, ATTENTION_HEAD_DIMS
        )));
    }
    if cfg.num_kv_heads == 0 || !cfg.num_heads.is_multiple_of(cfg.num_kv_heads) {
        return Err(ExecutorError::Backend(
            "num_heads must be a multiple of num_kv_heads".into(),
        ));
    }
    let rot = cfg.rope_inv_freq().len();
    if 2 * rot > cfg.head_dim {
        return Err(ExecutorError::Backend(format!(
            "{rot} RoPE frequencies do not fit head_dim {}",
            cfg.head_dim
        )));
    }
    Ok(())
}

/// Activation buffers for `max_tokens` tokens and `max_seqs` sequences.
#[derive(Debug)]
struct Buffers {
    residual: CudaSlice<f32>,
    normed: CudaSlice<bf16>,
    qkv: CudaSlice<bf16>,
    attn: CudaSlice<bf16>,
    delta: CudaSlice<bf16>,
    gate_up: CudaSlice<bf16>,
    act: CudaSlice<bf16>,
    sel_residual: CudaSlice<f32>,
    sel_delta: CudaSlice<bf16>,
    sel_normed: CudaSlice<bf16>,
    logits: CudaSlice<f32>,
    tokens: CudaSlice<u32>,
    /// Every i32 of a step's metadata, uploaded at once (see [`MetaLayout`]).
    meta: CudaSlice<i32>,
    part_out: CudaSlice<f32>,
    part_max: CudaSlice<f32>,
    part_sum: CudaSlice<f32>,
}

/// Where each part of a step's i32 metadata sits inside `Buffers::meta`.
#[derive(Debug, Clone, Copy)]
struct MetaLayout {
    positions: usize,
    slots: usize,
    block_tables: usize,
    q_starts: usize,
    q_lens: usize,
    context_lens: usize,
    logit_rows: usize,
    end: usize,
}

impl MetaLayout {
    fn new(tokens: usize, seqs: usize, table_len: usize, rows: usize) -> Self {
        let positions = 0;
        let slots = positions + tokens;
        let block_tables = slots + tokens;
        let q_starts = block_tables + table_len;
        let q_lens = q_starts + seqs;
        let context_lens = q_lens + seqs;
        let logit_rows = context_lens + seqs;
        Self {
            positions,
            slots,
            block_tables,
            q_starts,
            q_lens,
            context_lens,
            logit_rows,
            end: logit_rows + rows,
        }
    }

    fn pack(&self, p: &StepPlan) -> Vec<i32> {
        let mut v = Vec::with_capacity(self.end);
        for part in [
            &p.positions,
            &p.slots,
            &p.block_tables,
            &p.q_starts,
            &p.q_lens,
            &p.context_lens,
            &p.logit_rows,
        ] {
            v.extend_from_slice(part);
        }
        v
    }
}

/// Runs whole mixed batches on one CUDA GPU.
#[derive(Debug)]
pub struct CudaExecutor {
    device: CudaDevice,
    kernels: CudaKernels,
    util: UtilKernels,
    gemm: Gemm,
    config: ModelConfig,
    weights: DeviceWeights,
    inv_freq: CudaSlice<f32>,
    rope_interleaved: bool,
    rope_attention_factor: f32,
    /// `[layers][2][num_blocks * block_size * kv_dim]` bf16.
    kv: CudaSlice<bf16>,
    bufs: Buffers,
    limits: StepLimits,
    /// Decode split-K scratch capacity in partitions x sequences (floats / (heads x head_dim)).
    scratch_rows: usize,
    caps: Capabilities,
    startup: CudaStartup,
}

/// What the weights come from.
enum Source<'a> {
    Model(&'a Model),
    Random(u64),
}

impl CudaExecutor {
    /// Uploads a loaded model's weights (dequantized/converted to bf16) to the device.
    pub fn from_model(model: &Model, opts: &CudaExecutorOptions) -> Result<Self, ExecutorError> {
        Self::build(
            model.config.clone(),
            model.rope.inv_freq.clone(),
            model.rope.style,
            model.rope.attention_factor,
            Source::Model(model),
            opts,
        )
    }

    /// Random weights of `config`'s shape initialised in place on the device
    /// (benchmarks without downloads).
    pub fn random(
        config: ModelConfig,
        seed: u64,
        opts: &CudaExecutorOptions,
    ) -> Result<Self, ExecutorError> {
        let inv_freq = config.rope_inv_freq();
        let style = config.rope_style;
        Self::build(config, inv_freq, style, 1.0, Source::Random(seed), opts)
    }

    /// What start-up found and how long it took.
    pub fn startup(&self) -> &CudaStartup {
        &self.startup
    }

    /// The device this runs on.
    pub fn device(&self) -> &CudaDevice {
        &self.device
    }

    fn build(
        config: ModelConfig,
        inv_freq: Vec<f32>,
        style: RopeStyle,
        attention_factor: f32,
        source: Source<'_>,
        opts: &CudaExecutorOptions,
    ) -> Result<Self, ExecutorError> {
        opts.validate()?;
        check_supported(&config)?;
        let t0 = Instant::now();
        let device = CudaDevice::open(opts.device).map_err(dev)?;
        let nvrtc = Nvrtc::load().map_err(dev)?;
        let cache = ModuleCache::new(default_cache_dir());
        let kernels = CudaKernels::load(&device, &nvrtc, &cache).map_err(dev)?;
        let util = UtilKernels::load(&device, &nvrtc, &cache).map_err(dev)?;
        let gemm = Gemm::new(device.stream.clone()).map_err(dev)?;
        let stream = device.stream.clone();
        let weights = match source {
            Source::Model(m) => DeviceWeights::upload(m, &stream),
            Source::Random(seed) => DeviceWeights::random(&config, seed, &stream, &util),
        }
        .map_err(dev)?;
        let weight_seconds = t0.elapsed().as_secs_f64();
        tracing::info!(
            "CUDA: {} weights: {:.2} GiB bf16 in {weight_seconds:.2} s",
            device.name,
            weights.bytes as f64 / (1u64 << 30) as f64
        );

        let max_model_len = opts.model_len(&config);
        let (t, s) = (
            opts.max_batch_tokens,
            opts.max_batch_seqs.min(opts.max_batch_tokens),
        );
        let (h, qd, kvd, ff) = (
            config.hidden_size,
            config.q_dim(),
            config.kv_dim(),
            config.intermediate_size,
        );
        let width = max_model_len.div_ceil(opts.block_size);
        let layout = MetaLayout::new(t, s, s * width, s);
        // Decode split-K scratch for `s` sequences at the longest context with
        // the largest partition: any smaller request falls back to that size.
        let scratch_rows = s * max_model_len.div_ceil(MAX_DECODE_PARTITION);
        let heads_hd = config.num_heads * config.head_dim;
        let bufs = (|| -> Result<Buffers, CudaError> {
            Ok(Buffers {
                residual: stream.alloc_zeros(t * h)?,
                normed: stream.alloc_zeros(t * h)?,
                qkv: stream.alloc_zeros(t * (qd + 2 * kvd))?,
                attn: stream.alloc_zeros(t * qd)?,
                delta: stream.alloc_zeros(t * h)?,
                gate_up: stream.alloc_zeros(t * 2 * ff)?,
                act: stream.alloc_zeros(t * ff)?,
                sel_residual: stream.alloc_zeros(s * h)?,
                sel_delta: stream.alloc_zeros(s * h)?,
                sel_normed: stream.alloc_zeros(s * h)?,
                logits: stream.alloc_zeros(s * config.vocab_size)?,
                tokens: stream.alloc_zeros(t)?,
                meta: stream.alloc_zeros(layout.end)?,
                part_out: stream.alloc_zeros(scratch_rows * heads_hd)?,
                part_max: stream.alloc_zeros(scratch_rows * config.num_heads)?,
                part_sum: stream.alloc_zeros(scratch_rows * config.num_heads)?,
            })
        })()
        .map_err(dev)?;
        let inv_freq_dev = stream.clone_htod(&inv_freq).map_err(dev)?;
        stream.synchronize().map_err(dev)?;

        let (free, _total) = device.ctx.mem_get_info().map_err(dev)?;
        let per_block = kv_bytes_per_block(&config, opts.block_size);
        let num_blocks = plan_kv_blocks(
            free as u64,
            opts.gpu_memory_utilization,
            RESERVE_BYTES,
            per_block,
            opts.block_size,
            max_model_len,
            opts.max_batch_seqs,
        )?;
        let kv_elems = config.num_layers * 2 * num_blocks * opts.block_size * kvd;
        let kv = stream.alloc_zeros::<bf16>(kv_elems).map_err(dev)?;
        let kv_bytes = num_blocks as u64 * per_block;
        tracing::info!(
            "CUDA KV cache: {num_blocks} blocks of {} tokens = {} tokens, {:.2} GiB ({} MiB free before)",
            opts.block_size,
            num_blocks * opts.block_size,
            kv_bytes as f64 / (1u64 << 30) as f64,
            free >> 20
        );
        let graph_capture_seconds = if opts.cuda_graphs {
            tracing::warn!("CUDA graphs are not implemented yet: running decode steps eagerly");
            None
        } else {
            None
        };
        stream.synchronize().map_err(dev)?;
        let load_seconds = t0.elapsed().as_secs_f64();
        let limits = StepLimits {
            vocab_size: config.vocab_size,
            max_model_len,
            block_size: opts.block_size,
            num_blocks,
            max_seqs: s,
            max_tokens: t,
        };
        let caps = Capabilities {
            name: "cuda",
            max_batch_seqs: s,
            max_batch_tokens: t,
            mix_prefill_and_decode: true,
            token_buckets: Vec::new(),
            block_size: opts.block_size,
            num_kv_blocks: num_blocks,
            vocab_size: config.vocab_size,
            max_model_len,
        };
        let startup = CudaStartup {
            device_name: device.name.clone(),
            weight_bytes: weights.bytes,
            load_seconds,
            kv_blocks: num_blocks,
            kv_bytes,
            graph_capture_seconds,
        };
        tracing::info!("CUDA executor ready in {load_seconds:.2} s");
        Ok(Self {
            device,
            kernels,
            util,
            gemm,
            config,
            weights,
            inv_freq: inv_freq_dev,
            rope_interleaved: style == RopeStyle::Interleaved,
            rope_attention_factor: attention_factor,
            kv,
            bufs,
            limits,
            scratch_rows,
            caps,
            startup,
        })
    }

    /// Runs the forward pass for a validated plan; returns the logits rows.
    fn forward(&mut self, p: &StepPlan) -> Result<Vec<f32>, CudaError> {
        let cfg = &self.config;
        let (h, qd, kvd, ff, hd) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
            cfg.head_dim,
        );
        let qkv_w = qd + 2 * kvd;
        let eps = cfg.rms_norm_eps;
        let (t, seqs, rows) = (p.tokens.len(), p.num_seqs(), p.logit_rows.len());
        let width = p.table_width;
        let stream = self.device.stream.clone();
        let k = &self.kernels;
        let b = &mut self.bufs;

        // Metadata: two uploads (cudarc waits for host-slice copies to finish).
        let lay = MetaLayout::new(t, seqs, seqs * width, rows);
        stream.memcpy_htod(&p.tokens, &mut b.tokens.slice_mut(0..t))?;
        let packed = lay.pack(p);
        stream.memcpy_htod(&packed, &mut b.meta.slice_mut(0..lay.end))?;
        let meta = &b.meta;
        let positions = meta.slice(lay.positions..lay.slots);
        let slots = meta.slice(lay.slots..lay.block_tables);
        let block_tables = meta.slice(lay.block_tables..lay.q_starts);
        let q_starts = meta.slice(lay.q_starts..lay.q_lens);
        let q_lens = meta.slice(lay.q_lens..lay.context_lens);
        let context_lens = meta.slice(lay.context_lens..lay.logit_rows);
        let logit_rows = meta.slice(lay.logit_rows..lay.end);

        k.embedding_gather(
            &self.weights.embed,
            cfg.vocab_size,
            h,
            &b.tokens.slice(0..t),
            &mut b.residual.slice_mut(0..t * h),
        )?;

        let scale = 1.0 / (hd as f32).sqrt();
        let plane = self.limits.num_blocks * self.limits.block_size * kvd;
        let rope = RopeShape {
            tokens: t,
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: hd,
            q_offset: 0,
            q_stride: qkv_w,
            k_offset: qd,
            k_stride: qkv_w,
            rot_half: self.inv_freq.len(),
            interleaved: self.rope_interleaved,
            attention_factor: self.rope_attention_factor,
            eps,
        };
        let decode = p.all_decode().then(|| {
            let mut a = DecodeAttention {
                heads: cfg.num_heads,
                kv_heads: cfg.num_kv_heads,
                head_dim: hd,
                block_size: self.limits.block_size,
                max_blocks: width,
                scale,
                partition_size: DecodeAttention::choose_partition_size(
                    cfg.num_heads,
                    cfg.num_kv_heads,
                    seqs,
                    p.max_context,
                    self.device.sm_count,
                ),
            };
            if a.scratch_len(seqs, p.max_context) > self.scratch_rows * cfg.num_heads * hd {
                a.partition_size = MAX_DECODE_PARTITION;
            }
            a
        });
        let prefill = PrefillAttention {
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: hd,
            block_size: self.limits.block_size,
            max_blocks: width,
            scale,
        };

        for (li, lw) in self.weights.layers.iter().enumerate() {
            let mut residual = b.residual.slice_mut(0..t * h);
            let mut normed = b.normed.slice_mut(0..t * h);
            let delta = b.delta.slice(0..t * h);
            let prev = (li > 0).then_some(&delta as &dyn factory_kernels::cuda::DevicePtrDyn<bf16>);
            k.add_rms_norm(&mut residual, prev, &lw.attn_norm, eps, &mut normed)?;
            let mut qkv = b.qkv.slice_mut(0..t * qkv_w);
            self.gemm
                .linear_bf16(&normed, &lw.wqkv, &mut qkv, t, qkv_w, h)?;
            if let Some(bias) = &lw.bqkv {
                self.util.bias_add(&mut qkv, bias, t, qkv_w)?;
            }
            k.rope_qk(
                &mut qkv,
                &positions,
                &self.inv_freq,
                lw.q_norm.as_ref().map(|w| w as _),
                lw.k_norm.as_ref().map(|w| w as _),
                &rope,
            )?;
            let qkv = b.qkv.slice(0..t * qkv_w);
            let base = li * 2 * plane;
            {
                let mut layer_kv = self.kv.slice_mut(base..base + 2 * plane);
                let (mut kc, mut vc) = layer_kv.split_at_mut(plane);
                k.write_kv(
                    &qkv.slice(qd..),
                    &qkv.slice(qd + kvd..),
                    qkv_w,
                    qkv_w,
                    kvd,
                    &slots,
                    &mut kc,
                    &mut vc,
                )?;
            }
            let kc = self.kv.slice(base..base + plane);
            let vc = self.kv.slice(base + plane..base + 2 * plane);
            let mut attn = b.attn.slice_mut(0..t * qd);
            match &decode {
                Some(a) => {
                    let n = seqs * cfg.num_heads * a.partitions(p.max_context);
                    let mut scratch = DecodeScratch {
                        part_out: b.part_out.slice_mut(0..n * hd),
                        part_max: b.part_max.slice_mut(0..n),
                        part_sum: b.part_sum.slice_mut(0..n),
                    };
                    k.paged_attention_decode(
                        &qkv,
                        qkv_w,
                        &kc,
                        &vc,
                        &block_tables,
                        &context_lens,
                        p.max_context,
                        a,
                        Some(&mut scratch),
                        &mut attn,
                    )?;
                }
                None => k.paged_attention_prefill(
                    &qkv,
                    qkv_w,
                    &kc,
                    &vc,
                    &block_tables,
                    &q_starts,
                    &q_lens,
                    &context_lens,
                    p.max_q_len,
                    t,
                    &prefill,
                    &mut attn,
                )?,
            }
            let mut delta = b.delta.slice_mut(0..t * h);
            self.gemm.linear_bf16(&attn, &lw.wo, &mut delta, t, h, qd)?;
            let delta = b.delta.slice(0..t * h);
            k.add_rms_norm(&mut residual, Some(&delta), &lw.ffn_norm, eps, &mut normed)?;
            let mut gate_up = b.gate_up.slice_mut(0..t * 2 * ff);
            self.gemm
                .linear_bf16(&normed, &lw.w_gate_up, &mut gate_up, t, 2 * ff, h)?;
            let gate_up = b.gate_up.slice(0..t * 2 * ff);
            let mut act = b.act.slice_mut(0..t * ff);
            k.silu_mul(&gate_up, &gate_up.slice(ff..), t, ff, 2 * ff, &mut act)?;
            let mut delta = b.delta.slice_mut(0..t * h);
            self.gemm
                .linear_bf16(&act, &lw.w_down, &mut delta, t, h, ff)?;
        }

        if rows == 0 {
            stream.synchronize()?;
            return Ok(Vec::new());
        }
        // The final norm and the head only for rows that want logits.
        self.util.gather_rows_f32(
            &b.residual.slice(0..t * h),
            &logit_rows,
            h,
            &mut b.sel_residual.slice_mut(0..rows * h),
        )?;
        self.util.gather_rows_bf16(
            &b.delta.slice(0..t * h),
            &logit_rows,
            h,
            &mut b.sel_delta.slice_mut(0..rows * h),
        )?;
        k.add_rms_norm(
            &mut b.sel_residual.slice_mut(0..rows * h),
            Some(&b.sel_delta.slice(0..rows * h)),
            &self.weights.final_norm,
            eps,
            &mut b.sel_normed.slice_mut(0..rows * h),
        )?;
        let vocab = cfg.vocab_size;
        let mut logits = b.logits.slice_mut(0..rows * vocab);
        self.gemm.linear_bf16_f32(
            &b.sel_normed.slice(0..rows * h),
            self.weights.lm_head(),
            &mut logits,
            rows,
            vocab,
            h,
        )?;
        let logits = b.logits.slice(0..rows * vocab);
        let mut host = vec![0f32; logits.len()];
        stream.memcpy_dtoh(&logits, &mut host)?;
        stream.synchronize()?;
        Ok(host)
    }
}

impl Executor for CudaExecutor {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn execute(&mut self, batch: &Batch<'_>) -> Result<StepOutput, ExecutorError> {
        let plan = plan_step(batch, &self.limits)?;
        let vocab = self.config.vocab_size;
        if plan.tokens.is_empty() {
            return Ok(StepOutput {
                logits: Vec::new(),
                rows: plan.rows,
                vocab_size: vocab,
            });
        }
        self.device.ctx.bind_to_thread().map_err(dev)?;
        let logits = self.forward(&plan).map_err(dev)?;
        Ok(StepOutput {
            logits,
            rows: plan.rows,
            vocab_size: vocab,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parts_are_packed_back_to_back() {
        let p = StepPlan {
            tokens: vec![5, 6, 7],
            positions: vec![0, 1, 4],
            slots: vec![10, 11, 20],
            block_tables: vec![2, 0, 5, 0],
            table_width: 2,
            q_starts: vec![0, 2],
            q_lens: vec![2, 1],
            context_lens: vec![2, 5],
            max_q_len: 2,
            max_context: 5,
            logit_rows: vec![2],
            rows: vec![None, Some(0)],
        };
        let lay = MetaLayout::new(3, 2, 4, 1);
        let v = lay.pack(&p);
        assert_eq!(v.len(), lay.end);
        assert_eq!(&v[lay.slots..lay.block_tables], [10, 11, 20]);
        assert_eq!(&v[lay.block_tables..lay.q_starts], [2, 0, 5, 0]);
        assert_eq!(&v[lay.context_lens..lay.logit_rows], [2, 5]);
        assert_eq!(&v[lay.logit_rows..], [2]);
    }

    #[test]
    fn unsupported_shapes_are_refused_before_touching_a_device() {
        let mut cfg = crate::executor::cuda::options::tests::tiny_config();
        let e = check_supported(&cfg).unwrap_err().to_string();
        assert!(e.contains("head_dim 8 is not supported"), "{e}");
        cfg.head_dim = 64;
        assert!(check_supported(&cfg).is_ok());
        // And CudaExecutor::random says so without opening a device.
        cfg.head_dim = 16;
        let e = CudaExecutor::random(cfg, 1, &CudaExecutorOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("head_dim 16"), "{e}");
    }

    /// Without a driver or a GPU, building an executor is an error, not a panic.
    #[test]
    fn no_gpu_is_a_clear_error() {
        let mut cfg = crate::executor::cuda::options::tests::tiny_config();
        cfg.head_dim = 64;
        cfg.hidden_size = 256;
        match CudaExecutor::random(cfg, 1, &CudaExecutorOptions::default()) {
            Ok(e) => eprintln!("a GPU is present: {}", e.startup().device_name),
            Err(e) => {
                let m = e.to_string();
                assert!(
                    m.contains("CUDA driver library not found")
                        || m.contains("no CUDA device")
                        || m.contains("NVRTC")
                        || m.contains("cuBLASLt"),
                    "{m}"
                );
            }
        }
    }
}

//! Launchers for the kernels in kernels/cuda/*.cu.
//!
//! Each launcher checks the sizes it can see (buffer lengths against the shapes)
//! so a wrong shape is an error, not an out-of-bounds access; contents it cannot
//! see (token ids, block tables, slots) are the caller's to validate, as the CPU
//! forward pass does. Shapes and semantics are those of the CPU twins in
//! [`crate::cuda_twin`]. Buffers are anything cudarc can take a device pointer
//! of (`CudaSlice`, `CudaView`, `CudaViewMut`); everything runs on the device's
//! stream, asynchronously.

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use half::bf16;

use super::device::CudaDevice;
use super::module_cache::ModuleCache;
use super::nvrtc::{CompileOptions, Nvrtc};
use super::CudaError;
use crate::cuda_sources::{self as src, KernelSource};
use crate::cuda_twin::sampling::SampleParams;

// SAFETY: SampleParams is #[repr(C)], plain old data, laid out as the kernel's struct.
unsafe impl DeviceRepr for SampleParams {}

/// Head dimensions the attention kernels are instantiated for.
pub const ATTENTION_HEAD_DIMS: [usize; 2] = [64, 128];
/// Largest partition of the decode kernel (its scores live in shared memory).
pub const MAX_DECODE_PARTITION: usize = 512;
const DECODE_THREADS: u32 = 128;
const PREFILL_THREADS: u32 = 128;
const SAMPLE_THREADS: u32 = 512;
/// Shared memory any block may use without opting in.
const DEFAULT_SHARED: usize = 48 * 1024;

/// Query heads one attention block handles for a GQA group of `group` heads.
fn heads_per_block(group: usize) -> usize {
    group.clamp(1, 8).next_power_of_two()
}

/// Rows (query token x head) of one prefill block, as instantiated in the source.
const PREFILL_ROWS: usize = 64;

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), CudaError> {
    if ok {
        Ok(())
    } else {
        Err(CudaError::Launch(what()))
    }
}

fn dim(v: usize, what: &str) -> Result<u32, CudaError> {
    u32::try_from(v).map_err(|_| CudaError::Launch(format!("{what} = {v} does not fit a grid")))
}

fn int(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Launch(format!("{what} = {v} exceeds i32")))
}

/// Shapes of one decode-attention launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeAttention {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    /// Columns of the block-table matrix.
    pub max_blocks: usize,
    pub scale: f32,
    /// Positions per partition (split-K); at most [`MAX_DECODE_PARTITION`].
    pub partition_size: usize,
}

impl DecodeAttention {
    /// Partitions needed for contexts up to `max_context`.
    pub fn partitions(&self, max_context: usize) -> usize {
        max_context.div_ceil(self.partition_size.max(1)).max(1)
    }

    /// Floats of split-K scratch for `seqs` sequences (`part_out`; `part_max` and
    /// `part_sum` need `scratch_len / head_dim` each).
    pub fn scratch_len(&self, seqs: usize, max_context: usize) -> usize {
        seqs * self.heads * self.partitions(max_context) * self.head_dim
    }

    /// A partition size that gives about two blocks per SM: one partition when
    /// the batch alone fills the GPU or the context is short, more otherwise.
    pub fn choose_partition_size(
        heads: usize,
        kv_heads: usize,
        seqs: usize,
        max_context: usize,
        sm_count: u32,
    ) -> usize {
        let group = heads / kv_heads.max(1);
        let base = seqs * kv_heads * group.div_ceil(heads_per_block(group));
        let want = (2 * sm_count as usize).div_ceil(base.max(1)).max(1);
        if want == 1 || max_context <= 128 {
            return MAX_DECODE_PARTITION.min(max_context.next_multiple_of(64).max(64));
        }
        max_context
            .div_ceil(want)
            .next_multiple_of(64)
            .clamp(128, MAX_DECODE_PARTITION)
    }
}

/// Split-K scratch of the decode kernel.
#[derive(Debug)]
pub struct DecodeScratch<P, S> {
    /// `[seqs, heads, partitions, head_dim]` f32.
    pub part_out: P,
    /// `[seqs, heads, partitions]` f32 each.
    pub part_max: S,
    pub part_sum: S,
}

/// Shapes of one prefill-attention launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefillAttention {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub max_blocks: usize,
    pub scale: f32,
}

/// Shapes of one RoPE launch; q and k sit at element offsets inside one buffer
/// (e.g. a fused QKV projection), rows `q_stride` / `k_stride` apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeShape {
    pub tokens: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub q_offset: usize,
    pub q_stride: usize,
    pub k_offset: usize,
    pub k_stride: usize,
    /// Length of the inverse-frequency table (`rotary_dim / 2`).
    pub rot_half: usize,
    pub interleaved: bool,
    pub attention_factor: f32,
    pub eps: f32,
}

/// Every kernel, compiled for one device and ready to launch on its stream.
#[derive(Debug)]
pub struct CudaKernels {
    stream: Arc<CudaStream>,
    embedding: CudaFunction,
    add_rms_norm: CudaFunction,
    rope: CudaFunction,
    silu_mul: CudaFunction,
    write_kv: CudaFunction,
    copy_blocks: CudaFunction,
    /// Indexed by (head-dim index, log2 of heads per block).
    decode: Vec<Vec<CudaFunction>>,
    decode_reduce: Vec<CudaFunction>,
    prefill: Vec<Vec<CudaFunction>>,
    sample: CudaFunction,
    penalties: CudaFunction,
}

impl CudaKernels {
    /// Compiles (or reads from `cache`) every kernel for `device` and loads them.
    pub fn load(
        device: &CudaDevice,
        nvrtc: &Nvrtc,
        cache: &ModuleCache,
    ) -> Result<Self, CudaError> {
        let opts = CompileOptions::default();
        let module = |s: &KernelSource| -> Result<_, CudaError> {
            let cubin = cache.get_or_compile(nvrtc, s, device.arch, &opts)?;
            Ok(device.ctx.load_module(Ptx::from_binary(cubin))?)
        };
        let embedding = module(&src::EMBEDDING)?;
        let norm = module(&src::RMS_NORM)?;
        let rope = module(&src::ROPE)?;
        let act = module(&src::ACTIVATION)?;
        let kv = module(&src::KV_CACHE)?;
        let dec = module(&src::ATTENTION_DECODE)?;
        let pre = module(&src::ATTENTION_PREFILL)?;
        let samp = module(&src::SAMPLING)?;
        let mut decode = Vec::new();
        let mut prefill = Vec::new();
        let mut decode_reduce = Vec::new();
        for d in ATTENTION_HEAD_DIMS {
            let gs = [1, 2, 4, 8];
            decode.push(
                gs.iter()
                    .map(|g| dec.load_function(&format!("paged_attention_decode_d{d}_g{g}")))
                    .collect::<Result<Vec<_>, _>>()?,
            );
            prefill.push(
                gs.iter()
                    .map(|g| pre.load_function(&format!("paged_attention_prefill_d{d}_g{g}")))
                    .collect::<Result<Vec<_>, _>>()?,
            );
            decode_reduce.push(dec.load_function(&format!("paged_attention_decode_reduce_d{d}"))?);
        }
        Ok(Self {
            stream: device.stream.clone(),
            embedding: embedding.load_function("embedding_gather_bf16")?,
            add_rms_norm: norm.load_function("add_rms_norm_bf16")?,
            rope: rope.load_function("rope_qk_bf16")?,
            silu_mul: act.load_function("silu_mul_bf16")?,
            write_kv: kv.load_function("write_kv_bf16")?,
            copy_blocks: kv.load_function("copy_blocks_bf16")?,
            decode,
            decode_reduce,
            prefill,
            sample: samp.load_function("sample_tokens_f32")?,
            penalties: samp.load_function("apply_penalties_f32")?,
        })
    }

    /// The stream every launch goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `out[t] = table[tokens[t]]` as f32 (`[vocab, hidden]` bf16 table).
    pub fn embedding_gather(
        &self,
        table: &impl DevicePtr<bf16>,
        vocab: usize,
        hidden: usize,
        tokens: &impl DevicePtr<u32>,
        out: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        let n = tokens.len();
        check(table.len() >= vocab * hidden, || {
            format!("embedding table {} < {vocab} x {hidden}", table.len())
        })?;
        check(out.len() >= n * hidden, || {
            format!("embedding out {} < {n} x {hidden}", out.len())
        })?;
        if n == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (t, _g1) = table.device_ptr(s);
        let (k, _g2) = tokens.device_ptr(s);
        let (o, _g3) = out.device_ptr_mut(s);
        let (hidden_i, vocab_i) = (int(hidden, "hidden")?, int(vocab, "vocab")?);
        let cfg = LaunchConfig {
            grid_dim: (dim(n, "tokens")?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.embedding);
        b.arg(&t).arg(&k).arg(&o).arg(&hidden_i).arg(&vocab_i);
        // SAFETY: argument types and order match the kernel; sizes checked above.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// `residual += delta` (when given), `out = rmsnorm(residual) * weight`, per
    /// row of `weight.len()` elements.
    pub fn add_rms_norm(
        &self,
        residual: &mut impl DevicePtrMut<f32>,
        delta: Option<&dyn DevicePtrDyn<bf16>>,
        weight: &impl DevicePtr<bf16>,
        eps: f32,
        out: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        let d = weight.len();
        check(d > 0 && residual.len().is_multiple_of(d), || {
            format!("residual {} is not rows of {d}", residual.len())
        })?;
        let rows = residual.len() / d;
        check(out.len() >= rows * d, || {
            format!("norm out {} < {rows} x {d}", out.len())
        })?;
        if let Some(dl) = delta {
            check(dl.len_dyn() >= rows * d, || {
                format!("delta {} < {rows} x {d}", dl.len_dyn())
            })?;
        }
        if rows == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (r, _g1) = residual.device_ptr_mut(s);
        let dp = delta.map_or(0, |dl| dl.raw_ptr(s));
        let (w, _g2) = weight.device_ptr(s);
        let (o, _g3) = out.device_ptr_mut(s);
        let d_i = int(d, "hidden")?;
        let threads = (d / 4).next_multiple_of(32).clamp(32, 1024) as u32;
        let cfg = LaunchConfig {
            grid_dim: (dim(rows, "rows")?, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.add_rms_norm);
        b.arg(&r).arg(&dp).arg(&w).arg(&o).arg(&d_i).arg(&eps);
        // SAFETY: argument types and order match the kernel; sizes checked above.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// RoPE (with optional per-head q/k RMSNorm) in place on q and k inside `qk`.
    pub fn rope_qk(
        &self,
        qk: &mut impl DevicePtrMut<bf16>,
        positions: &impl DevicePtr<i32>,
        inv_freq: &impl DevicePtr<f32>,
        q_norm: Option<&dyn DevicePtrDyn<bf16>>,
        k_norm: Option<&dyn DevicePtrDyn<bf16>>,
        p: &RopeShape,
    ) -> Result<(), CudaError> {
        let hd = p.head_dim;
        check(hd.is_multiple_of(2) && hd <= 256, || {
            format!("head_dim {hd}: even and at most 256")
        })?;
        check(2 * p.rot_half <= hd && inv_freq.len() >= p.rot_half, || {
            format!(
                "rot_half {} with head_dim {hd} and {} frequencies",
                p.rot_half,
                inv_freq.len()
            )
        })?;
        check(positions.len() >= p.tokens, || {
            "fewer positions than tokens".into()
        })?;
        if p.tokens == 0 {
            return Ok(());
        }
        let last = p.tokens - 1;
        let q_end = p.q_offset + last * p.q_stride + p.heads * hd;
        let k_end = p.k_offset + last * p.k_stride + p.kv_heads * hd;
        check(q_end <= qk.len() && k_end <= qk.len(), || {
            format!("q/k reach {q_end}/{k_end} > {}", qk.len())
        })?;
        for (n, what) in [(q_norm, "q_norm"), (k_norm, "k_norm")] {
            if let Some(n) = n {
                check(n.len_dyn() >= hd, || {
                    format!("{what} shorter than head_dim")
                })?;
            }
        }
        let s = &self.stream;
        let (base, _g1) = qk.device_ptr_mut(s);
        let q = base + (p.q_offset * 2) as u64;
        let k = base + (p.k_offset * 2) as u64;
        let (pos, _g2) = positions.device_ptr(s);
        let (f, _g3) = inv_freq.device_ptr(s);
        let qn = q_norm.map_or(0, |n| n.raw_ptr(s));
        let kn = k_norm.map_or(0, |n| n.raw_ptr(s));
        let ints = [
            int(p.heads, "heads")?,
            int(p.kv_heads, "kv_heads")?,
            int(hd, "head_dim")?,
            int(p.rot_half, "rot_half")?,
            int(p.q_stride, "q_stride")?,
            int(p.k_stride, "k_stride")?,
            i32::from(p.interleaved),
        ];
        let cfg = LaunchConfig {
            grid_dim: (dim(p.tokens, "tokens")?, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.rope);
        b.arg(&q).arg(&k).arg(&pos).arg(&f).arg(&qn).arg(&kn);
        for v in &ints {
            b.arg(v);
        }
        b.arg(&p.attention_factor).arg(&p.eps);
        // SAFETY: argument types and order match the kernel; sizes checked above.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// `out[r, i] = silu(gate[r, i]) * up[r, i]`, input rows `in_stride` apart.
    pub fn silu_mul(
        &self,
        gate: &impl DevicePtr<bf16>,
        up: &impl DevicePtr<bf16>,
        rows: usize,
        ff: usize,
        in_stride: usize,
        out: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        if rows == 0 || ff == 0 {
            return Ok(());
        }
        let need = (rows - 1) * in_stride + ff;
        check(gate.len() >= need && up.len() >= need, || {
            format!("gate/up shorter than {need}")
        })?;
        check(out.len() >= rows * ff, || {
            format!("silu out {} < {rows} x {ff}", out.len())
        })?;
        let s = &self.stream;
        let (g, _g1) = gate.device_ptr(s);
        let (u, _g2) = up.device_ptr(s);
        let (o, _g3) = out.device_ptr_mut(s);
        let (ff_i, st_i) = (int(ff, "ff")?, int(in_stride, "in_stride")?);
        let cfg = LaunchConfig {
            grid_dim: (dim(ff.div_ceil(8 * 256), "ff")?, dim(rows, "rows")?, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.silu_mul);
        b.arg(&g).arg(&u).arg(&o).arg(&ff_i).arg(&st_i);
        // SAFETY: argument types and order match the kernel; sizes checked above.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// Stores token `t`'s K and V rows (`kv_dim` elements, rows `k_stride` /
    /// `v_stride` apart) at cache slot `slots[t]`; negative slots are skipped.
    #[allow(clippy::too_many_arguments)]
    pub fn write_kv(
        &self,
        k: &impl DevicePtr<bf16>,
        v: &impl DevicePtr<bf16>,
        k_stride: usize,
        v_stride: usize,
        kv_dim: usize,
        slots: &impl DevicePtr<i32>,
        k_cache: &mut impl DevicePtrMut<bf16>,
        v_cache: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        let n = slots.len();
        if n == 0 {
            return Ok(());
        }
        check(
            k.len() >= (n - 1) * k_stride + kv_dim && v.len() >= (n - 1) * v_stride + kv_dim,
            || format!("k/v shorter than {n} rows of {kv_dim}"),
        )?;
        check(
            k_cache.len() == v_cache.len() && k_cache.len().is_multiple_of(kv_dim.max(1)),
            || "k_cache and v_cache must be whole slots of the same size".into(),
        )?;
        let s = &self.stream;
        let (kp, _g1) = k.device_ptr(s);
        let (vp, _g2) = v.device_ptr(s);
        let (sp, _g3) = slots.device_ptr(s);
        let num_slots = int(k_cache.len() / kv_dim.max(1), "slots")?;
        let (kc, _g4) = k_cache.device_ptr_mut(s);
        let (vc, _g5) = v_cache.device_ptr_mut(s);
        let ints = [
            int(kv_dim, "kv_dim")?,
            int(k_stride, "k_stride")?,
            int(v_stride, "v_stride")?,
            num_slots,
        ];
        let cfg = LaunchConfig {
            grid_dim: (dim(n, "tokens")?, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.write_kv);
        b.arg(&kp).arg(&vp).arg(&kc).arg(&vc).arg(&sp);
        for v in &ints {
            b.arg(v);
        }
        // SAFETY: argument types and order match the kernel; sizes checked above,
        // slots outside the cache are skipped by the kernel.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// Copies block `pairs[2i]` to block `pairs[2i + 1]` in every plane of
    /// `plane_elems` elements of `cache` (`block_elems` per block).
    pub fn copy_blocks(
        &self,
        cache: &mut impl DevicePtrMut<bf16>,
        pairs: &impl DevicePtr<i32>,
        plane_elems: usize,
        block_elems: usize,
    ) -> Result<(), CudaError> {
        check(pairs.len().is_multiple_of(2), || {
            "pairs must hold (src, dst) pairs".into()
        })?;
        check(
            plane_elems > 0
                && block_elems > 0
                && cache.len().is_multiple_of(plane_elems)
                && plane_elems.is_multiple_of(block_elems),
            || {
                format!(
                    "cache {} is not planes of {plane_elems} = blocks of {block_elems}",
                    cache.len()
                )
            },
        )?;
        let (np, planes) = (pairs.len() / 2, cache.len() / plane_elems);
        if np == 0 || planes == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (c, _g1) = cache.device_ptr_mut(s);
        let (p, _g2) = pairs.device_ptr(s);
        let plane = plane_elems as i64;
        let (be, nb) = (
            int(block_elems, "block_elems")?,
            int(plane_elems / block_elems, "blocks")?,
        );
        let cfg = LaunchConfig {
            grid_dim: (dim(np, "pairs")?, dim(planes, "planes")?, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.copy_blocks);
        b.arg(&c).arg(&p).arg(&plane).arg(&be).arg(&nb);
        // SAFETY: argument types and order match the kernel; out-of-range block
        // ids are skipped by the kernel.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    fn attention_fn(
        table: &[Vec<CudaFunction>],
        head_dim: usize,
        group: usize,
    ) -> Result<&CudaFunction, CudaError> {
        let d = ATTENTION_HEAD_DIMS
            .iter()
            .position(|&x| x == head_dim)
            .ok_or_else(|| {
                CudaError::Launch(format!(
                    "head_dim {head_dim} not in {ATTENTION_HEAD_DIMS:?}"
                ))
            })?;
        let g = heads_per_block(group).trailing_zeros() as usize;
        Ok(&table[d][g])
    }

    /// Decode attention for `context_lens.len()` sequences, one query row each
    /// (`q` rows `q_stride` apart). With more than one partition for
    /// `max_context` (the largest context length, known on the host), `scratch`
    /// receives the partials and a reduce kernel writes `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention_decode<P: DevicePtrMut<f32>, S: DevicePtrMut<f32>>(
        &self,
        q: &impl DevicePtr<bf16>,
        q_stride: usize,
        k_cache: &impl DevicePtr<bf16>,
        v_cache: &impl DevicePtr<bf16>,
        block_tables: &impl DevicePtr<i32>,
        context_lens: &impl DevicePtr<i32>,
        max_context: usize,
        a: &DecodeAttention,
        scratch: Option<&mut DecodeScratch<P, S>>,
        out: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        let seqs = context_lens.len();
        if seqs == 0 {
            return Ok(());
        }
        let hd = a.head_dim;
        check(a.kv_heads > 0 && a.heads.is_multiple_of(a.kv_heads), || {
            "heads must be a multiple of kv_heads".into()
        })?;
        check(
            (1..=MAX_DECODE_PARTITION).contains(&a.partition_size),
            || {
                format!(
                    "partition_size {} outside 1..={MAX_DECODE_PARTITION}",
                    a.partition_size
                )
            },
        )?;
        check(q.len() >= (seqs - 1) * q_stride + a.heads * hd, || {
            "q shorter than its rows".into()
        })?;
        check(out.len() >= seqs * a.heads * hd, || {
            "out shorter than seqs x heads x head_dim".into()
        })?;
        check(block_tables.len() >= seqs * a.max_blocks, || {
            "block tables shorter than seqs x max_blocks".into()
        })?;
        check(a.max_blocks * a.block_size >= max_context, || {
            "max_blocks cannot cover max_context".into()
        })?;
        check(
            k_cache.len() == v_cache.len()
                && k_cache
                    .len()
                    .is_multiple_of((a.block_size * a.kv_heads * hd).max(1)),
            || "k/v caches must be whole blocks of the same size".into(),
        )?;
        let group = a.heads / a.kv_heads;
        let gp = heads_per_block(group);
        let f = Self::attention_fn(&self.decode, hd, group)?;
        let parts = a.partitions(max_context);
        let smem = 4 * (2 * gp * hd + gp * a.partition_size + 2 * gp);
        check(smem <= DEFAULT_SHARED, || {
            format!("decode shared memory {smem} B too large")
        })?;
        let s = &self.stream;
        let (qp, _g1) = q.device_ptr(s);
        let (kc, _g2) = k_cache.device_ptr(s);
        let (vc, _g3) = v_cache.device_ptr(s);
        let (bt, _g4) = block_tables.device_ptr(s);
        let (cl, _g5) = context_lens.device_ptr(s);
        let (o, _g6) = out.device_ptr_mut(s);
        let mut guards = Vec::new();
        let (po, pm, ps) = if parts > 1 {
            let sc = scratch.ok_or_else(|| {
                CudaError::Launch(format!("{parts} partitions need split-K scratch"))
            })?;
            let n = seqs * a.heads * parts;
            check(
                sc.part_out.len() >= n * hd && sc.part_max.len() >= n && sc.part_sum.len() >= n,
                || format!("split-K scratch too small for {n} partials"),
            )?;
            let (po, g1) = sc.part_out.device_ptr_mut(s);
            let (pm, g2) = sc.part_max.device_ptr_mut(s);
            let (ps, g3) = sc.part_sum.device_ptr_mut(s);
            guards.extend([g1, g2, g3]);
            (po, pm, ps)
        } else {
            (0, 0, 0)
        };
        let ints = [
            int(a.heads, "heads")?,
            int(a.kv_heads, "kv_heads")?,
            int(a.block_size, "block_size")?,
            int(a.partition_size, "partition_size")?,
        ];
        let q_stride_i = int(q_stride, "q_stride")?;
        let max_blocks_i = int(a.max_blocks, "max_blocks")?;
        let cfg = LaunchConfig {
            grid_dim: (
                dim(a.kv_heads * group.div_ceil(gp), "kv blocks")?,
                dim(seqs, "seqs")?,
                dim(parts, "partitions")?,
            ),
            block_dim: (DECODE_THREADS, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let mut b = s.launch_builder(f);
        b.arg(&qp)
            .arg(&q_stride_i)
            .arg(&kc)
            .arg(&vc)
            .arg(&bt)
            .arg(&max_blocks_i)
            .arg(&cl);
        b.arg(&o).arg(&po).arg(&pm).arg(&ps);
        for v in &ints {
            b.arg(v);
        }
        b.arg(&a.scale);
        // SAFETY: argument types and order match the kernel; sizes checked above;
        // block-table contents are the caller's to validate.
        unsafe { b.launch(cfg) }?;
        if parts > 1 {
            let d = ATTENTION_HEAD_DIMS
                .iter()
                .position(|&x| x == hd)
                .unwrap_or(0);
            let (heads_i, parts_i) = (int(a.heads, "heads")?, int(parts, "partitions")?);
            let psize = int(a.partition_size, "partition_size")?;
            let cfg = LaunchConfig {
                grid_dim: (dim(a.heads, "heads")?, dim(seqs, "seqs")?, 1),
                block_dim: (hd as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = s.launch_builder(&self.decode_reduce[d]);
            b.arg(&po)
                .arg(&pm)
                .arg(&ps)
                .arg(&cl)
                .arg(&o)
                .arg(&heads_i)
                .arg(&parts_i)
                .arg(&psize);
            // SAFETY: as above; the scratch was sized for `parts` partitions.
            unsafe { b.launch(cfg) }?;
        }
        drop(guards);
        Ok(())
    }

    /// Causal prefill attention for a batch of variable-length chunks (rows of
    /// sequence `s`: `q_starts[s] .. + q_lens[s]`); `max_q_len` is the longest chunk.
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention_prefill(
        &self,
        q: &impl DevicePtr<bf16>,
        q_stride: usize,
        k_cache: &impl DevicePtr<bf16>,
        v_cache: &impl DevicePtr<bf16>,
        block_tables: &impl DevicePtr<i32>,
        q_starts: &impl DevicePtr<i32>,
        q_lens: &impl DevicePtr<i32>,
        context_lens: &impl DevicePtr<i32>,
        max_q_len: usize,
        total_tokens: usize,
        a: &PrefillAttention,
        out: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        let seqs = context_lens.len();
        if seqs == 0 || max_q_len == 0 {
            return Ok(());
        }
        let hd = a.head_dim;
        check(a.kv_heads > 0 && a.heads.is_multiple_of(a.kv_heads), || {
            "heads must be a multiple of kv_heads".into()
        })?;
        check(q_starts.len() >= seqs && q_lens.len() >= seqs, || {
            "q_starts/q_lens shorter than seqs".into()
        })?;
        check(
            total_tokens > 0 && q.len() >= (total_tokens - 1) * q_stride + a.heads * hd,
            || "q shorter than its rows".into(),
        )?;
        check(out.len() >= total_tokens * a.heads * hd, || {
            "out shorter than tokens x heads x head_dim".into()
        })?;
        check(block_tables.len() >= seqs * a.max_blocks, || {
            "block tables shorter than seqs x max_blocks".into()
        })?;
        let group = a.heads / a.kv_heads;
        let gp = heads_per_block(group);
        let f = Self::attention_fn(&self.prefill, hd, group)?;
        let tok_per_block = PREFILL_ROWS / gp;
        let s = &self.stream;
        let (qp, _g1) = q.device_ptr(s);
        let (kc, _g2) = k_cache.device_ptr(s);
        let (vc, _g3) = v_cache.device_ptr(s);
        let (bt, _g4) = block_tables.device_ptr(s);
        let (qs, _g5) = q_starts.device_ptr(s);
        let (ql, _g6) = q_lens.device_ptr(s);
        let (cl, _g7) = context_lens.device_ptr(s);
        let (o, _g8) = out.device_ptr_mut(s);
        let ints = [
            int(a.heads, "heads")?,
            int(a.kv_heads, "kv_heads")?,
            int(a.block_size, "block_size")?,
        ];
        let (q_stride_i, max_blocks_i) =
            (int(q_stride, "q_stride")?, int(a.max_blocks, "max_blocks")?);
        let cfg = LaunchConfig {
            grid_dim: (
                dim(max_q_len.div_ceil(tok_per_block), "query tiles")?,
                dim(seqs, "seqs")?,
                dim(a.kv_heads * group.div_ceil(gp), "kv blocks")?,
            ),
            block_dim: (PREFILL_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(f);
        b.arg(&qp)
            .arg(&q_stride_i)
            .arg(&kc)
            .arg(&vc)
            .arg(&bt)
            .arg(&max_blocks_i);
        b.arg(&qs).arg(&ql).arg(&cl).arg(&o);
        for v in &ints {
            b.arg(v);
        }
        b.arg(&a.scale);
        // SAFETY: argument types and order match the kernel; sizes checked above;
        // per-sequence metadata and block tables are the caller's to validate.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// Applies repetition / presence / frequency penalties in place to `logits`
    /// (`[rows, vocab]`); row `r`'s (token, count) entries are
    /// `offsets[r] .. offsets[r + 1]`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_penalties(
        &self,
        logits: &mut impl DevicePtrMut<f32>,
        vocab: usize,
        offsets: &impl DevicePtr<i32>,
        tokens: &impl DevicePtr<u32>,
        counts: &impl DevicePtr<u32>,
        repetition: &impl DevicePtr<f32>,
        presence: &impl DevicePtr<f32>,
        frequency: &impl DevicePtr<f32>,
    ) -> Result<(), CudaError> {
        check(vocab > 0 && logits.len().is_multiple_of(vocab), || {
            "logits are not rows of vocab".into()
        })?;
        let rows = logits.len() / vocab;
        check(offsets.len() == rows + 1, || {
            format!("offsets {} != rows + 1 = {}", offsets.len(), rows + 1)
        })?;
        check(tokens.len() == counts.len(), || {
            "tokens and counts differ in length".into()
        })?;
        check(
            repetition.len() >= rows && presence.len() >= rows && frequency.len() >= rows,
            || "one penalty value per row needed".into(),
        )?;
        if rows == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (l, _g1) = logits.device_ptr_mut(s);
        let (of, _g2) = offsets.device_ptr(s);
        let (t, _g3) = tokens.device_ptr(s);
        let (c, _g4) = counts.device_ptr(s);
        let (r, _g5) = repetition.device_ptr(s);
        let (p, _g6) = presence.device_ptr(s);
        let (f, _g7) = frequency.device_ptr(s);
        let vocab_i = int(vocab, "vocab")?;
        let cfg = LaunchConfig {
            grid_dim: (dim(rows, "rows")?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.penalties);
        b.arg(&l)
            .arg(&vocab_i)
            .arg(&of)
            .arg(&t)
            .arg(&c)
            .arg(&r)
            .arg(&p)
            .arg(&f);
        // SAFETY: argument types and order match the kernel; sizes checked above;
        // offsets must be non-decreasing within tokens.len() (the caller builds them).
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// Samples one token per row of `logits` (`[rows, vocab]`) into `tokens`.
    pub fn sample(
        &self,
        logits: &impl DevicePtr<f32>,
        vocab: usize,
        params: &impl DevicePtr<SampleParams>,
        tokens: &mut impl DevicePtrMut<u32>,
    ) -> Result<(), CudaError> {
        check(vocab > 0 && logits.len().is_multiple_of(vocab), || {
            "logits are not rows of vocab".into()
        })?;
        let rows = logits.len() / vocab;
        check(params.len() >= rows && tokens.len() >= rows, || {
            "one params / token slot per row needed".into()
        })?;
        if rows == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (l, _g1) = logits.device_ptr(s);
        let (p, _g2) = params.device_ptr(s);
        let (t, _g3) = tokens.device_ptr_mut(s);
        let vocab_i = int(vocab, "vocab")?;
        let cfg = LaunchConfig {
            grid_dim: (dim(rows, "rows")?, 1, 1),
            block_dim: (SAMPLE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.sample);
        b.arg(&l).arg(&vocab_i).arg(&p).arg(&t);
        // SAFETY: argument types and order match the kernel; sizes checked above.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}

/// An optional read-only buffer behind `dyn`: its length and raw device pointer.
pub trait DevicePtrDyn<T> {
    /// Elements in the buffer.
    fn len_dyn(&self) -> usize;
    /// The device address (reads are ordered on `stream` by cudarc's events).
    fn raw_ptr(&self, stream: &CudaStream) -> u64;
}

impl<T, B: DevicePtr<T>> DevicePtrDyn<T> for B {
    fn len_dyn(&self) -> usize {
        self.len()
    }
    fn raw_ptr(&self, stream: &CudaStream) -> u64 {
        let (p, _guard) = self.device_ptr(stream);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_sizes_fill_the_gpu_and_respect_shared_memory() {
        // One sequence, 8 KV heads, long context: split to ~2 blocks per SM.
        let p = DecodeAttention::choose_partition_size(32, 8, 1, 4096, 132);
        assert_eq!(p, 128);
        // A batch that fills the GPU alone: the largest partition.
        assert_eq!(
            DecodeAttention::choose_partition_size(32, 8, 256, 4096, 132),
            512
        );
        // Short contexts: one partition covering them.
        assert_eq!(
            DecodeAttention::choose_partition_size(32, 8, 1, 100, 132),
            128
        );
        for ctx in [1usize, 63, 64, 65, 511, 512, 513, 100_000] {
            for seqs in [1usize, 3, 64, 1024] {
                let p = DecodeAttention::choose_partition_size(9, 3, seqs, ctx, 132);
                assert!((1..=MAX_DECODE_PARTITION).contains(&p), "{p}");
                let a = DecodeAttention {
                    heads: 9,
                    kv_heads: 3,
                    head_dim: 64,
                    block_size: 16,
                    max_blocks: ctx.div_ceil(16),
                    scale: 1.0,
                    partition_size: p,
                };
                assert!(a.partitions(ctx) * p >= ctx);
                assert_eq!(a.scratch_len(seqs, ctx), seqs * 9 * a.partitions(ctx) * 64);
            }
        }
    }

    #[test]
    fn gqa_groups_map_to_instantiated_head_counts() {
        let got: Vec<usize> = [1, 2, 3, 4, 5, 7, 8, 16]
            .iter()
            .map(|&g| heads_per_block(g))
            .collect();
        assert_eq!(got, [1, 2, 4, 4, 8, 8, 8, 8]);
    }
}

//! SIMD kernels, chosen once at run time.
//!
//! [`Kernels::get`] detects the CPU on first use (`is_x86_feature_detected!`)
//! and caches the best table of function pointers in a `OnceLock`; every
//! later call is a load. The scalar table is the portable fallback (and the
//! only one off x86_64). The free functions in `quant`, `matmul` and
//! `attention` stay the scalar references the SIMD versions are tested
//! against.
//!
//! The environment variable `FACTORY_KERNELS` (`scalar`, `avx2`, `avx512`)
//! caps the choice, for benchmarks and debugging; a level the CPU lacks falls
//! back to the best one it has.
//!
//! Length conventions (all kernels): a dot reads the shorter of its two
//! operands (whole blocks for quantized rows), like the scalar `zip`s do;
//! nothing reads out of bounds whatever the lengths.

use std::sync::OnceLock;

use super::quant::{BlockQ8, QK};
use super::weight::WeightDType;

/// Σ over whole blocks (`ymm` or `zmm` accumulators) of `v·d + e`, where `|blk, xv| body` gives `(v, d, e)`
/// for one weight block and its activations (a slice of `$xb` items), two
/// blocks per step into two accumulators so the adds pipeline. `e` is a
/// scalar extra term (`-0.0` when there is none: adding it folds away).
/// Evaluates to `(vector sum, scalar sum)`.
#[cfg(target_arch = "x86_64")]
macro_rules! block_sum {
    (ymm, $row:expr, $x:expr, $bb:expr, $xb:expr, |$blk:ident, $xv:ident| $body:expr) => {
        block_sum!(@sum _mm256_setzero_ps(), _mm256_fmadd_ps, _mm256_add_ps,
                   $row, $x, $bb, $xb, |$blk, $xv| $body)
    };
    (zmm, $row:expr, $x:expr, $bb:expr, $xb:expr, |$blk:ident, $xv:ident| $body:expr) => {
        block_sum!(@sum _mm512_setzero_ps(), _mm512_fmadd_ps, _mm512_add_ps,
                   $row, $x, $bb, $xb, |$blk, $xv| $body)
    };
    (@sum $zero:expr, $fma:ident, $add:ident,
     $row:expr, $x:expr, $bb:expr, $xb:expr, |$blk:ident, $xv:ident| $body:expr) => {{
        let (row, x) = ($row, $x);
        let nb = (row.len() / $bb).min(x.len() / $xb);
        let (row, x) = (&row[..nb * $bb], &x[..nb * $xb]);
        let (mut a0, mut a1) = ($zero, $zero);
        let (mut e0, mut e1) = (-0.0f32, -0.0f32);
        let mut rc = row.chunks_exact(2 * $bb);
        let mut xc = x.chunks_exact(2 * $xb);
        for (r2, x2) in (&mut rc).zip(&mut xc) {
            let (v0, d0, f0) = {
                let ($blk, $xv) = (&r2[..$bb], &x2[..$xb]);
                $body
            };
            let (v1, d1, f1) = {
                let ($blk, $xv) = (&r2[$bb..], &x2[$xb..]);
                $body
            };
            a0 = $fma(v0, d0, a0);
            a1 = $fma(v1, d1, a1);
            e0 += f0;
            e1 += f1;
        }
        if let (Some($blk), Some($xv)) = (rc.remainder().get(..$bb), xc.remainder().get(..$xb)) {
            let (v0, d0, f0) = $body;
            a0 = $fma(v0, d0, a0);
            e0 += f0;
        }
        ($add(a0, a1), e0 + e1)
    }};
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_attention;
pub mod scalar;
#[cfg(test)]
mod tests;

/// Every f16 bit pattern as f32 (256 KiB, built once, exactly as `half`
/// converts). Block scales come from here as one broadcast load, which is
/// much cheaper than F16C's convert plus the shuffles around it.
#[cfg(target_arch = "x86_64")]
pub(crate) fn f16_lut() -> &'static [f32; 1 << 16] {
    static LUT: OnceLock<Box<[f32; 1 << 16]>> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut t = Box::new([0f32; 1 << 16]);
        for (h, v) in (0..=u16::MAX).zip(t.iter_mut()) {
            *v = half::f16::from_bits(h).to_f32();
        }
        t
    })
}

/// Hints the CPU to start loading `bytes` into cache (x86_64: `prefetcht0`
/// on every 64-byte line the range touches, the first and last partial ones
/// included; a no-op elsewhere). Never faults.
#[inline]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T0 }>(bytes);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Like [`prefetch`], into the second-level cache (`prefetcht1`): for data
/// needed a task later, which should not push this task's out of L1.
#[inline]
pub fn prefetch_l2(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T1 }>(bytes);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// One prefetch per cache line of `bytes`, in a plain counted loop.
#[cfg(target_arch = "x86_64")]
#[inline]
fn prefetch_lines<const HINT: i32>(bytes: &[u8]) {
    let p = bytes.as_ptr();
    // From the start of the line holding the first byte to past the last.
    let lead = p as usize % 64;
    let mut off = 0;
    while off < lead + bytes.len() {
        // SAFETY: a prefetch is a hint that never faults, whatever the
        // address (the pointer is never dereferenced); SSE is part of the
        // x86_64 baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<HINT>(p.wrapping_sub(lead).wrapping_add(off).cast())
        };
        off += 64;
    }
}

/// Instruction-set level of a kernel table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust (what the compiler makes of it for the build target).
    Scalar,
    /// x86_64 AVX2 + FMA + F16C.
    Avx2,
    /// x86_64 AVX-512 F/BW/VL/VNNI (+ the AVX2 set).
    Avx512,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// Lower-case name (`scalar`, `avx2`, `avx512`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the level.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Quantized or float weight row (raw little-endian bytes) · f32 activations.
pub type F32Dot = fn(&[u8], &[f32]) -> f32;
/// Quantized weight row · 8-bit activation blocks (integer dot).
pub type Q8Dot = fn(&[u8], &[BlockQ8]) -> f32;
/// Dequantizes a weight row into f32 (`out` as long as the row's elements).
pub type Dequant = fn(&[u8], &mut [f32]);
/// f32s per block of prepared Q4 activations.
pub const PREPARED_Q4_BLOCK: usize = QK;
/// Rearranges f32 activations (whole blocks of 32) for a table's prepared Q4
/// dots; `out` holds [`PREPARED_Q4_BLOCK`] f32 per block.
pub type PrepareQ4 = fn(&[f32], &mut [f32]);
/// Exact-mode Q4 row · activations from the same table's [`PrepareQ4`]:
/// equal to the plain dot up to float rounding. Preparing once per input
/// row lets the AVX-512 kernel unpack nibbles with two shifts and two table
/// permutes per block.
pub type PreparedQ4Dot = fn(&[u8], &[f32]) -> f32;
/// Most input rows one [`PreparedQ4Rows`] call takes.
/// (With four rows the kernel's 16 accumulators crowd the registers and it
/// lost to the block product by 2-4x on the 576- and 1536-row matrices.)
pub const PREPARED_Q4_MAX_ROWS: usize = 3;
/// A table's [`PreparedQ4Dot`] of one weight row against `out.len()`
/// (at most [`PREPARED_Q4_MAX_ROWS`]) prepared activation rows laid end to
/// end in `xp`, decoding each weight block once; each output equals the
/// one-row dot bit for bit (batch invariance).
pub type PreparedQ4Rows = fn(row: &[u8], xp: &[f32], out: &mut [f32]);
/// Block product for prefill: with `m = x.len() / k` input rows and
/// `c = w.len()` weight rows (each `k` little-endian f32, any alignment),
/// `out[r * c + j] = x[r] · w[j]`. `out` holds at least `m * c`.
pub type GemmRows = fn(x: &[f32], k: usize, w: &[&[u8]], out: &mut [f32]);
/// Input rows one [`GemmT`] call covers (zero-padded).
pub const GEMM_T_LANES: usize = 32;
/// Block product on transposed activations: `xt` is `[k, GEMM_T_LANES]`
/// (column `r` is input row `r`), `w` holds `c` weight rows (each `k`
/// little-endian f32, any alignment), and `out[j * GEMM_T_LANES + r] =
/// x[r] · w[j]`, each sum taken in plain `k` order. Weights are broadcast
/// and input rows fill the vector lanes, so no horizontal sums are needed.
pub type GemmT = fn(xt: &[f32], k: usize, w: &[&[u8]], out: &mut [f32]);

/// One instruction-set level's kernels. Tables come only from
/// [`Kernels::get`] / [`Kernels::for_isa`], which check the CPU first, so
/// every pointer here is safe to call.
#[derive(Debug)]
pub struct Kernels {
    pub isa: Isa,
    /// f32 row · f32.
    pub dot_f32: F32Dot,
    /// f16 row · f32.
    pub dot_f16: F32Dot,
    /// bf16 row · f32.
    pub dot_bf16: F32Dot,
    /// Exact-mode Q8_0 row · f32.
    pub dot_q8_0: F32Dot,
    /// Exact-mode Q4_0 row · f32.
    pub dot_q4_0: F32Dot,
    /// Exact-mode Q4_1 row · f32.
    pub dot_q4_1: F32Dot,
    /// Fast-mode Q8_0 row · BlockQ8.
    pub qdot_q8_0: Q8Dot,
    /// Fast-mode Q4_0 row · BlockQ8.
    pub qdot_q4_0: Q8Dot,
    /// Fast-mode Q4_1 row · BlockQ8.
    pub qdot_q4_1: Q8Dot,
    /// Activation quantization, bit-identical to `quant::quantize_q8`.
    pub quantize_q8: fn(&[f32], &mut [BlockQ8]),
    pub dequant_f16: Dequant,
    pub dequant_bf16: Dequant,
    pub dequant_q8_0: Dequant,
    pub dequant_q4_0: Dequant,
    pub dequant_q4_1: Dequant,
    /// Plain f32 dot.
    pub dot_plain: fn(&[f32], &[f32]) -> f32,
    /// `y += a * x` over the shorter length.
    pub axpy: fn(f32, &[f32], &mut [f32]),
    /// `y *= a`.
    pub scale: fn(f32, &mut [f32]),
    /// `gate = silu(gate) * up` over the shorter length.
    pub silu_mul: fn(&mut [f32], &[f32]),
    /// One tile of paged attention (see [`crate::cpu::attention::AttendTile`]).
    pub attend_tile: fn(&crate::cpu::attention::AttendTile<'_>, &mut [f32]),
    /// Exact-mode Q4 activations in a table-specific layout (see
    /// [`PreparedQ4Dot`]); `None` where plain [`F32Dot`]s are as fast.
    pub prepare_q4: Option<PrepareQ4>,
    /// Exact-mode Q4_0 row · prepared activations.
    pub dot_q4_0p: Option<PreparedQ4Dot>,
    /// Exact-mode Q4_1 row · prepared activations.
    pub dot_q4_1p: Option<PreparedQ4Dot>,
    /// Exact-mode Q4_0 row · up to [`PREPARED_Q4_MAX_ROWS`] prepared rows.
    pub dot_q4_0p_rows: Option<PreparedQ4Rows>,
    /// Exact-mode Q4_1 row · up to [`PREPARED_Q4_MAX_ROWS`] prepared rows.
    pub dot_q4_1p_rows: Option<PreparedQ4Rows>,
    /// Prefill block product (see [`GemmRows`]).
    pub gemm_rows: GemmRows,
    /// Weight rows per [`GemmRows`] register tile: callers group rows by it.
    pub gemm_nr: usize,
    /// The block product on transposed activations, where the table has one.
    pub gemm_t: Option<GemmT>,
    /// Weight rows per [`GemmT`] register tile.
    pub gemm_t_rows: usize,
}

static CHOSEN: OnceLock<&'static Kernels> = OnceLock::new();

impl Kernels {
    /// The best table for this CPU (respecting `FACTORY_KERNELS`), chosen on
    /// the first call and cached.
    pub fn get() -> &'static Kernels {
        CHOSEN.get_or_init(|| {
            let cap = std::env::var("FACTORY_KERNELS")
                .ok()
                .and_then(|v| Isa::ALL.into_iter().find(|i| i.name() == v.trim()))
                .unwrap_or(Isa::Avx512);
            Isa::ALL
                .into_iter()
                .rev()
                .filter(|&i| i <= cap)
                .find_map(Kernels::for_isa)
                .unwrap_or(&scalar::KERNELS)
        })
    }

    /// The table for `isa`, if this CPU supports it.
    pub fn for_isa(isa: Isa) -> Option<&'static Kernels> {
        if !isa.supported() {
            return None;
        }
        match isa {
            Isa::Scalar => Some(&scalar::KERNELS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(&avx2::KERNELS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(&avx512::KERNELS),
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    /// Every table this CPU supports, lowest first.
    pub fn available() -> impl Iterator<Item = &'static Kernels> {
        Isa::ALL.into_iter().filter_map(Kernels::for_isa)
    }

    /// The exact-mode (f32 activations) row dot for `dtype`.
    pub fn f32_dot(&self, dtype: WeightDType) -> F32Dot {
        match dtype {
            WeightDType::F32 => self.dot_f32,
            WeightDType::F16 => self.dot_f16,
            WeightDType::BF16 => self.dot_bf16,
            WeightDType::Q8_0 => self.dot_q8_0,
            WeightDType::Q4_0 => self.dot_q4_0,
            WeightDType::Q4_1 => self.dot_q4_1,
        }
    }

    /// The fast-mode (8-bit activations) row dot, for quantized `dtype`s.
    pub fn q8_dot(&self, dtype: WeightDType) -> Option<Q8Dot> {
        match dtype {
            WeightDType::Q8_0 => Some(self.qdot_q8_0),
            WeightDType::Q4_0 => Some(self.qdot_q4_0),
            WeightDType::Q4_1 => Some(self.qdot_q4_1),
            WeightDType::F32 | WeightDType::F16 | WeightDType::BF16 => None,
        }
    }

    /// Row dequantization to f32 for `dtype` (`None` for F32, which needs none).
    pub fn dequant(&self, dtype: WeightDType) -> Option<Dequant> {
        match dtype {
            WeightDType::F32 => None,
            WeightDType::F16 => Some(self.dequant_f16),
            WeightDType::BF16 => Some(self.dequant_bf16),
            WeightDType::Q8_0 => Some(self.dequant_q8_0),
            WeightDType::Q4_0 => Some(self.dequant_q4_0),
            WeightDType::Q4_1 => Some(self.dequant_q4_1),
        }
    }
}

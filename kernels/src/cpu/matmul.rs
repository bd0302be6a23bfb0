//! `y = x · Wᵀ` for every weight format, parallel across weight rows.
//!
//! Two strategies, both on the SIMD kernels of [`Kernels::get`]:
//! - few input rows (decode): one row dot per (weight row, input row), each
//!   weight row read once from memory while it meets every input row. This is
//!   bandwidth bound; tasks are sized by bytes so small matrices are not
//!   drowned in scheduling and large ones balance across threads.
//! - many input rows (prefill): each task dequantizes a group of weight rows
//!   to f32 once (f32 weights are used in place) and runs a register-tiled
//!   block product over all input rows. Fast mode feeds it the 8-bit
//!   activations dequantized, so it computes the same products as the
//!   integer dots up to float rounding.

use std::cell::RefCell;

use rayon::prelude::*;

use super::quant::{BlockQ8, QK};
use super::simd::{
    prefetch, prefetch_l2, GemmT, Kernels, PreparedQ4Dot, PreparedQ4Rows, GEMM_T_LANES,
    PREPARED_Q4_BLOCK, PREPARED_Q4_MAX_ROWS,
};
use super::weight::{WeightDType, WeightMatrix};

/// How activations meet quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationMode {
    /// Activations stay f32; weights are dequantized block by block inside the dot.
    #[default]
    Exact,
    /// Activations are quantized to 8 bits per block and dotted in integers,
    /// as llama.cpp does. Applies only to quantized weights.
    Fast,
}

/// Weight bytes one decode task should cover at least: below this, waking a
/// thread costs more than the rows take to stream.
const MIN_TASK_BYTES: usize = 32 * 1024;
/// How far ahead of its dot a decode task prefetches weights.
const PREFETCH_BYTES: usize = 4096;
/// [`MIN_TASK_BYTES`] for calls from outside the rayon pool, which pay
/// ~15 µs more per parallel call (the caller sleeps until the pool is done).
const MIN_TASK_BYTES_OUTSIDE_POOL: usize = 128 * 1024;
/// Decode tasks per thread when a matrix is large (load balance vs overhead).
const TASKS_PER_THREAD: usize = 8;
/// Most weight rows one prefill task dequantizes and keeps hot.
const GEMM_MAX_ROWS_PER_TASK: usize = 64;
/// Input rows per prefill pass over a task's weight rows.
const GEMM_ROW_BLOCK: usize = 64;
/// Input rows from which the block product on transposed activations
/// (where the kernel table has one) beats the row-major tiles; below, its
/// 32 lanes would be mostly padding.
const GEMM_T_MIN_ROWS: usize = 32;
/// Weight rows from which it pays for transposing the activations (measured
/// with `kernels_bench --gemm`: +20-40% on 1536- and 49152-row matrices,
/// a loss on 192- and 576-row ones).
const GEMM_T_MIN_WEIGHT_ROWS: usize = 1024;

/// Computes `out[m, n] = x[m, k] · W[n, k]ᵀ`.
///
/// # Panics
/// If `x.len() != m * w.cols` or `out.len() != m * w.rows` (callers own shapes).
pub fn matmul(x: &[f32], m: usize, w: &WeightMatrix<'_>, out: &mut [f32], mode: ActivationMode) {
    matmul_with(Kernels::get(), x, m, w, out, mode);
}

/// [`matmul`] on a given kernel table (tests and benchmarks compare them).
///
/// # Panics
/// As [`matmul`].
pub fn matmul_with(
    kern: &Kernels,
    x: &[f32],
    m: usize,
    w: &WeightMatrix<'_>,
    out: &mut [f32],
    mode: ActivationMode,
) {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(x.len(), m * k, "matmul: x is not [m, k]");
    assert_eq!(out.len(), m * n, "matmul: out is not [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let fast = mode == ActivationMode::Fast && w.dtype.is_quantized();
    if m >= gemm_min_rows(kern, w.dtype, fast) {
        let xq;
        let x = if fast {
            xq = quantize_dequantize(kern, x, m, k);
            &xq[..]
        } else {
            x
        };
        gemm(kern, x, m, w, out);
        return;
    }
    if let (true, Some(dot)) = (fast, kern.q8_dot(w.dtype)) {
        let kb = k / QK;
        let mut xq = vec![BlockQ8::default(); m * kb];
        for (xr, qr) in x.chunks_exact(k).zip(xq.chunks_exact_mut(kb)) {
            (kern.quantize_q8)(xr, qr);
        }
        run_rows(m, w, out, |row, r| dot(row, &xq[r * kb..(r + 1) * kb]));
    } else if let (Some(prep), Some(rows), 2..=PREPARED_Q4_MAX_ROWS) =
        (kern.prepare_q4, prepared_q4_rows(kern, w.dtype), m)
    {
        let pk = k / QK * PREPARED_Q4_BLOCK;
        let mut xp = vec![0f32; m * pk];
        for (xr, pr) in x.chunks_exact(k).zip(xp.chunks_exact_mut(pk)) {
            prep(xr, pr);
        }
        run_rows_together(m, w, out, |row, o| rows(row, &xp, o));
    } else if let (Some(prep), Some(dot)) = (kern.prepare_q4, prepared_q4_dot(kern, w.dtype)) {
        let pk = k / QK * PREPARED_Q4_BLOCK;
        let mut xp = vec![0f32; m * pk];
        for (xr, pr) in x.chunks_exact(k).zip(xp.chunks_exact_mut(pk)) {
            prep(xr, pr);
        }
        run_rows(m, w, out, |row, r| dot(row, &xp[r * pk..(r + 1) * pk]));
    } else {
        let dot = kern.f32_dot(w.dtype);
        run_rows(m, w, out, |row, r| dot(row, &x[r * k..(r + 1) * k]));
    }
}

/// Several products of the same input, `outs[i] = x · W_iᵀ` (Q/K/V, or
/// gate and up). With one input row (single-stream decode) every matrix's
/// rows go through one parallel pass, so the threads meet once instead of
/// once per matrix, and activations are prepared once; the dots are the ones
/// [`matmul`] runs, so results are bit-identical to calling it per matrix.
/// With more rows it calls [`matmul`] per matrix.
///
/// # Panics
/// As [`matmul`], for any of the pairs.
pub fn matmul_many(
    x: &[f32],
    m: usize,
    parts: &mut [(&WeightMatrix<'_>, &mut [f32])],
    mode: ActivationMode,
) {
    matmul_many_with(Kernels::get(), x, m, parts, mode);
}

/// [`matmul_many`] on a given kernel table.
///
/// # Panics
/// As [`matmul`].
pub fn matmul_many_with(
    kern: &Kernels,
    x: &[f32],
    m: usize,
    parts: &mut [(&WeightMatrix<'_>, &mut [f32])],
    mode: ActivationMode,
) {
    let single_pass = m == 1
        && parts.len() > 1
        && parts.iter().all(|(w, _)| {
            let fast = mode == ActivationMode::Fast && w.dtype.is_quantized();
            w.cols > 0 && w.rows > 0 && 1 < gemm_min_rows(kern, w.dtype, fast)
        });
    if !single_pass {
        for (w, out) in parts.iter_mut() {
            matmul_with(kern, x, m, w, out, mode);
        }
        return;
    }
    let k = x.len();
    for (w, out) in parts.iter() {
        assert_eq!(w.cols, k, "matmul_many: x is not [1, k]");
        assert_eq!(out.len(), w.rows, "matmul_many: out is not [1, n]");
    }
    // Each activation form at most once, shared by every matrix that needs it.
    let kb = k / QK;
    let mut xq = Vec::new();
    let mut xp = Vec::new();
    let dots: Vec<RowDot<'_>> = {
        for (w, _) in parts.iter() {
            match row_dot_kind(kern, w.dtype, mode) {
                RowDotKind::Q8 if xq.is_empty() => {
                    xq = vec![BlockQ8::default(); kb];
                    (kern.quantize_q8)(x, &mut xq);
                }
                RowDotKind::Prepared if xp.is_empty() => {
                    if let Some(prep) = kern.prepare_q4 {
                        xp = vec![0f32; kb * PREPARED_Q4_BLOCK];
                        prep(x, &mut xp);
                    }
                }
                _ => {}
            }
        }
        parts
            .iter()
            .map(|(w, _)| match row_dot_kind(kern, w.dtype, mode) {
                RowDotKind::Q8 => kern
                    .q8_dot(w.dtype)
                    .map_or(RowDot::F32(kern.f32_dot(w.dtype), x), |d| {
                        RowDot::Q8(d, &xq)
                    }),
                RowDotKind::Prepared => prepared_q4_dot(kern, w.dtype)
                    .map_or(RowDot::F32(kern.f32_dot(w.dtype), x), |d| {
                        RowDot::F32(d, &xp)
                    }),
                RowDotKind::F32 => RowDot::F32(kern.f32_dot(w.dtype), x),
            })
            .collect()
    };
    let ws: Vec<&WeightMatrix<'_>> = parts.iter().map(|(w, _)| *w).collect();
    let mut tasks: Vec<(usize, usize, &mut [f32])> = Vec::new();
    for (i, (w, out)) in parts.iter_mut().enumerate() {
        let rpt = decode_rows_per_task(w.rows, w.row_bytes());
        for (c, o) in out.chunks_mut(rpt).enumerate() {
            tasks.push((i, c * rpt, o));
        }
    }
    let (ws, dots) = (&ws, &dots);
    tasks.into_par_iter().for_each(|(i, j0, o)| {
        let w = ws[i];
        match dots[i] {
            RowDot::Q8(dot, xq) => dot_rows(w, j0, o, |row| dot(row, xq)),
            RowDot::F32(dot, xv) => dot_rows(w, j0, o, |row| dot(row, xv)),
        }
    });
}

/// How [`matmul_with`] dots one input row with rows of a given type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RowDotKind {
    /// Integer dots on 8-bit activation blocks (fast mode, quantized weights).
    Q8,
    /// The table's exact Q4 dot on prepared activations.
    Prepared,
    /// The plain exact dot on f32 activations.
    F32,
}

fn row_dot_kind(kern: &Kernels, dtype: WeightDType, mode: ActivationMode) -> RowDotKind {
    let fast = mode == ActivationMode::Fast && dtype.is_quantized();
    if fast && kern.q8_dot(dtype).is_some() {
        RowDotKind::Q8
    } else if kern.prepare_q4.is_some() && prepared_q4_dot(kern, dtype).is_some() {
        RowDotKind::Prepared
    } else {
        RowDotKind::F32
    }
}

/// A row dot with the activations it reads.
enum RowDot<'a> {
    Q8(super::simd::Q8Dot, &'a [BlockQ8]),
    F32(super::simd::F32Dot, &'a [f32]),
}

/// `o[i] = dot(row j0 + i)`, prefetching ~[`PREFETCH_BYTES`] ahead within
/// the task's rows.
fn dot_rows(w: &WeightMatrix<'_>, j0: usize, o: &mut [f32], dot: impl Fn(&[u8]) -> f32) {
    let rb = w.row_bytes();
    let end = (j0 + o.len()) * rb;
    let ahead = (PREFETCH_BYTES / rb.max(1)).max(1);
    for (i, o) in o.iter_mut().enumerate() {
        let p = (j0 + i + ahead) * rb;
        if PREFETCH_BYTES > 0 && p < end {
            prefetch(&w.data[p..(p + rb).min(end)]);
        }
        *o = dot(w.row(j0 + i));
    }
}

/// The table's exact Q4 dot of one weight row against a few prepared
/// activation rows at once, if it has one.
fn prepared_q4_rows(kern: &Kernels, dtype: WeightDType) -> Option<PreparedQ4Rows> {
    match dtype {
        WeightDType::Q4_0 => kern.dot_q4_0p_rows,
        WeightDType::Q4_1 => kern.dot_q4_1p_rows,
        _ => None,
    }
}

/// Like [`run_rows`] for a few input rows, with `dots(weight_row, out)`
/// filling one output per input row from a single pass over the weight row.
fn run_rows_together<F>(m: usize, w: &WeightMatrix<'_>, out: &mut [f32], dots: F)
where
    F: Fn(&[u8], &mut [f32]) + Sync,
{
    let n = w.rows;
    let rb = w.row_bytes();
    // Compute per weight byte grows with m, so tasks are sized as for m = 1.
    let rpt = decode_rows_per_task(n, rb);
    let ahead = (PREFETCH_BYTES / rb.max(1)).max(1);
    let mut t = vec![0f32; n * m];
    t.par_chunks_mut(rpt * m).enumerate().for_each(|(c, tc)| {
        let j0 = c * rpt;
        let end = (j0 + tc.len() / m) * rb;
        for (i, tr) in tc.chunks_exact_mut(m).enumerate() {
            let p = (j0 + i + ahead) * rb;
            if PREFETCH_BYTES > 0 && p < end {
                prefetch(&w.data[p..(p + rb).min(end)]);
            }
            dots(w.row(j0 + i), tr);
        }
    });
    for (j, tr) in t.chunks_exact(m).enumerate() {
        for (r, &v) in tr.iter().enumerate() {
            out[r * n + j] = v;
        }
    }
}

/// The table's exact Q4 dot on prepared activations, if it has one.
fn prepared_q4_dot(kern: &Kernels, dtype: WeightDType) -> Option<PreparedQ4Dot> {
    match dtype {
        WeightDType::Q4_0 => kern.dot_q4_0p,
        WeightDType::Q4_1 => kern.dot_q4_1p,
        _ => None,
    }
}

/// Input rows from which the block product beats row dots. Row dots read
/// each weight row once and reuse it from L1 for every input row, so they
/// win while the per-row decoding they repeat costs less than the block
/// product's one-off dequantization of the weights to f32 (measured at
/// SmolLM2-135M's shapes with `kernels_bench --sweep`).
fn gemm_min_rows(kern: &Kernels, dtype: WeightDType, fast: bool) -> usize {
    match (dtype, fast) {
        // Several rows per weight-block decode: row dots stay ahead up to
        // the kernel's row count (at 2-3 rows the block product's
        // dequantization of every weight costs more than it saves).
        (WeightDType::Q4_0 | WeightDType::Q4_1, false)
            if prepared_q4_rows(kern, dtype).is_some() =>
        {
            PREPARED_Q4_MAX_ROWS + 1
        }
        // Nothing to dequantize: the register tiles win at once.
        (WeightDType::F32, _) => 2,
        // Cheap to decode inside a dot.
        (WeightDType::F16 | WeightDType::BF16, _) => 4,
        (WeightDType::Q8_0, false) => 3,
        // Nibble unpacking to f32 is the dearest row dot.
        (WeightDType::Q4_0 | WeightDType::Q4_1, false) => 2,
        // Integer dots are cheap per row.
        (WeightDType::Q8_0, true) => 4,
        (WeightDType::Q4_0 | WeightDType::Q4_1, true) => 6,
    }
}

/// `x` through 8-bit block quantization and back: what the integer dots see.
fn quantize_dequantize(kern: &Kernels, x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let kb = k / QK;
    let mut q = vec![BlockQ8::default(); kb];
    let mut out = vec![0f32; m * k];
    for (xr, or) in x.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
        (kern.quantize_q8)(xr, &mut q);
        for (b, o) in q.iter().zip(or.chunks_exact_mut(QK)) {
            for (o, &v) in o.iter_mut().zip(&b.qs) {
                *o = b.d * f32::from(v);
            }
        }
    }
    out
}

/// Weight rows per decode task for a matrix of `n` rows of `row_bytes`.
fn decode_rows_per_task(n: usize, row_bytes: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let total = n * row_bytes.max(1);
    // From outside the pool a parallel call also pays for waking this thread
    // at the end; below this size one thread alone finishes sooner.
    let min_task = if rayon::current_thread_index().is_some() {
        MIN_TASK_BYTES
    } else {
        MIN_TASK_BYTES_OUTSIDE_POOL
    };
    let mut tasks = (total / min_task).clamp(1, threads * TASKS_PER_THREAD);
    if tasks > 1 {
        // Whole rounds of tasks keep every thread busy to the end.
        tasks = tasks.div_ceil(threads) * threads;
    }
    n.div_ceil(tasks).max(1)
}

/// Drives `dot(weight_row, input_row_index)` over all (n, m) pairs in parallel.
///
/// Called from outside the rayon pool, every parallel call also pays for
/// waking the caller when the pool is done (~15 µs in a VM); a forward pass
/// run inside `ThreadPool::install` avoids that.
fn run_rows<F>(m: usize, w: &WeightMatrix<'_>, out: &mut [f32], dot: F)
where
    F: Fn(&[u8], usize) -> f32 + Sync,
{
    let n = w.rows;
    let rpt = decode_rows_per_task(n, w.row_bytes() * m);
    if m == 1 {
        out.par_chunks_mut(rpt)
            .enumerate()
            .for_each(|(c, o)| dot_rows(w, c * rpt, o, |row| dot(row, 0)));
        return;
    }
    // Weight-row-major scratch [n, m]: each task owns whole weight rows, which
    // stay in cache while every input row meets them; transposed after.
    let mut t = vec![0f32; n * m];
    t.par_chunks_mut(rpt * m).enumerate().for_each(|(c, tc)| {
        for (i, tr) in tc.chunks_exact_mut(m).enumerate() {
            let row = w.row(c * rpt + i);
            for (r, o) in tr.iter_mut().enumerate() {
                *o = dot(row, r);
            }
        }
    });
    for (j, tr) in t.chunks_exact(m).enumerate() {
        for (r, &v) in tr.iter().enumerate() {
            out[r * n + j] = v;
        }
    }
}

/// Rows of `out` written by several tasks at once, each owning a disjoint
/// range of columns.
struct ColumnShared {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
}

// SAFETY: `ColumnShared` only hands out writes through `write`, whose callers
// guarantee disjoint column ranges; the pointee outlives every task because
// the parallel loop using it finishes before `gemm` returns.
unsafe impl Sync for ColumnShared {}

impl ColumnShared {
    /// Writes `vals` to row `r`, columns `j0..j0 + vals.len()`.
    ///
    /// # Safety
    /// No other thread may access those elements during the call.
    unsafe fn write(&self, r: usize, j0: usize, vals: &[f32]) {
        assert!(
            r < self.rows && j0 + vals.len() <= self.cols,
            "ColumnShared: out of range"
        );
        // SAFETY: in bounds by the assert; exclusive by the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(
                vals.as_ptr(),
                self.ptr.add(r * self.cols + j0),
                vals.len(),
            );
        }
    }
}

thread_local! {
    /// Per-thread scratch for prefill tasks: dequantized weights, then a tile.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Block product over tasks of whole weight-row groups.
fn gemm(kern: &Kernels, x: &[f32], m: usize, w: &WeightMatrix<'_>, out: &mut [f32]) {
    let transposed = m >= GEMM_T_MIN_ROWS && w.rows >= GEMM_T_MIN_WEIGHT_ROWS;
    if let Some(gt) = kern.gemm_t.filter(|_| transposed) {
        gemm_transposed(kern, gt, x, m, w, out);
        return;
    }
    let k = w.cols;
    gemm_tasks(kern, w, m, out, kern.gemm_nr, |rows, j0, tile, shared| {
        let cols = rows.len();
        tile.resize(GEMM_ROW_BLOCK.min(m) * cols, 0.0);
        for r0 in (0..m).step_by(GEMM_ROW_BLOCK) {
            let mr = GEMM_ROW_BLOCK.min(m - r0);
            let tile = &mut tile[..mr * cols];
            (kern.gemm_rows)(&x[r0 * k..(r0 + mr) * k], k, rows, tile);
            for (r, vals) in tile.chunks_exact(cols).enumerate() {
                // SAFETY: this task alone owns columns j0..j0 + cols.
                unsafe { shared.write(r0 + r, j0, vals) };
            }
        }
    });
}

/// [`gemm`] with input rows in vector lanes: activations are transposed once
/// into groups of [`GEMM_T_LANES`] rows, shared by every task; each task
/// dequantizes its weight rows once and runs every group past them.
fn gemm_transposed(
    kern: &Kernels,
    gt: GemmT,
    x: &[f32],
    m: usize,
    w: &WeightMatrix<'_>,
    out: &mut [f32],
) {
    let k = w.cols;
    const L: usize = GEMM_T_LANES;
    let groups = m.div_ceil(L);
    let mut xt = vec![0f32; groups * k * L];
    // Serial: m·k moves against 2·m·k·n flops, and only used for large n.
    for (r, xr) in x.chunks_exact(k).enumerate() {
        let g = &mut xt[(r / L) * k * L..][..k * L];
        for (i, &v) in xr.iter().enumerate() {
            g[i * L + r % L] = v;
        }
    }
    let xt = &xt;
    gemm_tasks(
        kern,
        w,
        m,
        out,
        kern.gemm_t_rows,
        |rows, j0, tile, shared| {
            let cols = rows.len();
            tile.resize(cols * L + cols, 0.0);
            let (tile, vals) = tile.split_at_mut(cols * L);
            for g in 0..groups {
                gt(&xt[g * k * L..(g + 1) * k * L], k, rows, tile);
                for l in 0..L.min(m - g * L) {
                    for (v, tr) in vals.iter_mut().zip(tile.chunks_exact(L)) {
                        *v = tr[l];
                    }
                    // SAFETY: this task alone owns columns j0..j0 + cols.
                    unsafe { shared.write(g * L + l, j0, vals) };
                }
            }
        },
    );
}

/// Runs `body(weight_rows_as_f32_bytes, j0, tile_scratch, out)` over tasks
/// of whole groups of `group` weight rows in parallel: at least four tasks
/// per thread, at most [`GEMM_MAX_ROWS_PER_TASK`] rows each, in whole rounds
/// so no thread idles at the end. Quantized rows are dequantized to f32 once
/// per task into per-thread scratch.
fn gemm_tasks<F>(
    kern: &Kernels,
    w: &WeightMatrix<'_>,
    m: usize,
    out: &mut [f32],
    group: usize,
    body: F,
) where
    F: Fn(&[&[u8]], usize, &mut Vec<f32>, &ColumnShared) + Sync,
{
    let (n, k) = (w.rows, w.cols);
    let threads = rayon::current_num_threads().max(1);
    let tasks = n
        .div_ceil(GEMM_MAX_ROWS_PER_TASK)
        .max(threads * 4)
        .next_multiple_of(threads);
    let rpt = n.div_ceil(tasks).next_multiple_of(group.max(1));
    let dequant = kern.dequant(w.dtype);
    let shared = ColumnShared {
        ptr: out.as_mut_ptr(),
        rows: m,
        cols: n,
    };
    let shared = &shared;
    (0..n.div_ceil(rpt)).into_par_iter().for_each(|t| {
        let j0 = t * rpt;
        let cols = rpt.min(n - j0);
        let task = |deq: &mut Vec<f32>, tile: &mut Vec<f32>| {
            let rows: Vec<&[u8]> = match dequant {
                Some(dq) => {
                    deq.resize(cols * k, 0.0);
                    for (i, d) in deq.chunks_exact_mut(k).enumerate() {
                        dq(w.row(j0 + i), d);
                    }
                    // The rows a next task of this thread likely takes
                    // stream in while this one computes: in a batched decode
                    // step every weight comes from DRAM once, and the
                    // dequantization would otherwise wait on each line.
                    let next = ((j0 + cols) * w.row_bytes()).min(w.data.len());
                    let end = (next + cols * w.row_bytes()).min(w.data.len());
                    prefetch_l2(&w.data[next..end]);
                    deq.chunks_exact(k).map(bytemuck::cast_slice).collect()
                }
                None => (j0..j0 + cols).map(|j| w.row(j)).collect(),
            };
            body(&rows, j0, tile, shared);
        };
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                let (deq, tile) = &mut *s;
                task(deq, tile);
            }
            // Re-entered on this thread (cannot happen today): use fresh buffers.
            Err(_) => task(&mut Vec::new(), &mut Vec::new()),
        });
    });
}

/// f32 row (little-endian bytes) · f32 activations.
pub fn dot_f32_f32(row: &[u8], x: &[f32]) -> f32 {
    if let Ok(w) = bytemuck::try_cast_slice::<u8, f32>(row) {
        return dot_plain(w, x);
    }
    row.chunks_exact(4)
        .zip(x)
        .map(|(c, v)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * v)
        .sum()
}

/// f16 row · f32 activations.
pub fn dot_f32_f16(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2)
        .zip(x)
        .map(|(c, v)| half::f16::from_le_bytes([c[0], c[1]]).to_f32() * v)
        .sum()
}

/// bf16 row · f32 activations.
pub fn dot_f32_bf16(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2)
        .zip(x)
        .map(|(c, v)| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16) * v)
        .sum()
}

/// Plain f32 dot with several accumulators so the compiler vectorizes it.
pub fn dot_plain(a: &[f32], b: &[f32]) -> f32 {
    // Both to the shorter length first: chunking unequal slices separately
    // would pair a remainder with the wrong elements.
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::quant::{quantize_row_q4_0, quantize_row_q4_1, quantize_row_q8_0};
    use crate::cpu::simd::Kernels;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn encode(dtype: WeightDType, w: &[f32], k: usize) -> Vec<u8> {
        let rows = w.chunks_exact(k);
        match dtype {
            WeightDType::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
            WeightDType::F16 => w
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            WeightDType::BF16 => w
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            WeightDType::Q8_0 => rows.flat_map(quantize_row_q8_0).collect(),
            WeightDType::Q4_0 => rows.flat_map(quantize_row_q4_0).collect(),
            WeightDType::Q4_1 => rows.flat_map(quantize_row_q4_1).collect(),
        }
    }

    /// The reference: dequantize every row, then a plain f64 product.
    fn reference(x: &[f32], m: usize, w: &WeightMatrix<'_>) -> Vec<f32> {
        let (n, k) = (w.rows, w.cols);
        let mut deq = vec![0f32; k];
        let mut out = vec![0f32; m * n];
        for j in 0..n {
            w.dequantize_row(j, &mut deq);
            for r in 0..m {
                let s: f64 = deq
                    .iter()
                    .zip(&x[r * k..(r + 1) * k])
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                out[r * n + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn every_kernel_table_matches_the_reference_across_strategies() {
        // Shapes around the decode/prefill switch, the register tiles, the
        // 64-row input blocks, ragged weight-row groups, and (1100 rows) the
        // transposed block product with ragged 32-row input groups.
        let mut seed = 100;
        for &(n, k) in &[(37, 96), (130, 64), (5, 576), (1100, 64)] {
            let w = random(n * k, seed);
            seed += 1;
            for dtype in [
                WeightDType::F32,
                WeightDType::F16,
                WeightDType::BF16,
                WeightDType::Q8_0,
                WeightDType::Q4_0,
                WeightDType::Q4_1,
            ] {
                let bytes = encode(dtype, &w, k);
                // An odd address: f32 rows must not need alignment.
                let mut buf = vec![0u8; bytes.len() + 1];
                buf[1..].copy_from_slice(&bytes);
                let wm = WeightMatrix::new(dtype, n, k, &buf[1..]).unwrap();
                for m in [1, 2, 3, 4, 5, 7, 13, 64, 70] {
                    let x = random(m * k, seed);
                    seed += 1;
                    let want = reference(&x, m, &wm);
                    for kern in Kernels::available() {
                        for mode in [ActivationMode::Exact, ActivationMode::Fast] {
                            let mut got = vec![f32::NAN; m * n];
                            matmul_with(kern, &x, m, &wm, &mut got, mode);
                            let tol = if mode == ActivationMode::Fast && dtype.is_quantized() {
                                0.15
                            } else {
                                2e-3
                            };
                            for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                                assert!(
                                    (a - b).abs() <= tol,
                                    "{} {dtype:?} {mode:?} n={n} k={k} m={m} [{i}]: {a} vs {b}",
                                    kern.isa
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fast_mode_prefill_equals_fast_mode_decode() {
        // The block product on dequantized 8-bit activations computes what the
        // integer row dots compute, up to float rounding.
        let (n, k) = (40, 256);
        let w = random(n * k, 200);
        for dtype in [WeightDType::Q8_0, WeightDType::Q4_0, WeightDType::Q4_1] {
            let bytes = encode(dtype, &w, k);
            let wm = WeightMatrix::new(dtype, n, k, &bytes).unwrap();
            let m = 9;
            let x = random(m * k, 201);
            for kern in Kernels::available() {
                let mut batch = vec![0f32; m * n];
                matmul_with(kern, &x, m, &wm, &mut batch, ActivationMode::Fast);
                for r in 0..m {
                    let mut one = vec![0f32; n];
                    matmul_with(
                        kern,
                        &x[r * k..(r + 1) * k],
                        1,
                        &wm,
                        &mut one,
                        ActivationMode::Fast,
                    );
                    for (a, b) in one.iter().zip(&batch[r * n..(r + 1) * n]) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                            "{} {dtype:?}: {a} vs {b}",
                            kern.isa
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_many_equals_one_matmul_per_matrix_bit_for_bit() {
        let k = 128;
        let dtypes = [
            WeightDType::Q4_1,
            WeightDType::Q4_0,
            WeightDType::Q8_0,
            WeightDType::F32,
            WeightDType::F16,
        ];
        let rows = [70, 3, 200, 33, 64];
        let bytes: Vec<Vec<u8>> = dtypes
            .iter()
            .zip(rows)
            .enumerate()
            .map(|(i, (&d, n))| encode(d, &random(n * k, 300 + i as u64), k))
            .collect();
        let mats: Vec<WeightMatrix<'_>> = dtypes
            .iter()
            .zip(rows)
            .zip(&bytes)
            .map(|((&d, n), b)| WeightMatrix::new(d, n, k, b).unwrap())
            .collect();
        for m in [1, 2, 7] {
            let x = random(m * k, 400 + m as u64);
            for kern in Kernels::available() {
                for mode in [ActivationMode::Exact, ActivationMode::Fast] {
                    // Same-type groups (the model's case) and a mixed one.
                    for group in [&mats[..1], &mats[..2], &mats[..]] {
                        let mut outs: Vec<Vec<f32>> =
                            group.iter().map(|w| vec![f32::NAN; m * w.rows]).collect();
                        let mut parts: Vec<(&WeightMatrix<'_>, &mut [f32])> = group
                            .iter()
                            .zip(outs.iter_mut())
                            .map(|(w, o)| (w, &mut o[..]))
                            .collect();
                        matmul_many_with(kern, &x, m, &mut parts, mode);
                        for (w, got) in group.iter().zip(&outs) {
                            let mut want = vec![0f32; m * w.rows];
                            matmul_with(kern, &x, m, w, &mut want, mode);
                            assert_eq!(
                                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                "{} {:?} {mode:?} m={m}",
                                kern.isa,
                                w.dtype
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn exact_q4_rows_of_a_small_batch_equal_each_row_alone_bit_for_bit() {
        // Batch invariance: 2..=4 input rows share one weight-block decode
        // but must give each row exactly what it gets alone. k = 160 has an
        // odd block count (the kernel's remainder block).
        for &(n, k) in &[(50, 128), (37, 160)] {
            let w = random(n * k, 500);
            for dtype in [WeightDType::Q4_0, WeightDType::Q4_1] {
                let bytes = encode(dtype, &w, k);
                let wm = WeightMatrix::new(dtype, n, k, &bytes).unwrap();
                for m in 2..=PREPARED_Q4_MAX_ROWS {
                    let x = random(m * k, 600 + m as u64);
                    // Tables without the several-rows kernel use the block
                    // product from two rows on, which rounds differently.
                    for kern in
                        Kernels::available().filter(|k| prepared_q4_rows(k, dtype).is_some())
                    {
                        let mut batch = vec![0f32; m * n];
                        matmul_with(kern, &x, m, &wm, &mut batch, ActivationMode::Exact);
                        for r in 0..m {
                            let mut one = vec![0f32; n];
                            matmul_with(
                                kern,
                                &x[r * k..(r + 1) * k],
                                1,
                                &wm,
                                &mut one,
                                ActivationMode::Exact,
                            );
                            let bits =
                                |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                            assert_eq!(
                                bits(&one),
                                bits(&batch[r * n..(r + 1) * n]),
                                "{} {dtype:?} m={m} row {r}",
                                kern.isa
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        let wm = WeightMatrix::new(WeightDType::F32, 3, 0, &[]).unwrap();
        let mut out = vec![f32::NAN; 6];
        matmul(&[], 2, &wm, &mut out, ActivationMode::Exact);
        assert_eq!(out, vec![0.0; 6]);
    }

    #[test]
    fn matmul_matches_reference_for_every_dtype_and_mode() {
        let (n, k) = (70, 128);
        let w = random(n * k, 7);
        for dtype in [
            WeightDType::F32,
            WeightDType::F16,
            WeightDType::BF16,
            WeightDType::Q8_0,
            WeightDType::Q4_0,
            WeightDType::Q4_1,
        ] {
            let bytes = encode(dtype, &w, k);
            let wm = WeightMatrix::new(dtype, n, k, &bytes).unwrap();
            for m in [1, 3, 9] {
                let x = random(m * k, 8 + m as u64);
                let want = reference(&x, m, &wm);
                for mode in [ActivationMode::Exact, ActivationMode::Fast] {
                    let mut got = vec![f32::NAN; m * n];
                    matmul(&x, m, &wm, &mut got, mode);
                    let tol = if mode == ActivationMode::Fast && dtype.is_quantized() {
                        0.1
                    } else {
                        1e-3
                    };
                    for (a, b) in want.iter().zip(&got) {
                        assert!((a - b).abs() <= tol, "{dtype:?} {mode:?} m={m}: {a} vs {b}");
                    }
                }
            }
        }
    }
}

//! Dense products through cuBLASLt: `y = x · wᵀ` with bf16 (or f16) inputs,
//! f32 accumulation, bf16/f16 or f32 output.
//!
//! libcublasLt is loaded at run time by cudarc, whose loader panics when the
//! library is missing; [`cublaslt_present`] checks first so absence is a
//! [`CudaError::CublasLtLibraryNotFound`]. `FACTORY_CUBLASLT_LIB` may name the
//! library file (e.g. from the `nvidia-cublas` wheel): it is loaded by path
//! first and cudarc's `libcublasLt.so.N` then resolves to it by soname.
//!
//! # Row-major through a column-major library
//!
//! cuBLASLt's default order is column-major. A row-major `[r, c]` buffer is,
//! read column-major, the `[c, r]` matrix that is its transpose. So:
//! - `y[m, n]` row-major is `Yᵀ` (`n × m`, ld `n`) column-major;
//! - `w[n, k]` row-major (HF's `[out, in]` Linear weight) is `Wᵀ` (`k × n`, ld `k`);
//! - `x[m, k]` row-major is `Xᵀ` (`k × m`, ld `k`).
//!
//! `y = x · wᵀ` transposed is `Yᵀ = W · Xᵀ`, a column-major product with
//! `A = w` under op T (`k × n` stored, `n × k` used), `B = x` under op N
//! (`k × m`), `D = y` (`n × m`): cuBLAS's (M, N, K) = (n, m, k), the "TN" layout.
//!
//! # Shapes and alignment
//!
//! For bf16/f16 cuBLASLt has no hard shape rule (FP8 does); rows whose byte
//! length is a multiple of 16 (k and n multiples of 8) and buffers aligned to
//! 16 bytes or more get the tensor-core kernels, other shapes get slower ones.
//! The heuristic assumes 256-byte-aligned pointers unless told otherwise, so
//! each call passes the actual alignment of its three pointers (views into a
//! larger buffer may sit at any element) and plans are cached per alignment.
//! When the heuristic offers nothing the call is [`CudaError::Gemm`] naming
//! the shape, never a launch of an unsuitable kernel.

use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cudarc::cublaslt::result::{self as lt, CublasError};
use cudarc::cublaslt::sys::{
    self, cublasComputeType_t, cublasLtMatmulDescAttributes_t as DescAttr,
    cublasLtMatmulPreferenceAttributes_t as PrefAttr, cudaDataType_t,
};
// cublasLt.h takes its transpose attributes as cublas_api.h's enum.
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use half::{bf16, f16};

use super::nvrtc::{find_versioned, preload};
use super::CudaError;

/// Environment variable naming the libcublasLt file to use.
pub const CUBLASLT_LIB_ENV: &str = "FACTORY_CUBLASLT_LIB";

/// Workspace for split-K and stream-K kernels: NVIDIA recommends at least
/// 32 MiB on Hopper (4 MiB before); one size everywhere keeps plans portable.
pub const GEMM_WORKSPACE_BYTES: usize = 32 << 20;

/// Checks that libcublasLt can be loaded (from `FACTORY_CUBLASLT_LIB`, the
/// library search path, or a toolkit in `$CUDA_HOME`, `$CUDA_PATH`,
/// /usr/local/cuda), without calling into it.
pub fn cublaslt_present() -> Result<(), CudaError> {
    let path = std::env::var_os(CUBLASLT_LIB_ENV).map(PathBuf::from);
    cublaslt_present_from(path.as_deref())
}

/// As [`cublaslt_present`], with the library file given instead of read from
/// the environment.
pub fn cublaslt_present_from(path: Option<&Path>) -> Result<(), CudaError> {
    if let Some(path) = path {
        preload(path)?;
    }
    // SAFETY: only dlopen()s candidate names; no symbol is called.
    if unsafe { sys::is_culib_present() } {
        return Ok(());
    }
    let roots = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .chain([PathBuf::from("/usr/local/cuda")]);
    for root in roots {
        for lib in ["lib64", "lib"] {
            if let Some(found) = find_versioned(&root.join(lib), "libcublasLt.so.") {
                preload(&found)?;
                // SAFETY: as above.
                if unsafe { sys::is_culib_present() } {
                    return Ok(());
                }
            }
        }
    }
    Err(CudaError::CublasLtLibraryNotFound)
}

/// Element types the products take and give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Elem {
    Bf16,
    F16,
    F32,
}

impl Elem {
    fn cuda(self) -> cudaDataType_t {
        match self {
            Elem::Bf16 => cudaDataType_t::CUDA_R_16BF,
            Elem::F16 => cudaDataType_t::CUDA_R_16F,
            Elem::F32 => cudaDataType_t::CUDA_R_32F,
        }
    }
}

/// What a plan depends on: shape, types and the pointers' alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    m: usize,
    n: usize,
    k: usize,
    input: Elem,
    output: Elem,
    /// Alignment in bytes (power of two, at most 256) of w, x, y.
    align: [u32; 3],
}

/// Descriptors and the chosen algorithm for one [`PlanKey`], destroyed on drop.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each handle was created for this plan and is destroyed only here.
        unsafe {
            for l in [self.a, self.b, self.d] {
                if !l.is_null() {
                    let _ = lt::destroy_matrix_layout(l);
                }
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// A matmul preference, destroyed on drop (only needed while planning).
struct Pref(sys::cublasLtMatmulPreference_t);

impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created by create_matmul_pref and destroyed only here.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

/// One cuBLASLt handle and workspace bound to a stream.
pub struct Gemm {
    stream: Arc<CudaStream>,
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    plans: Mutex<HashMap<PlanKey, Arc<Plan>>>,
}

// SAFETY: the handle and plan descriptors are plain host objects that cuBLASLt
// allows any thread to use (its handle is thread-safe as long as the workspace
// is not used concurrently); every product goes to the one stream, which
// orders all uses of the workspace.
unsafe impl Send for Gemm {}
// SAFETY: as above; the plan cache is behind a mutex.
unsafe impl Sync for Gemm {}
// SAFETY: plans are immutable after creation and only read by cublasLtMatmul.
unsafe impl Send for Plan {}
// SAFETY: as above.
unsafe impl Sync for Plan {}

impl std::fmt::Debug for Gemm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plans = self.plans.lock().map_or(0, |p| p.len());
        f.debug_struct("Gemm")
            .field("workspace_bytes", &GEMM_WORKSPACE_BYTES)
            .field("plans", &plans)
            .finish()
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        // Work still queued may use the plans and workspace: let it finish.
        let _ = self.stream.synchronize();
        if let Ok(p) = self.plans.get_mut() {
            p.clear();
        }
        // SAFETY: created in `new`, destroyed only here.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

fn gemm_err(what: &str, e: CublasError) -> CudaError {
    CudaError::Gemm(format!("{what}: {e}"))
}

/// Largest power of two dividing `ptr`, at most 256 (the heuristic's default).
fn alignment(ptr: u64) -> u32 {
    if ptr == 0 {
        256
    } else {
        1u32 << ptr.trailing_zeros().min(8)
    }
}

/// Buffer lengths against `y[m, n] = x[m, k] · w[n, k]ᵀ`; `Ok(false)` when
/// there is nothing to compute.
pub fn check_linear_shapes(
    x_len: usize,
    w_len: usize,
    y_len: usize,
    m: usize,
    n: usize,
    k: usize,
) -> Result<bool, CudaError> {
    let bad = |s: String| Err(CudaError::Launch(s));
    let prod = |a: usize, b: usize, what: &str| {
        a.checked_mul(b)
            .ok_or_else(|| CudaError::Launch(format!("{what} = {a} x {b} overflows")))
    };
    if m == 0 || n == 0 {
        return Ok(false);
    }
    if k == 0 {
        return bad(format!("linear {m}x{n}: k must be at least 1"));
    }
    // cuBLASLt takes sizes as u64 and leading dimensions as i64, but its
    // kernels index with 32 bits per dimension.
    for (v, what) in [(m, "m"), (n, "n"), (k, "k")] {
        if i32::try_from(v).is_err() {
            return bad(format!("linear {what} = {v} exceeds i32"));
        }
    }
    let (xs, ws, ys) = (prod(m, k, "x")?, prod(n, k, "w")?, prod(m, n, "y")?);
    if x_len < xs {
        return bad(format!("linear x has {x_len} elements < m x k = {m} x {k}"));
    }
    if w_len < ws {
        return bad(format!("linear w has {w_len} elements < n x k = {n} x {k}"));
    }
    if y_len < ys {
        return bad(format!("linear y has {y_len} elements < m x n = {m} x {n}"));
    }
    Ok(true)
}

impl Gemm {
    /// Loads cuBLASLt (dynamically); a missing libcublasLt is a CudaError, never a panic.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self, CudaError> {
        cublaslt_present()?;
        // cuBLASLt works in the current context: make it the stream's.
        stream.context().bind_to_thread()?;
        let handle = lt::create_handle().map_err(|e| gemm_err("cublasLtCreate", e))?;
        let workspace = match stream.alloc_zeros::<u8>(GEMM_WORKSPACE_BYTES) {
            Ok(w) => w,
            Err(e) => {
                // SAFETY: just created, not shared.
                let _ = unsafe { lt::destroy_handle(handle) };
                return Err(e.into());
            }
        };
        Ok(Self {
            stream,
            handle,
            workspace,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// The stream every product goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Plans cached so far (one per shape, types and alignment seen).
    pub fn cached_plans(&self) -> usize {
        self.plans.lock().map_or(0, |p| p.len())
    }

    /// y[m,n] = x[m,k] · w[n,k]^T, bf16 in and out, f32 accumulation. Row-major; w as HF stores a Linear weight ([out, in]).
    pub fn linear_bf16(
        &self,
        x: &impl DevicePtr<bf16>,
        w: &impl DevicePtr<bf16>,
        y: &mut impl DevicePtrMut<bf16>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<(), CudaError> {
        self.linear(x, w, y, (m, n, k), Elem::Bf16, Elem::Bf16)
    }

    /// Same with f32 output (the logits head).
    pub fn linear_bf16_f32(
        &self,
        x: &impl DevicePtr<bf16>,
        w: &impl DevicePtr<bf16>,
        y: &mut impl DevicePtrMut<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<(), CudaError> {
        self.linear(x, w, y, (m, n, k), Elem::Bf16, Elem::F32)
    }

    /// As [`Gemm::linear_bf16`] for f16 inputs and output.
    pub fn linear_f16(
        &self,
        x: &impl DevicePtr<f16>,
        w: &impl DevicePtr<f16>,
        y: &mut impl DevicePtrMut<f16>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<(), CudaError> {
        self.linear(x, w, y, (m, n, k), Elem::F16, Elem::F16)
    }

    /// Checks the buffers against `(m, n, k)` and enqueues the product; the
    /// element types `input` and `output` must be those of `I` and `O`.
    fn linear<I, O>(
        &self,
        x: &impl DevicePtr<I>,
        w: &impl DevicePtr<I>,
        y: &mut impl DevicePtrMut<O>,
        (m, n, k): (usize, usize, usize),
        input: Elem,
        output: Elem,
    ) -> Result<(), CudaError> {
        if !check_linear_shapes(x.len(), w.len(), y.len(), m, n, k)? {
            return Ok(());
        }
        let s = &self.stream;
        let (xp, _g1) = x.device_ptr(s);
        let (wp, _g2) = w.device_ptr(s);
        let (yp, _g3) = y.device_ptr_mut(s);
        self.run(xp, wp, yp, m, n, k, input, output)
    }

    /// Enqueues `Yᵀ = W · Xᵀ` (see the module docs) on the stream.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        x: u64,
        w: u64,
        y: u64,
        m: usize,
        n: usize,
        k: usize,
        input: Elem,
        output: Elem,
    ) -> Result<(), CudaError> {
        self.stream.context().bind_to_thread()?;
        let key = PlanKey {
            m,
            n,
            k,
            input,
            output,
            align: [alignment(w), alignment(x), alignment(y)],
        };
        let plan = self.plan(key)?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        let s = &self.stream;
        let (ws, _g) = self.workspace.device_ptr(s);
        // SAFETY: the plan's layouts describe buffers whose lengths were checked
        // against (m, n, k); the algorithm was chosen for these pointers'
        // alignment and this workspace size; beta = 0 so C (= D) is not read.
        unsafe {
            lt::matmul(
                self.handle,
                plan.desc,
                (&alpha as *const f32).cast(),
                (&beta as *const f32).cast(),
                w as *const c_void,
                plan.a,
                x as *const c_void,
                plan.b,
                y as *const c_void,
                plan.d,
                y as *mut c_void,
                plan.d,
                &plan.algo,
                ws as *mut c_void,
                GEMM_WORKSPACE_BYTES,
                s.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(|e| gemm_err(&format!("cublasLtMatmul {m}x{n}x{k}"), e))
    }

    /// The cached plan for `key`, made (descriptors + heuristic) on first use.
    fn plan(&self, key: PlanKey) -> Result<Arc<Plan>, CudaError> {
        let mut plans = self
            .plans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(p) = plans.get(&key) {
            return Ok(p.clone());
        }
        let p = Arc::new(self.make_plan(&key)?);
        plans.insert(key, p.clone());
        Ok(p)
    }

    fn make_plan(&self, key: &PlanKey) -> Result<Plan, CudaError> {
        let PlanKey { m, n, k, .. } = *key;
        let shape = format!(
            "{m}x{n}x{k} {:?}->{:?} (alignment w/x/y {:?} B)",
            key.input, key.output, key.align
        );
        let shape = &shape;
        let e = |what: &'static str| move |err| gemm_err(&format!("{what} for {shape}"), err);
        let desc = lt::create_matmul_desc(
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cudaDataType_t::CUDA_R_32F,
        )
        .map_err(e("cublasLtMatmulDescCreate"))?;
        // Wrap at once so every early return destroys what exists.
        let mut plan = Plan {
            desc,
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            d: std::ptr::null_mut(),
            // SAFETY: an all-zero algo is a valid placeholder (plain data),
            // replaced by the heuristic's before any use.
            algo: unsafe { std::mem::zeroed() },
        };
        let (op_t, op_n) = (
            cublasOperation_t::CUBLAS_OP_T,
            cublasOperation_t::CUBLAS_OP_N,
        );
        // SAFETY: desc is live; each value is the attribute's documented type.
        unsafe {
            lt::set_matmul_desc_attribute(
                desc,
                DescAttr::CUBLASLT_MATMUL_DESC_TRANSA,
                (&op_t as *const cublasOperation_t).cast(),
                size_of::<cublasOperation_t>(),
            )
            .map_err(e("TRANSA"))?;
            lt::set_matmul_desc_attribute(
                desc,
                DescAttr::CUBLASLT_MATMUL_DESC_TRANSB,
                (&op_n as *const cublasOperation_t).cast(),
                size_of::<cublasOperation_t>(),
            )
            .map_err(e("TRANSB"))?;
        }
        let (m64, n64, k64) = (m as u64, n as u64, k as u64);
        // A = w: stored k x n (ld k), used transposed. B = x: k x m (ld k). D = y: n x m (ld n).
        plan.a = lt::create_matrix_layout(key.input.cuda(), k64, n64, k as i64)
            .map_err(e("layout A"))?;
        plan.b = lt::create_matrix_layout(key.input.cuda(), k64, m64, k as i64)
            .map_err(e("layout B"))?;
        plan.d = lt::create_matrix_layout(key.output.cuda(), n64, m64, n as i64)
            .map_err(e("layout D"))?;
        let pref = Pref(lt::create_matmul_pref().map_err(e("cublasLtMatmulPreferenceCreate"))?);
        let ws = GEMM_WORKSPACE_BYTES as u64;
        let [aw, ax, ay] = key.align;
        let settings: [(PrefAttr, *const c_void, usize); 5] = [
            (
                PrefAttr::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&ws as *const u64).cast(),
                size_of::<u64>(),
            ),
            (
                PrefAttr::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                (&aw as *const u32).cast(),
                size_of::<u32>(),
            ),
            (
                PrefAttr::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                (&ax as *const u32).cast(),
                size_of::<u32>(),
            ),
            (
                PrefAttr::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                (&ay as *const u32).cast(),
                size_of::<u32>(),
            ),
            (
                PrefAttr::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                (&ay as *const u32).cast(),
                size_of::<u32>(),
            ),
        ];
        for (attr, ptr, size) in settings {
            // SAFETY: pref is live; each value is the attribute's documented
            // type (uint64 workspace, uint32 alignments) and outlives the call.
            unsafe { lt::set_matmul_pref_attribute(pref.0, attr, ptr, size) }
                .map_err(e("preference"))?;
        }
        // SAFETY: every descriptor is live; C shares D's layout.
        let found = unsafe {
            lt::get_matmul_algo_heuristic(
                self.handle,
                plan.desc,
                plan.a,
                plan.b,
                plan.d,
                plan.d,
                pref.0,
            )
        };
        match found {
            Ok(h) => plan.algo = h.algo,
            Err(CublasError(sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED)) => {
                return Err(CudaError::Gemm(format!(
                    "cuBLASLt has no algorithm for {shape}; rows of a multiple of 16 bytes \
                     and 16-byte-aligned buffers are the supported fast path"
                )))
            }
            Err(err) => return Err(e("cublasLtMatmulAlgoGetHeuristic")(err)),
        }
        tracing::debug!(%shape, "cuBLASLt plan");
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked_against_buffer_lengths() {
        assert!(check_linear_shapes(6, 12, 8, 2, 4, 3).unwrap());
        assert!(check_linear_shapes(100, 100, 100, 2, 4, 3).unwrap());
        for (x, w, y, what) in [(5, 12, 8, "x"), (6, 11, 8, "w"), (6, 12, 7, "y")] {
            let err = check_linear_shapes(x, w, y, 2, 4, 3).unwrap_err();
            assert!(
                err.to_string().contains(&format!("linear {what} has")),
                "{err}"
            );
        }
        // Nothing to compute is not an error; k = 0 is.
        assert!(!check_linear_shapes(0, 0, 0, 0, 4, 3).unwrap());
        assert!(!check_linear_shapes(0, 0, 0, 2, 0, 3).unwrap());
        assert!(check_linear_shapes(0, 0, 8, 2, 4, 0).is_err());
        // Sizes past 32 bits or whose products overflow are errors, not wraps.
        assert!(check_linear_shapes(usize::MAX, usize::MAX, usize::MAX, 1 << 31, 1, 1).is_err());
        assert!(check_linear_shapes(
            usize::MAX,
            usize::MAX,
            usize::MAX,
            i32::MAX as usize,
            i32::MAX as usize,
            i32::MAX as usize
        )
        .is_ok());
    }

    #[test]
    fn alignment_is_the_largest_power_of_two_up_to_256() {
        assert_eq!(alignment(0x7f00_0000_0000), 256);
        assert_eq!(alignment(0x7f00_0000_0080), 128);
        assert_eq!(alignment(0x7f00_0000_0012), 2);
        assert_eq!(alignment(0x7f00_0000_0010), 16);
    }

    #[test]
    fn a_missing_cublaslt_file_is_an_error_not_a_panic() {
        let err =
            cublaslt_present_from(Some(Path::new("/nonexistent/libcublasLt.so.13"))).unwrap_err();
        assert!(matches!(err, CudaError::LoadLibrary { .. }), "{err}");
    }

    /// Whatever this machine has, looking for cuBLASLt never panics: absent is
    /// `CublasLtLibraryNotFound` with a message saying what to install.
    #[test]
    fn a_missing_cublaslt_is_an_error_not_a_panic() {
        match cublaslt_present() {
            Ok(()) => eprintln!("libcublasLt is present on this machine"),
            Err(e) => {
                assert!(matches!(e, CudaError::CublasLtLibraryNotFound), "{e}");
                assert!(e.to_string().contains("libcublasLt"), "{e}");
            }
        }
    }
}

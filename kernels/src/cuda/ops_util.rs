//! Launchers for kernels/cuda/util.cu: bias add, row gather and weight fills
//! (semantics: [`crate::cuda_twin::util`]).

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use half::bf16;

use super::device::CudaDevice;
use super::module_cache::ModuleCache;
use super::nvrtc::{CompileOptions, Nvrtc};
use super::CudaError;
use crate::cuda_sources as src;

const THREADS: u32 = 256;
/// Upper bound on blocks of the grid-stride fills.
const MAX_FILL_BLOCKS: usize = 1 << 16;

fn launch_err(msg: String) -> CudaError {
    CudaError::Launch(msg)
}

fn i32_of(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| launch_err(format!("{what} = {v} exceeds i32")))
}

fn u32_of(v: usize, what: &str) -> Result<u32, CudaError> {
    u32::try_from(v).map_err(|_| launch_err(format!("{what} = {v} does not fit a grid")))
}

/// The util.cu kernels, loaded for one device.
#[derive(Debug)]
pub struct UtilKernels {
    stream: Arc<CudaStream>,
    bias_add: CudaFunction,
    gather_f32: CudaFunction,
    gather_bf16: CudaFunction,
    fill_uniform: CudaFunction,
    fill: CudaFunction,
}

impl UtilKernels {
    /// Compiles (or reads from `cache`) util.cu for `device` and loads it.
    pub fn load(
        device: &CudaDevice,
        nvrtc: &Nvrtc,
        cache: &ModuleCache,
    ) -> Result<Self, CudaError> {
        let cubin =
            cache.get_or_compile(nvrtc, &src::UTIL, device.arch, &CompileOptions::default())?;
        let m = device.ctx.load_module(Ptx::from_binary(cubin))?;
        Ok(Self {
            stream: device.stream.clone(),
            bias_add: m.load_function("bias_add_bf16")?,
            gather_f32: m.load_function("gather_rows_f32")?,
            gather_bf16: m.load_function("gather_rows_bf16")?,
            fill_uniform: m.load_function("fill_uniform_bf16")?,
            fill: m.load_function("fill_bf16")?,
        })
    }

    /// `y[r, i] += b[i]` for `rows` rows `stride` apart, `b.len()` columns.
    pub fn bias_add(
        &self,
        y: &mut impl DevicePtrMut<bf16>,
        b: &impl DevicePtr<bf16>,
        rows: usize,
        stride: usize,
    ) -> Result<(), CudaError> {
        let n = b.len();
        if rows == 0 || n == 0 {
            return Ok(());
        }
        if n > stride || y.len() < (rows - 1) * stride + n {
            return Err(launch_err(format!(
                "bias of {n} over {rows} rows {stride} apart does not fit {}",
                y.len()
            )));
        }
        let s = &self.stream;
        let (yp, _g1) = y.device_ptr_mut(s);
        let (bp, _g2) = b.device_ptr(s);
        let (n_i, st_i) = (i32_of(n, "bias")?, i32_of(stride, "stride")?);
        let cfg = LaunchConfig {
            grid_dim: (
                u32_of(n.div_ceil(THREADS as usize), "bias")?,
                u32_of(rows, "rows")?,
                1,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = s.launch_builder(&self.bias_add);
        l.arg(&yp).arg(&bp).arg(&n_i).arg(&st_i);
        // SAFETY: argument types and order match the kernel; sizes checked above.
        unsafe { l.launch(cfg) }?;
        Ok(())
    }

    fn gather<T>(
        &self,
        f: &CudaFunction,
        src: &impl DevicePtr<T>,
        rows: &impl DevicePtr<i32>,
        width: usize,
        dst: &mut impl DevicePtrMut<T>,
    ) -> Result<(), CudaError> {
        let n = rows.len();
        if n == 0 || width == 0 {
            return Ok(());
        }
        if dst.len() < n * width {
            return Err(launch_err(format!(
                "gather out {} < {n} x {width}",
                dst.len()
            )));
        }
        let s = &self.stream;
        let (sp, _g1) = src.device_ptr(s);
        let (rp, _g2) = rows.device_ptr(s);
        let (dp, _g3) = dst.device_ptr_mut(s);
        let (w, src_rows) = (i32_of(width, "width")?, i32_of(src.len() / width, "rows")?);
        let cfg = LaunchConfig {
            grid_dim: (u32_of(n, "rows")?, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = s.launch_builder(f);
        l.arg(&sp).arg(&rp).arg(&dp).arg(&w).arg(&src_rows);
        // SAFETY: argument types and order match the kernel; the kernel bounds row
        // indices by `src_rows`, the output was checked above.
        unsafe { l.launch(cfg) }?;
        Ok(())
    }

    /// `dst[i, :] = src[rows[i], :]` for f32 rows of `width`.
    pub fn gather_rows_f32(
        &self,
        src: &impl DevicePtr<f32>,
        rows: &impl DevicePtr<i32>,
        width: usize,
        dst: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        self.gather(&self.gather_f32, src, rows, width, dst)
    }

    /// `dst[i, :] = src[rows[i], :]` for bf16 rows of `width`.
    pub fn gather_rows_bf16(
        &self,
        src: &impl DevicePtr<bf16>,
        rows: &impl DevicePtr<i32>,
        width: usize,
        dst: &mut impl DevicePtrMut<bf16>,
    ) -> Result<(), CudaError> {
        self.gather(&self.gather_bf16, src, rows, width, dst)
    }

    fn fill_config(n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (
                n.div_ceil(THREADS as usize).clamp(1, MAX_FILL_BLOCKS) as u32,
                1,
                1,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Every element uniform in `[-scale, scale)` from `(seed, index)`.
    pub fn fill_uniform(
        &self,
        out: &mut impl DevicePtrMut<bf16>,
        seed: u64,
        scale: f32,
    ) -> Result<(), CudaError> {
        let n = out.len();
        if n == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (o, _g) = out.device_ptr_mut(s);
        let n64 = n as u64;
        let mut l = s.launch_builder(&self.fill_uniform);
        l.arg(&o).arg(&n64).arg(&seed).arg(&scale);
        // SAFETY: argument types and order match the kernel; it writes n elements.
        unsafe { l.launch(Self::fill_config(n)) }?;
        Ok(())
    }

    /// Every element `value` (rounded to bf16).
    pub fn fill(&self, out: &mut impl DevicePtrMut<bf16>, value: f32) -> Result<(), CudaError> {
        let n = out.len();
        if n == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (o, _g) = out.device_ptr_mut(s);
        let n64 = n as u64;
        let mut l = s.launch_builder(&self.fill);
        l.arg(&o).arg(&n64).arg(&value);
        // SAFETY: argument types and order match the kernel; it writes n elements.
        unsafe { l.launch(Self::fill_config(n)) }?;
        Ok(())
    }
}

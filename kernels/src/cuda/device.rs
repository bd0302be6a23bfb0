//! Finding and opening a CUDA device without ever panicking.

use std::sync::Arc;

use cudarc::driver::sys::{self, CUdevice_attribute, CUresult};
use cudarc::driver::{CudaContext, CudaStream, DriverError};

use super::CudaError;
use crate::cuda_sources::CudaArch;

/// An opened device: its context, a stream, and what the kernels need to know.
#[derive(Debug, Clone)]
pub struct CudaDevice {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub ordinal: usize,
    pub name: String,
    /// Compute capability.
    pub capability: (u32, u32),
    /// The architecture its kernels are compiled for.
    pub arch: CudaArch,
    pub sm_count: u32,
    pub total_memory: usize,
    /// The most shared memory one block may opt into, in bytes.
    pub max_shared_per_block: usize,
}

/// cudarc's loader panics when libcuda is absent; this checks first.
fn driver_present() -> Result<(), CudaError> {
    // SAFETY: only dlopen()s the candidate library names; no symbol is called.
    if unsafe { sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::DriverLibraryNotFound)
    }
}

fn no_device(e: &DriverError) -> bool {
    matches!(
        e.0,
        CUresult::CUDA_ERROR_NO_DEVICE | CUresult::CUDA_ERROR_INVALID_DEVICE
    )
}

/// How many CUDA devices there are: an error when the driver library is missing,
/// 0 when it is present but sees no GPU.
pub fn device_count() -> Result<usize, CudaError> {
    driver_present()?;
    match CudaContext::device_count() {
        Ok(n) => Ok(n.max(0) as usize),
        Err(e) if no_device(&e) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

impl CudaDevice {
    /// Opens device `ordinal` (its primary context and a new stream).
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| {
            if no_device(&e) {
                CudaError::NoDevice { ordinal, count }
            } else {
                e.into()
            }
        })?;
        let (major, minor) = ctx.compute_capability()?;
        let (major, minor) = (major.max(0) as u32, minor.max(0) as u32);
        if major < 8 {
            return Err(CudaError::Unsupported { major, minor });
        }
        let attr = |a| ctx.attribute(a).map(|v| v.max(0) as usize);
        let sm_count = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        let max_shared_per_block =
            attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let stream = ctx.new_stream()?;
        Ok(Self {
            name: ctx.name()?,
            total_memory: ctx.total_mem()?,
            stream,
            ordinal,
            capability: (major, minor),
            arch: CudaArch::for_device(major, minor),
            sm_count,
            max_shared_per_block,
            ctx,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever this machine has, asking for a device never panics: no libcuda
    /// is `DriverLibraryNotFound`, no GPU is `NoDevice`, a GPU opens.
    #[test]
    fn opening_a_device_is_a_result_never_a_panic() {
        match device_count() {
            Err(e) => {
                assert!(matches!(e, CudaError::DriverLibraryNotFound), "{e}");
                assert!(e.to_string().contains("CUDA driver library not found"));
                assert!(matches!(
                    CudaDevice::open(0),
                    Err(CudaError::DriverLibraryNotFound)
                ));
            }
            Ok(0) => assert!(matches!(
                CudaDevice::open(0),
                Err(CudaError::NoDevice { .. })
            )),
            Ok(n) => {
                assert!(matches!(
                    CudaDevice::open(n),
                    Err(CudaError::NoDevice { ordinal, count }) if ordinal == n && count == n
                ));
                let d = CudaDevice::open(0).expect("device 0 of a machine with GPUs");
                assert!(d.sm_count > 0 && d.arch.major >= 8);
            }
        }
    }
}

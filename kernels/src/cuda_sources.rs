//! The CUDA kernel sources (kernels/cuda/*.cu), embedded in the binary, and the
//! GPU architectures they are compiled for. Plain data: available without the
//! `cuda` feature so tests can check the list against the directory.

/// One `.cu` file: a compilation unit for NVRTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSource {
    /// File name under kernels/cuda/, e.g. `rope.cu`.
    pub file: &'static str,
    pub source: &'static str,
}

/// Headers the sources include by name (`#include "common.cuh"`), handed to NVRTC
/// from memory so no include path is needed at run time.
pub const HEADERS: &[(&str, &str)] = &[("common.cuh", include_str!("../cuda/common.cuh"))];

macro_rules! source {
    ($file:literal) => {
        KernelSource {
            file: $file,
            source: include_str!(concat!("../cuda/", $file)),
        }
    };
}

pub const EMBEDDING: KernelSource = source!("embedding.cu");
pub const RMS_NORM: KernelSource = source!("rms_norm.cu");
pub const ROPE: KernelSource = source!("rope.cu");
pub const ACTIVATION: KernelSource = source!("activation.cu");
pub const KV_CACHE: KernelSource = source!("kv_cache.cu");
pub const ATTENTION_DECODE: KernelSource = source!("attention_decode.cu");
pub const ATTENTION_PREFILL: KernelSource = source!("attention_prefill.cu");
pub const SAMPLING: KernelSource = source!("sampling.cu");
pub const UTIL: KernelSource = source!("util.cu");

/// Every kernel source; each must compile for every architecture in [`TARGETS`].
pub const ALL: &[KernelSource] = &[
    EMBEDDING,
    RMS_NORM,
    ROPE,
    ACTIVATION,
    KV_CACHE,
    ATTENTION_DECODE,
    ATTENTION_PREFILL,
    SAMPLING,
    UTIL,
];

/// A GPU architecture NVRTC compiles for (a compute capability, optionally with
/// the architecture-specific `a` features such as Hopper's wgmma).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CudaArch {
    pub major: u32,
    pub minor: u32,
    /// `sm_90a` rather than `sm_90`: code that runs only on exactly this architecture.
    pub specific: bool,
}

impl CudaArch {
    /// Ampere A100, the portable floor.
    pub const SM80: Self = Self::new(8, 0, false);
    /// Hopper H100 / H200.
    pub const SM90A: Self = Self::new(9, 0, true);
    /// Blackwell B200 / GB200.
    pub const SM100A: Self = Self::new(10, 0, true);
    /// Blackwell RTX (consumer and workstation).
    pub const SM120A: Self = Self::new(12, 0, true);

    /// An architecture from its parts.
    pub const fn new(major: u32, minor: u32, specific: bool) -> Self {
        Self {
            major,
            minor,
            specific,
        }
    }

    /// The architecture to compile for on a device of compute capability
    /// `major.minor`: the exact one, with the `a` features from Hopper on.
    pub fn for_device(major: u32, minor: u32) -> Self {
        Self::new(major, minor, major >= 9)
    }

    /// NVRTC's name for it, e.g. `sm_90a`.
    pub fn name(&self) -> String {
        format!(
            "sm_{}{}{}",
            self.major,
            self.minor,
            if self.specific { "a" } else { "" }
        )
    }
}

impl std::fmt::Display for CudaArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The architectures CI compiles every kernel for.
pub const TARGETS: &[CudaArch] = &[
    CudaArch::SM80,
    CudaArch::SM90A,
    CudaArch::SM100A,
    CudaArch::SM120A,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cu_file_is_embedded_and_every_header_too() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let cu: Vec<&String> = on_disk.iter().filter(|f| f.ends_with(".cu")).collect();
        let mut listed: Vec<&str> = ALL.iter().map(|s| s.file).collect();
        listed.sort();
        assert_eq!(cu, listed, "kernels/cuda/*.cu and cuda_sources::ALL differ");
        for h in on_disk.iter().filter(|f| f.ends_with(".cuh")) {
            assert!(HEADERS.iter().any(|(n, _)| n == h), "{h} is not in HEADERS");
        }
    }

    #[test]
    fn arch_names() {
        let names: Vec<String> = TARGETS.iter().map(CudaArch::name).collect();
        assert_eq!(names, ["sm_80", "sm_90a", "sm_100a", "sm_120a"]);
        assert_eq!(CudaArch::for_device(8, 6).name(), "sm_86");
        assert_eq!(CudaArch::for_device(9, 0), CudaArch::SM90A);
        assert_eq!(CudaArch::for_device(12, 0), CudaArch::SM120A);
    }
}

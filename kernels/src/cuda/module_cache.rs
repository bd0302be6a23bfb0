//! A disk cache of compiled kernels: NVRTC runs once per (source, architecture,
//! NVRTC version, options), later starts read the CUBIN back.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::nvrtc::{CompileOptions, Nvrtc};
use super::CudaError;
use crate::cuda_sources::{CudaArch, KernelSource, HEADERS};

/// Compiled kernels under one folder.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
}

/// Where the cache lives by default: `$FACTORY_CACHE_DIR/cuda-kernels`, else
/// `$XDG_CACHE_HOME/factory/cuda-kernels`, else `~/.cache/factory/cuda-kernels`
/// (the model cache's conventions).
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FACTORY_CACHE_DIR") {
        return PathBuf::from(d).join("cuda-kernels");
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("factory").join("cuda-kernels");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("factory").join("cuda-kernels")
}

impl ModuleCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `src` compiled for `arch` by this NVRTC with `opts`.
    pub fn path_for(
        &self,
        nvrtc: &Nvrtc,
        src: &KernelSource,
        arch: CudaArch,
        opts: &CompileOptions,
    ) -> PathBuf {
        let mut h = Sha256::new();
        let (major, minor) = nvrtc.version();
        for part in [src.file, src.source] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        for (name, text) in HEADERS {
            h.update(name.as_bytes());
            h.update(text.as_bytes());
        }
        h.update(format!("nvrtc {major}.{minor}").as_bytes());
        for a in opts.args(arch) {
            h.update(a.as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let stem = src.file.trim_end_matches(".cu");
        self.dir.join(format!("{stem}-{}-{hex}.cubin", arch.name()))
    }

    /// The CUBIN of `src` for `arch`: read from the cache, or compiled and stored.
    /// A cached file that is not an ELF image is recompiled.
    pub fn get_or_compile(
        &self,
        nvrtc: &Nvrtc,
        src: &KernelSource,
        arch: CudaArch,
        opts: &CompileOptions,
    ) -> Result<Vec<u8>, CudaError> {
        let path = self.path_for(nvrtc, src, arch, opts);
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.starts_with(b"\x7fELF") {
                tracing::debug!(path = %path.display(), "kernel cache hit");
                return Ok(bytes);
            }
            tracing::warn!(path = %path.display(), "kernel cache file is not a CUBIN; recompiling");
        }
        let started = std::time::Instant::now();
        let compiled = nvrtc.compile(src, arch, opts)?;
        tracing::info!(
            file = src.file,
            arch = %arch,
            ms = started.elapsed().as_millis() as u64,
            "compiled CUDA kernels"
        );
        self.store(&path, &compiled.cubin)?;
        Ok(compiled.cubin)
    }

    /// Writes atomically (temporary file, then rename), so a concurrent reader
    /// never sees half a file.
    fn store(&self, path: &Path, bytes: &[u8]) -> Result<(), CudaError> {
        let err = |source| CudaError::Cache {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

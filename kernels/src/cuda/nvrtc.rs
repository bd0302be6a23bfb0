//! Run-time compilation of the kernel sources with NVRTC, to CUBIN for one
//! architecture.
//!
//! libnvrtc is loaded dynamically by cudarc, which panics when the library is
//! missing; [`Nvrtc::load`] checks first and returns
//! [`CudaError::NvrtcLibraryNotFound`] instead. `FACTORY_NVRTC_LIB` may name the
//! library file (e.g. from the `nvidia-cuda-nvrtc` wheel): it and the
//! `libnvrtc-builtins` beside it are loaded by path first, and the dynamic
//! loader then resolves cudarc's `libnvrtc.so.N` to them by soname.

use std::ffi::{c_char, c_int, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cudarc::nvrtc::sys;

use super::CudaError;
use crate::cuda_sources::{CudaArch, KernelSource, HEADERS};

/// Environment variable naming the libnvrtc file to use.
pub const NVRTC_LIB_ENV: &str = "FACTORY_NVRTC_LIB";

/// Libraries loaded by path; kept for the life of the process.
static PRELOADED: Mutex<Vec<libloading::Library>> = Mutex::new(Vec::new());
static VERSION: OnceLock<(i32, i32)> = OnceLock::new();

/// Extra compiler settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CompileOptions {
    /// `-I` folders (the kernels need none; for sources that include toolkit headers).
    pub include_dirs: Vec<PathBuf>,
    /// Ask ptxas for its resource report (registers, spills, shared memory) in the log.
    pub ptxas_verbose: bool,
}

impl CompileOptions {
    /// The NVRTC command line for `arch`.
    pub fn args(&self, arch: CudaArch) -> Vec<String> {
        let mut a = vec![
            format!("--gpu-architecture={}", arch.name()),
            "--std=c++17".to_owned(),
            "-lineinfo".to_owned(),
        ];
        a.extend(
            self.include_dirs
                .iter()
                .map(|d| format!("-I{}", d.display())),
        );
        if self.ptxas_verbose {
            a.push("--ptxas-options=-v".to_owned());
        }
        a
    }
}

/// A compiled kernel file.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The CUBIN (an ELF image for one architecture).
    pub cubin: Vec<u8>,
    /// NVRTC's log (warnings; with `ptxas_verbose`, the resource report).
    pub log: String,
}

/// A loaded NVRTC.
#[derive(Debug, Clone, Copy)]
pub struct Nvrtc {
    version: (i32, i32),
}

impl Nvrtc {
    /// Loads libnvrtc from `FACTORY_NVRTC_LIB` if set, else from the system's
    /// library search path, else from a CUDA toolkit in `$CUDA_HOME`, `$CUDA_PATH`
    /// or /usr/local/cuda.
    pub fn load() -> Result<Self, CudaError> {
        if let Some(path) = std::env::var_os(NVRTC_LIB_ENV) {
            return Self::load_from(Some(Path::new(&path)));
        }
        match Self::load_from(None) {
            Err(CudaError::NvrtcLibraryNotFound) => {}
            other => return other,
        }
        let roots = ["CUDA_HOME", "CUDA_PATH"]
            .iter()
            .filter_map(std::env::var_os)
            .map(PathBuf::from)
            .chain([PathBuf::from("/usr/local/cuda")]);
        for root in roots {
            for lib in ["lib64", "lib"] {
                if let Some(found) = find_versioned(&root.join(lib), "libnvrtc.so.") {
                    return Self::load_from(Some(&found));
                }
            }
        }
        Err(CudaError::NvrtcLibraryNotFound)
    }

    /// Loads libnvrtc from `path` (and the builtins library beside it), or from the
    /// search path when `None`.
    pub fn load_from(path: Option<&Path>) -> Result<Self, CudaError> {
        if let Some(path) = path {
            preload(path)?;
            if let Some(dir) = path.parent() {
                for builtins in builtins_beside(dir) {
                    preload(&builtins)?;
                }
            }
        }
        // SAFETY: only dlopen()s candidate names; no symbol is called.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NvrtcLibraryNotFound);
        }
        if let Some(&version) = VERSION.get() {
            return Ok(Self { version });
        }
        let (mut major, mut minor) = (0 as c_int, 0 as c_int);
        // SAFETY: the library is present (checked above); both pointers are valid.
        unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result()?;
        let version = *VERSION.get_or_init(|| (major, minor));
        Ok(Self { version })
    }

    /// NVRTC's (major, minor) version.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// Compiles `src` for `arch` to CUBIN.
    pub fn compile(
        &self,
        src: &KernelSource,
        arch: CudaArch,
        opts: &CompileOptions,
    ) -> Result<Compiled, CudaError> {
        let c = |s: &str| {
            CString::new(s).map_err(|_| CudaError::Launch(format!("NUL byte in {}", src.file)))
        };
        let source = c(src.source)?;
        let name = c(src.file)?;
        let header_src = HEADERS
            .iter()
            .map(|(_, s)| c(s))
            .collect::<Result<Vec<_>, _>>()?;
        let header_names = HEADERS
            .iter()
            .map(|(n, _)| c(n))
            .collect::<Result<Vec<_>, _>>()?;
        let hs: Vec<*const c_char> = header_src.iter().map(|s| s.as_ptr()).collect();
        let hn: Vec<*const c_char> = header_names.iter().map(|s| s.as_ptr()).collect();
        let mut prog = std::mem::MaybeUninit::uninit();
        // SAFETY: every pointer refers to a live NUL-terminated string, and the
        // arrays hold HEADERS.len() entries each.
        unsafe {
            sys::nvrtcCreateProgram(
                prog.as_mut_ptr(),
                source.as_ptr(),
                name.as_ptr(),
                hs.len() as c_int,
                hs.as_ptr(),
                hn.as_ptr(),
            )
        }
        .result()?;
        // SAFETY: nvrtcCreateProgram succeeded, so prog is initialised.
        let prog = Program(unsafe { prog.assume_init() });
        let args = opts
            .args(arch)
            .iter()
            .map(|a| c(a))
            .collect::<Result<Vec<_>, _>>()?;
        let argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
        // SAFETY: prog is live; argv holds argv.len() valid strings.
        let status =
            unsafe { sys::nvrtcCompileProgram(prog.0, argv.len() as c_int, argv.as_ptr()) };
        let log = prog.log()?;
        if status != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(CudaError::Compile {
                file: src.file,
                arch,
                log: format!("{status:?}\n{log}"),
            });
        }
        let mut size = 0usize;
        // SAFETY: prog compiled; size is a valid out-pointer.
        unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) }.result()?;
        let mut cubin = vec![0u8; size];
        // SAFETY: cubin has room for `size` bytes, as NVRTC asked.
        unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast()) }.result()?;
        if cubin.is_empty() {
            return Err(CudaError::Compile {
                file: src.file,
                arch,
                log: format!("NVRTC produced no CUBIN\n{log}"),
            });
        }
        Ok(Compiled { cubin, log })
    }
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Program {
    fn log(&self) -> Result<String, CudaError> {
        let mut size = 0usize;
        // SAFETY: the program is live; size is a valid out-pointer.
        unsafe { sys::nvrtcGetProgramLogSize(self.0, &mut size) }.result()?;
        let mut buf = vec![0u8; size.max(1)];
        // SAFETY: buf holds `size` bytes.
        unsafe { sys::nvrtcGetProgramLog(self.0, buf.as_mut_ptr().cast()) }.result()?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).trim().to_owned())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.0) };
    }
}

pub(super) fn preload(path: &Path) -> Result<(), CudaError> {
    // SAFETY: loading a shared library runs its initialisers; NVIDIA's (libnvrtc,
    // libcublasLt) are benign.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| CudaError::LoadLibrary {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    PRELOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(lib);
    Ok(())
}

/// The first `PREFIX*` file in `dir` (sorted), e.g. `libnvrtc.so.13`.
pub fn find_versioned(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// `libnvrtc-builtins.so.*` files in `dir` (not the `.alt` variants).
fn builtins_beside(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc-builtins.so"))
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_file_is_an_error_not_a_panic() {
        let err = Nvrtc::load_from(Some(Path::new("/nonexistent/libnvrtc.so.13"))).unwrap_err();
        assert!(matches!(err, CudaError::LoadLibrary { .. }), "{err}");
    }

    #[test]
    fn compile_options_name_the_architecture_and_include_dirs() {
        let o = CompileOptions {
            include_dirs: vec![PathBuf::from("/x/include")],
            ptxas_verbose: true,
        };
        let a = o.args(CudaArch::SM100A);
        assert!(a.contains(&"--gpu-architecture=sm_100a".to_owned()));
        assert!(a.contains(&"-I/x/include".to_owned()));
        assert!(a.contains(&"--ptxas-options=-v".to_owned()));
    }
}

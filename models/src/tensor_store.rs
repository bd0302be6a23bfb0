//! A name -> bytes directory over memory-mapped weight files (safetensors
//! shards or a GGUF), with shape checks that name the file and the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use factory_kernels::cpu::WeightDType;
use memmap2::Mmap;

use crate::gguf::GgufFile;
use crate::tensor::Tensor;

/// Errors finding or shaping weights.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid safetensors file: {detail}")]
    Safetensors { path: PathBuf, detail: String },
    #[error("{path}: invalid index: {detail}")]
    Index { path: PathBuf, detail: String },
    #[error("{path}: tensor {name} has unsupported dtype {dtype} (supported: F32, F16, BF16)")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{path}: missing tensor {name}")]
    Missing { path: PathBuf, name: String },
    #[error("{path}: tensor {name} has shape {found:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

#[derive(Clone)]
struct Entry {
    file: usize,
    start: usize,
    len: usize,
    dtype: WeightDType,
    /// Outermost dimension first (PyTorch order).
    shape: Vec<usize>,
}

/// Every tensor of a model, by name.
pub struct TensorStore {
    files: Vec<(PathBuf, Arc<Mmap>)>,
    entries: HashMap<String, Entry>,
    /// Where a missing tensor is said to be missing from.
    origin: PathBuf,
}

fn map_file(path: &Path) -> Result<Arc<Mmap>, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    // SAFETY: read-only map of a weights file nobody is expected to modify while we run.
    let m = unsafe { Mmap::map(&f) }.map_err(io)?;
    Ok(Arc::new(m))
}

impl TensorStore {
    /// Opens a Hugging Face directory's `model.safetensors` or its sharded
    /// `model.safetensors.index.json`.
    pub fn open_safetensors_dir(dir: &Path) -> Result<Self, StoreError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = if single.is_file() {
            vec!["model.safetensors".into()]
        } else if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|source| StoreError::Io {
                path: index.clone(),
                source,
            })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| StoreError::Index {
                    path: index.clone(),
                    detail: e.to_string(),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| StoreError::Index {
                    path: index.clone(),
                    detail: "no `weight_map` object".into(),
                })?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(String::from))
                .collect();
            names.sort();
            names.dedup();
            if let Some(bad) = names.iter().find(|n| n.contains('/') || n.contains("..")) {
                return Err(StoreError::Index {
                    path: index.clone(),
                    detail: format!("shard name `{bad}` leaves the model directory"),
                });
            }
            names
        } else {
            return Err(StoreError::Io {
                path: single,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "neither model.safetensors nor model.safetensors.index.json exists",
                ),
            });
        };
        let mut store = Self {
            files: Vec::new(),
            entries: HashMap::new(),
            origin: dir.to_path_buf(),
        };
        for name in shard_names {
            store.add_safetensors(&dir.join(name))?;
        }
        Ok(store)
    }

    fn add_safetensors(&mut self, path: &Path) -> Result<(), StoreError> {
        let map = map_file(path)?;
        let st =
            safetensors::SafeTensors::deserialize(&map).map_err(|e| StoreError::Safetensors {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        let file = self.files.len();
        let base = map.as_ptr() as usize;
        for (name, view) in st.iter() {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => WeightDType::F32,
                safetensors::Dtype::F16 => WeightDType::F16,
                safetensors::Dtype::BF16 => WeightDType::BF16,
                other => {
                    return Err(StoreError::Dtype {
                        path: path.to_path_buf(),
                        name: name.to_string(),
                        dtype: format!("{other:?}"),
                    })
                }
            };
            let data = view.data();
            self.entries.insert(
                name.to_string(),
                Entry {
                    file,
                    start: data.as_ptr() as usize - base,
                    len: data.len(),
                    dtype,
                    shape: view.shape().to_vec(),
                },
            );
        }
        self.files.push((path.to_path_buf(), map.clone()));
        Ok(())
    }

    /// A directory over a GGUF file's tensors (dims reversed to PyTorch order).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, StoreError> {
        let map = map_file(&gguf.path)?;
        let entries = gguf
            .tensors
            .values()
            .map(|t| {
                let shape = t.dims.iter().rev().map(|&d| d as usize).collect();
                (
                    t.name.clone(),
                    Entry {
                        file: 0,
                        start: t.start,
                        len: t.len,
                        dtype: t.dtype,
                        shape,
                    },
                )
            })
            .collect();
        Ok(Self {
            files: vec![(gguf.path.clone(), map)],
            entries,
            origin: gguf.path.clone(),
        })
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Total bytes of all tensors.
    pub fn total_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.len as u64).sum()
    }

    fn entry(&self, name: &str) -> Result<&Entry, StoreError> {
        self.entries.get(name).ok_or_else(|| StoreError::Missing {
            path: self.origin.clone(),
            name: name.to_string(),
        })
    }

    /// A `[rows, cols]` matrix named `name`.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor, StoreError> {
        let e = self.entry(name)?;
        let (path, map) = &self.files[e.file];
        if e.shape != [rows, cols] {
            return Err(StoreError::Shape {
                path: path.clone(),
                name: name.to_string(),
                expected: vec![rows, cols],
                found: e.shape.clone(),
            });
        }
        Ok(Tensor::mapped(
            map.clone(),
            e.start,
            e.len,
            e.dtype,
            rows,
            cols,
        ))
    }

    /// A vector of `len` values named `name`, as f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, StoreError> {
        let e = self.entry(name)?;
        let (path, map) = &self.files[e.file];
        if e.shape != [len] {
            return Err(StoreError::Shape {
                path: path.clone(),
                name: name.to_string(),
                expected: vec![len],
                found: e.shape.clone(),
            });
        }
        Ok(Tensor::mapped(map.clone(), e.start, e.len, e.dtype, 1, len).to_f32_vec())
    }

    /// Like [`Self::vector`], but `None` when the tensor is absent.
    pub fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, StoreError> {
        if self.contains(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads every page of every file once so the first request does not pay
    /// for page faults; `progress(done, total)` is called as bytes are read.
    pub fn prefault(&self, progress: &mut dyn FnMut(u64, u64)) {
        let total: u64 = self.files.iter().map(|(_, m)| m.len() as u64).sum();
        let mut done = 0u64;
        for (_, map) in &self.files {
            let _ = map.advise(memmap2::Advice::WillNeed);
            for chunk in map.chunks(8 << 20) {
                let mut acc = 0u8;
                for page in chunk.iter().step_by(4096) {
                    acc ^= *page;
                }
                std::hint::black_box(acc);
                done += chunk.len() as u64;
                progress(done, total);
            }
        }
    }
}

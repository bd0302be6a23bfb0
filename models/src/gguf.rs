//! GGUF (v2/v3) reader: metadata and tensor directory over a memory map.
//!
//! The file is untrusted input: every count, length and offset is checked
//! against the file's size before use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use factory_kernels::cpu::WeightDType;
use memmap2::Mmap;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// No real model has more: caps allocations driven by header counts.
const MAX_DIMS: u32 = 8;

/// Errors reading a GGUF file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a GGUF file (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3)")]
    Version { path: PathBuf, version: u32 },
    #[error("{path}: truncated or corrupt header at byte {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: usize,
        what: String,
    },
    #[error("{path}: tensor {name}: unsupported ggml type {ggml_type} ({type_name})")]
    UnsupportedType {
        path: PathBuf,
        name: String,
        ggml_type: u32,
        type_name: &'static str,
    },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as an f64, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor's bytes live and what they hold.
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub dtype: WeightDType,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

/// An open GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: BTreeMap<String, GgufTensorInfo>,
    mmap: Mmap,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; a file truncated underneath us by another
        // process is outside what any mmap-based loader can defend against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (version, metadata, tensors) = parse(&mmap, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            mmap,
        })
    }

    /// The bytes of a tensor.
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> &[u8] {
        &self.mmap[info.start..info.start + info.len]
    }

    /// Metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// Total bytes of all tensors.
    pub fn tensor_bytes_total(&self) -> usize {
        self.tensors.values().map(|t| t.len).sum()
    }
}

type Parsed = (
    u32,
    BTreeMap<String, GgufValue>,
    BTreeMap<String, GgufTensorInfo>,
);

/// Parses the header of a GGUF image (the whole file's bytes).
pub fn parse(bytes: &[u8], path: &Path) -> Result<Parsed, GgufError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        path,
    };
    if r.take(4)? != MAGIC {
        return Err(GgufError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version {
            path: path.to_path_buf(),
            version,
        });
    }
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty, 0)?;
        metadata.insert(key, value);
    }
    let mut raw = Vec::new();
    for _ in 0..n_tensors {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(r.corrupt(format!("tensor {name} has {n_dims} dimensions")));
        }
        let dims = (0..n_dims)
            .map(|_| r.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let ggml_type = r.u32()?;
        let offset = r.u64()?;
        raw.push((name, dims, ggml_type, offset));
    }
    let alignment = metadata
        .get("general.alignment")
        .and_then(GgufValue::as_u64)
        .filter(|a| *a > 0 && a.is_power_of_two())
        .unwrap_or(DEFAULT_ALIGNMENT);
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    let mut tensors = BTreeMap::new();
    for (name, dims, ggml_type, offset) in raw {
        let dtype = ggml_dtype(ggml_type).ok_or_else(|| GgufError::UnsupportedType {
            path: path.to_path_buf(),
            name: name.clone(),
            ggml_type,
            type_name: ggml_type_name(ggml_type),
        })?;
        let elems = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| r.corrupt(format!("tensor {name}: dimensions overflow")))?;
        let block = dtype.block_elems() as u64;
        if dims[0] % block != 0 {
            return Err(r.corrupt(format!(
                "tensor {name}: row of {} elements is not a whole number of {dtype:?} blocks",
                dims[0]
            )));
        }
        let len = elems / block * dtype.block_bytes() as u64;
        let start = data_start
            .checked_add(offset)
            .filter(|s| s.checked_add(len).is_some_and(|e| e <= bytes.len() as u64))
            .ok_or_else(|| {
                r.corrupt(format!(
                    "tensor {name}: data at offset {offset} (+{len} bytes) lies past the end of the file"
                ))
            })?;
        tensors.insert(
            name.clone(),
            GgufTensorInfo {
                name,
                dims,
                dtype,
                start: start as usize,
                len: len as usize,
            },
        );
    }
    Ok((version, metadata, tensors))
}

/// The weight dtype of a ggml type id, where supported.
fn ggml_dtype(t: u32) -> Option<WeightDType> {
    Some(match t {
        0 => WeightDType::F32,
        1 => WeightDType::F16,
        2 => WeightDType::Q4_0,
        3 => WeightDType::Q4_1,
        8 => WeightDType::Q8_0,
        30 => WeightDType::BF16,
        _ => return None,
    })
}

/// A ggml type's name, for error messages.
fn ggml_type_name(t: u32) -> &'static str {
    const NAMES: [&str; 31] = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
        "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
        "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16",
    ];
    NAMES.get(t as usize).copied().unwrap_or("unknown")
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

/// Nested arrays deeper than this are corrupt files, not models.
const MAX_NESTING: u32 = 4;

impl<'a> Reader<'a> {
    fn corrupt(&self, what: String) -> GgufError {
        GgufError::Corrupt {
            path: self.path.to_path_buf(),
            offset: self.pos,
            what,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], GgufError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.corrupt(format!("needs {n} more bytes")))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Result<usize, GgufError> {
        let n = self.u64()?;
        // A length can never exceed the bytes left, whatever it counts.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len() - self.pos)
            .ok_or_else(|| self.corrupt(format!("length {n} exceeds the file")))
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.len()?;
        let s = self.take(n)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<GgufValue, GgufError> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>()?[0]),
            1 => GgufValue::I8(self.array::<1>()?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array()?)),
            7 => GgufValue::Bool(self.array::<1>()?[0] != 0),
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(self.corrupt("arrays nested too deeply".into()));
                }
                let ety = self.u32()?;
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(ety, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            t => return Err(self.corrupt(format!("unknown metadata value type {t}"))),
        })
    }
}

//! Weight tensors: bytes borrowed from a shared memory map, or owned.

use std::sync::Arc;

use factory_kernels::cpu::{WeightDType, WeightMatrix};
use memmap2::Mmap;

/// Where a tensor's bytes live.
#[derive(Clone)]
enum Bytes {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
    Owned(Arc<Vec<u8>>),
}

/// A 2-D (or 1-D, `rows == 1`) weight tensor in its stored format.
#[derive(Clone)]
pub struct Tensor {
    pub dtype: WeightDType,
    pub rows: usize,
    pub cols: usize,
    bytes: Bytes,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {}x{})", self.dtype, self.rows, self.cols)
    }
}

impl Tensor {
    /// A tensor over `len` bytes of `map` from `start`; the caller has checked
    /// that the range holds `rows * cols` elements of `dtype`.
    pub fn mapped(
        map: Arc<Mmap>,
        start: usize,
        len: usize,
        dtype: WeightDType,
        rows: usize,
        cols: usize,
    ) -> Self {
        Self {
            dtype,
            rows,
            cols,
            bytes: Bytes::Mapped { map, start, len },
        }
    }

    /// A tensor owning its bytes.
    pub fn owned(data: Vec<u8>, dtype: WeightDType, rows: usize, cols: usize) -> Self {
        Self {
            dtype,
            rows,
            cols,
            bytes: Bytes::Owned(Arc::new(data)),
        }
    }

    /// The raw bytes.
    pub fn data(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
            Bytes::Owned(v) => v,
        }
    }

    /// Bytes used by the tensor.
    pub fn byte_len(&self) -> usize {
        self.data().len()
    }

    /// The tensor as a matrix for the kernels. Shapes were checked at load.
    pub fn matrix(&self) -> WeightMatrix<'_> {
        WeightMatrix {
            dtype: self.dtype,
            rows: self.rows,
            cols: self.cols,
            data: self.data(),
        }
    }

    /// All elements as f32 (for small tensors: norms, biases).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let m = self.matrix();
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            m.dequantize_row(r, o);
        }
        out
    }

    /// The same values converted to another plain-float dtype (owned).
    pub fn to_f32_tensor(&self) -> Tensor {
        let v = self.to_f32_vec();
        Tensor::owned(
            bytemuck::cast_slice(&v).to_vec(),
            WeightDType::F32,
            self.rows,
            self.cols,
        )
    }
}

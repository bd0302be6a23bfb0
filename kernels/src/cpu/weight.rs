//! A weight matrix as raw bytes (often straight from a memory map) plus its dtype.

use half::{bf16, f16};

/// Element or block format of a weight matrix's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightDType {
    F32,
    F16,
    BF16,
    /// ggml Q8_0: blocks of 32, an f16 scale and 32 i8.
    Q8_0,
    /// ggml Q4_0: blocks of 32, an f16 scale and 16 bytes of nibbles (offset 8).
    Q4_0,
    /// ggml Q4_1: blocks of 32, f16 scale and f16 minimum, 16 bytes of nibbles.
    Q4_1,
}

impl WeightDType {
    /// Elements per block (1 for plain floats).
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q8_0 | Self::Q4_0 | Self::Q4_1 => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
        }
    }

    /// Bytes of one row of `cols` elements, or `None` if `cols` is not a whole
    /// number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        let be = self.block_elems();
        cols.is_multiple_of(be)
            .then(|| cols / be * self.block_bytes())
    }

    /// Whether the format is block-quantized.
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }
}

/// Why a byte buffer cannot be viewed as a weight matrix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeightError {
    #[error("{cols} columns is not a multiple of the {dtype:?} block size {block}")]
    RaggedBlocks {
        dtype: WeightDType,
        cols: usize,
        block: usize,
    },
    #[error("expected {expected} bytes for a {rows}x{cols} {dtype:?} matrix, found {found}")]
    WrongSize {
        dtype: WeightDType,
        rows: usize,
        cols: usize,
        expected: usize,
        found: usize,
    },
}

/// A row-major `[rows, cols]` weight matrix; `y = x · Wᵀ` multiplies by it.
#[derive(Debug, Clone, Copy)]
pub struct WeightMatrix<'a> {
    pub dtype: WeightDType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> WeightMatrix<'a> {
    /// Views `data` as a `[rows, cols]` matrix, checking its size.
    pub fn new(
        dtype: WeightDType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, WeightError> {
        let row_bytes = dtype.row_bytes(cols).ok_or(WeightError::RaggedBlocks {
            dtype,
            cols,
            block: dtype.block_elems(),
        })?;
        let expected = row_bytes * rows;
        if data.len() != expected {
            return Err(WeightError::WrongSize {
                dtype,
                rows,
                cols,
                expected,
                found: data.len(),
            });
        }
        Ok(Self {
            dtype,
            rows,
            cols,
            data,
        })
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Dequantizes row `r` into `out` (length `cols`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.dtype, self.row(r), out);
    }
}

/// Dequantizes one row of bytes in `dtype` into `out`.
pub fn dequantize_row(dtype: WeightDType, row: &[u8], out: &mut [f32]) {
    use crate::cpu::quant;
    match dtype {
        WeightDType::F32 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        WeightDType::F16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        WeightDType::BF16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        WeightDType::Q8_0 => quant::dequantize_q8_0(row, out),
        WeightDType::Q4_0 => quant::dequantize_q4_0(row, out),
        WeightDType::Q4_1 => quant::dequantize_q4_1(row, out),
    }
}

//! A bounds-checked walk over a GGUF header, for precise load errors.
//!
//! Layout (GGUF v2/v3, little endian; ggml `docs/gguf.md`): magic `GGUF`, u32 version, u64
//! tensor count, u64 metadata count, the metadata key/values, then per tensor: name, u32 n_dims,
//! u64 dims, u32 GGML type, u64 offset; tensor data starts at the next multiple of
//! `general.alignment` (default 32). This module reads just enough to check that every tensor's
//! type is one the engine computes with and that every tensor's bytes lie inside the file, so
//! the error names the file and the tensor. candle's reader then does the real loading.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{EngineError, Result};

/// GGML tensor types the engine loads (candle's CPU kernels cover these).
pub(crate) const GGML_TYPES_SUPPORTED: &[&str] = &[
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K",
];

/// `(name, block size in elements, bytes per block)` by GGML type id; `None` for ids without a
/// layout we know (the name is still reported).
fn ggml_type(id: u32) -> (String, Option<(u64, u64)>) {
    let (name, layout) = match id {
        0 => ("F32", Some((1, 4))),
        1 => ("F16", Some((1, 2))),
        2 => ("Q4_0", Some((32, 18))),
        3 => ("Q4_1", Some((32, 20))),
        6 => ("Q5_0", Some((32, 22))),
        7 => ("Q5_1", Some((32, 24))),
        8 => ("Q8_0", Some((32, 34))),
        9 => ("Q8_1", Some((32, 36))),
        10 => ("Q2_K", Some((256, 84))),
        11 => ("Q3_K", Some((256, 110))),
        12 => ("Q4_K", Some((256, 144))),
        13 => ("Q5_K", Some((256, 176))),
        14 => ("Q6_K", Some((256, 210))),
        15 => ("Q8_K", Some((256, 292))),
        16 => ("IQ2_XXS", None),
        17 => ("IQ2_XS", None),
        18 => ("IQ3_XXS", None),
        19 => ("IQ1_S", None),
        20 => ("IQ4_NL", None),
        21 => ("IQ3_S", None),
        22 => ("IQ2_S", None),
        23 => ("IQ4_XS", None),
        24 => ("I8", None),
        25 => ("I16", None),
        26 => ("I32", None),
        27 => ("I64", None),
        28 => ("F64", None),
        29 => ("IQ1_M", None),
        30 => ("BF16", Some((1, 2))),
        34 => ("TQ1_0", None),
        35 => ("TQ2_0", None),
        39 => ("MXFP4", None),
        other => return (format!("#{other}"), None),
    };
    (name.to_string(), layout)
}

struct HeaderReader<R> {
    inner: R,
    file_len: u64,
    pos: u64,
}

impl<R: Read> HeaderReader<R> {
    /// Read `n` bytes or report where the file ended.
    fn bytes(&mut self, n: u64, what: &str) -> std::result::Result<Vec<u8>, String> {
        if self.pos.saturating_add(n) > self.file_len {
            return Err(format!(
                "{what} needs {n} bytes at offset {}, file has {}",
                self.pos, self.file_len
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("{what} at offset {}: {e}", self.pos))?;
        self.pos += n;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let len = self.u64(what)?;
        let b = self.bytes(len, what)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Skip one metadata value of GGUF value type `ty`, returning it when it is a small integer
    /// (for `general.alignment`).
    fn skip_value(
        &mut self,
        ty: u32,
        what: &str,
        depth: u32,
    ) -> std::result::Result<Option<u64>, String> {
        let fixed = match ty {
            0 | 1 | 7 => Some(1), // u8, i8, bool
            2 | 3 => Some(2),     // u16, i16
            4..=6 => Some(4),     // u32, i32, f32
            10..=12 => Some(8),   // u64, i64, f64
            _ => None,
        };
        if let Some(n) = fixed {
            let b = self.bytes(n, what)?;
            let mut a = [0u8; 8];
            a[..b.len()].copy_from_slice(&b);
            return Ok(Some(u64::from_le_bytes(a)));
        }
        match ty {
            8 => {
                self.string(what)?;
                Ok(None)
            }
            9 if depth < 4 => {
                let elem_ty = self.u32(what)?;
                let count = self.u64(what)?;
                for _ in 0..count {
                    self.skip_value(elem_ty, what, depth + 1)?;
                }
                Ok(None)
            }
            other => Err(format!("{what} has unknown value type {other}")),
        }
    }
}

/// Check a GGUF file's header and tensor extents. Errors: missing file, bad magic/version,
/// truncated header or tensor data, tensor type the engine does not support.
pub(crate) fn check(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
    let mut r = HeaderReader {
        inner: BufReader::new(file),
        file_len,
        pos: 0,
    };
    let truncated = |detail: String| EngineError::TruncatedGguf {
        path: path.to_path_buf(),
        detail,
    };
    let magic = r.bytes(4, "magic").map_err(truncated)?;
    if magic != b"GGUF" {
        return Err(EngineError::InvalidGguf {
            path: path.to_path_buf(),
            detail: format!("bad magic {magic:?} (expected \"GGUF\")"),
        });
    }
    let version = r.u32("version").map_err(truncated)?;
    if !(2..=3).contains(&version) {
        return Err(EngineError::InvalidGguf {
            path: path.to_path_buf(),
            detail: format!("version {version} is not supported (expected 2 or 3)"),
        });
    }
    let tensor_count = r.u64("tensor count").map_err(truncated)?;
    let kv_count = r.u64("metadata count").map_err(truncated)?;
    let mut alignment = 32u64;
    for i in 0..kv_count {
        let key = r.string(&format!("metadata key #{i}")).map_err(truncated)?;
        let what = format!("metadata {key}");
        let ty = r.u32(&what).map_err(truncated)?;
        let value = r.skip_value(ty, &what, 0).map_err(|detail| {
            if detail.contains("unknown value type") {
                EngineError::InvalidGguf {
                    path: path.to_path_buf(),
                    detail,
                }
            } else {
                truncated(detail)
            }
        })?;
        if key == "general.alignment" {
            alignment = value.filter(|a| *a > 0).unwrap_or(32);
        }
    }
    let mut tensors = Vec::new();
    for i in 0..tensor_count {
        let name = r.string(&format!("tensor info #{i}")).map_err(truncated)?;
        let what = format!("tensor info {name}");
        let n_dims = r.u32(&what).map_err(truncated)?;
        if n_dims > 4 {
            return Err(EngineError::InvalidGguf {
                path: path.to_path_buf(),
                detail: format!("tensor {name} has {n_dims} dimensions (at most 4)"),
            });
        }
        let mut elems = 1u64;
        for _ in 0..n_dims {
            elems = elems.saturating_mul(r.u64(&what).map_err(truncated)?);
        }
        let ty = r.u32(&what).map_err(truncated)?;
        let offset = r.u64(&what).map_err(truncated)?;
        tensors.push((name, elems, ty, offset));
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    for (name, elems, ty, offset) in tensors {
        let (type_name, layout) = ggml_type(ty);
        let supported = GGML_TYPES_SUPPORTED.contains(&type_name.as_str());
        let Some((block, bytes_per_block)) = layout.filter(|_| supported) else {
            return Err(EngineError::UnsupportedTensorType {
                path: path.to_path_buf(),
                tensor: name,
                dtype: type_name,
                hint: Some(format!("supported: {}", GGML_TYPES_SUPPORTED.join(", "))),
            });
        };
        if elems % block != 0 {
            return Err(EngineError::InvalidGguf {
                path: path.to_path_buf(),
                detail: format!("tensor {name}: {elems} elements is not a multiple of the {type_name} block size {block}"),
            });
        }
        let size = elems / block * bytes_per_block;
        let start = data_start.saturating_add(offset);
        if start.saturating_add(size) > file_len {
            return Err(truncated(format!(
                "tensor {name} needs {size} bytes at offset {start}, file has {file_len}"
            )));
        }
    }
    Ok(())
}

//! A streaming GGUF v3 writer: header, metadata and tensor table first, then each tensor's
//! bytes as the caller produces them, so a model is never held in memory as a whole.
//!
//! Layout (ggml `docs/gguf.md`, little endian): magic `GGUF`, u32 version 3, u64 tensor count,
//! u64 metadata count; metadata as (string key, u32 value type, value); per tensor: name,
//! u32 n_dims, u64 dims innermost first (`ne[0]` = row length), u32 GGML type, u64 offset
//! relative to the data section; padding to [`ALIGNMENT`]; the tensor data, each tensor
//! padded to [`ALIGNMENT`]. Strings are u64 length + UTF-8 bytes.
//!
//! candle's `gguf_file::write` writes version 2 and needs every tensor quantized up front;
//! this writer exists for the version and the streaming. Invariant: [`GgufWriter::finish`]
//! fails unless every declared tensor was written with exactly its declared size.

use std::io::Write;

use candle_core::quantized::GgmlDType;

/// Tensor data alignment (`general.alignment` default).
pub const ALIGNMENT: u64 = 32;

/// A metadata value of one of the GGUF types this writer needs.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    StringArray(Vec<String>),
    I32Array(Vec<i32>),
}

impl MetaValue {
    /// GGUF value type ids (`gguf_type`).
    fn type_id(&self) -> u32 {
        match self {
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::StringArray(_) | MetaValue::I32Array(_) => 9,
        }
    }

    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        match self {
            MetaValue::U32(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::I32(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::F32(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::Bool(v) => w.write_all(&[u8::from(*v)]),
            MetaValue::String(s) => write_string(w, s),
            MetaValue::StringArray(items) => {
                w.write_all(&8u32.to_le_bytes())?;
                w.write_all(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|s| write_string(w, s))
            }
            MetaValue::I32Array(items) => {
                w.write_all(&5u32.to_le_bytes())?;
                w.write_all(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))
            }
        }
    }
}

/// GGML type ids (`ggml_type`) of the types candle can quantize to.
pub fn ggml_type_id(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
}

/// Bytes a tensor of `dtype` with `elements` values occupies (`elements` a multiple of the
/// block size).
pub fn tensor_bytes(dtype: GgmlDType, elements: usize) -> u64 {
    (elements / dtype.block_size() * dtype.type_size()) as u64
}

/// One entry of the tensor table.
#[derive(Debug, Clone)]
pub struct TensorDecl {
    pub name: String,
    /// Outermost first, as candle and PyTorch order them: `(out_features, in_features)`.
    pub shape: Vec<usize>,
    pub dtype: GgmlDType,
}

impl TensorDecl {
    pub fn bytes(&self) -> u64 {
        tensor_bytes(self.dtype, self.shape.iter().product())
    }
}

/// Writes one GGUF file; see the module docs for the order of calls.
pub struct GgufWriter<W: Write> {
    out: W,
    tensors: Vec<TensorDecl>,
    next: usize,
}

/// What went wrong while writing: an I/O error or a caller bug (wrong tensor order or size).
#[derive(Debug)]
pub enum WriteError {
    Io(std::io::Error),
    Order(String),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Io(e) => write!(f, "{e}"),
            WriteError::Order(s) => f.write_str(s),
        }
    }
}

impl<W: Write> GgufWriter<W> {
    /// Write the header, metadata and tensor table; tensors must then be written in the order
    /// of `tensors`.
    pub fn start(
        mut out: W,
        metadata: &[(String, MetaValue)],
        tensors: Vec<TensorDecl>,
    ) -> Result<Self, WriteError> {
        let mut header = Vec::new();
        header.extend_from_slice(b"GGUF");
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            write_string(&mut header, key)?;
            header.extend_from_slice(&value.type_id().to_le_bytes());
            value.write_to(&mut header)?;
        }
        let mut offset = 0u64;
        for t in &tensors {
            write_string(&mut header, &t.name)?;
            header.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &dim in t.shape.iter().rev() {
                header.extend_from_slice(&(dim as u64).to_le_bytes());
            }
            header.extend_from_slice(&ggml_type_id(t.dtype).to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset += padded(t.bytes());
        }
        let pad = padded(header.len() as u64) - header.len() as u64;
        header.resize(header.len() + pad as usize, 0);
        out.write_all(&header)?;
        Ok(Self {
            out,
            tensors,
            next: 0,
        })
    }

    /// The declared tensors, in file order.
    pub fn tensors(&self) -> &[TensorDecl] {
        &self.tensors
    }

    /// Write the data of the next declared tensor.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), WriteError> {
        let Some(decl) = self.tensors.get(self.next) else {
            return Err(WriteError::Order(format!(
                "tensor {name} written after all {} declared tensors",
                self.tensors.len()
            )));
        };
        if decl.name != name || decl.bytes() != data.len() as u64 {
            return Err(WriteError::Order(format!(
                "tensor {name} ({} bytes) written where {} ({} bytes) was declared",
                data.len(),
                decl.name,
                decl.bytes()
            )));
        }
        self.out.write_all(data)?;
        let pad = padded(data.len() as u64) - data.len() as u64;
        self.out.write_all(&vec![0u8; pad as usize])?;
        self.next += 1;
        Ok(())
    }

    /// Check that every tensor was written and flush; returns the underlying writer.
    pub fn finish(mut self) -> Result<W, WriteError> {
        if self.next != self.tensors.len() {
            return Err(WriteError::Order(format!(
                "only {} of {} declared tensors written",
                self.next,
                self.tensors.len()
            )));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

fn padded(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn write_string(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::{Content, Value};
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    #[test]
    fn candle_reads_back_what_we_write() {
        let w = Tensor::arange(0f32, 64.0, &Device::Cpu)
            .and_then(|t| t.reshape((2, 32)))
            .unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let data = q.data().unwrap().into_owned();
        let norm = [1f32, 2.0, 3.0];
        let norm_bytes: Vec<u8> = norm.iter().flat_map(|v| v.to_le_bytes()).collect();
        let metadata = vec![
            (
                "general.architecture".to_string(),
                MetaValue::String("llama".into()),
            ),
            ("a.u32".to_string(), MetaValue::U32(7)),
            (
                "a.list".to_string(),
                MetaValue::StringArray(vec!["x".into(), "y z".into()]),
            ),
            ("a.types".to_string(), MetaValue::I32Array(vec![1, 3])),
            ("a.flag".to_string(), MetaValue::Bool(true)),
        ];
        let decls = vec![
            TensorDecl {
                name: "w".into(),
                shape: vec![2, 32],
                dtype: GgmlDType::Q8_0,
            },
            TensorDecl {
                name: "norm".into(),
                shape: vec![3],
                dtype: GgmlDType::F32,
            },
        ];
        let mut writer = GgufWriter::start(Vec::new(), &metadata, decls).unwrap();
        assert!(writer.write_tensor("norm", &norm_bytes).is_err());
        writer.write_tensor("w", &data).unwrap();
        writer.write_tensor("norm", &norm_bytes).unwrap();
        let bytes = writer.finish().unwrap();
        assert_eq!(
            u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            3
        );

        let mut cursor = std::io::Cursor::new(bytes);
        let content = Content::read(&mut cursor).unwrap();
        assert_eq!(content.metadata["a.u32"].to_u32().unwrap(), 7);
        let Value::Array(list) = &content.metadata["a.list"] else {
            panic!("a.list is not an array")
        };
        assert_eq!(list[1].to_string().unwrap(), "y z");
        let back = content.tensor(&mut cursor, "w", &Device::Cpu).unwrap();
        assert_eq!(back.shape().dims(), &[2, 32]);
        let diff = (back.dequantize(&Device::Cpu).unwrap() - &w)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
            .unwrap();
        assert!(diff < 0.3, "{diff}");
        let n = content.tensor(&mut cursor, "norm", &Device::Cpu).unwrap();
        let n = n
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(n, norm);
    }

    #[test]
    fn finishing_early_is_an_error() {
        let decls = vec![TensorDecl {
            name: "norm".into(),
            shape: vec![4],
            dtype: GgmlDType::F32,
        }];
        let writer = GgufWriter::start(Vec::new(), &[], decls).unwrap();
        assert!(writer.finish().is_err());
    }
}

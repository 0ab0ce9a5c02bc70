//! The preallocated key/value cache, an explicit argument of every forward pass.
//!
//! One `(num_kv_heads, capacity, head_dim)` tensor for keys and one for values per layer, f32
//! or, on the CPU, f16 ([`KvType`]), allocated once at the capacity the caller chooses (the longest prompt plus generation it
//! intends to run). A forward pass at `start_pos` writes its keys/values at
//! `start_pos..start_pos + seq` and attends over `0..start_pos + seq`; starting before the end
//! (`start_pos < len`) rewinds, which is how a caller reuses a cache for a new prompt.
//! Invariant: positions `0..len` hold valid entries.

use candle_core::{DType, Device, Layout, Result as CandleResult, Storage, StorageRef, Tensor};
use half::f16;

use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};

/// The number type of a cache's keys and values.
///
/// `F32` (the default) keeps the keys and values exactly as computed. `F16` rounds each to
/// half precision (to nearest) as it is written, llama.cpp's default cache type: half the
/// memory, and half the bytes a decode step's attention reads (which is most of a batched
/// step of a small model at a few hundred positions); the attention widens them back exactly
/// and computes in f32 as before, so every path (prefill, decode, batched, speculative) still
/// gives a position the same bits, but the logits differ slightly from an f32 cache's. Only on
/// the CPU: other devices keep f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KvType {
    #[default]
    F32,
    F16,
}

impl KvType {
    fn dtype(self) -> DType {
        match self {
            KvType::F32 => DType::F32,
            KvType::F16 => DType::F16,
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            _ => Err(EngineError::InvalidRequest {
                field: "kv cache type".into(),
                problem: format!("{s:?} is neither f32 nor f16"),
            }),
        }
    }
}

/// Keys and values of every layer for positions `0..len`, with room for `capacity`.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: keys and values, each `(num_kv_heads, capacity, head_dim)`.
    layers: Vec<(Tensor, Tensor)>,
    capacity: usize,
    len: usize,
}

impl KvCache {
    /// Allocate a zeroed f32 cache for `capacity` positions.
    pub fn new(config: &LlamaConfig, capacity: usize, device: &Device) -> Result<Self> {
        Self::with_type(config, capacity, device, KvType::F32)
    }

    /// Allocate a zeroed cache for `capacity` positions holding `kind` on the CPU (f32 on
    /// other devices).
    pub fn with_type(
        config: &LlamaConfig,
        capacity: usize,
        device: &Device,
        kind: KvType,
    ) -> Result<Self> {
        let shape = (config.num_kv_heads, capacity, config.head_dim);
        let dtype = match device.is_cpu() {
            true => kind.dtype(),
            false => DType::F32,
        };
        let layers = (0..config.num_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, dtype, device)?,
                    Tensor::zeros(shape, dtype, device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            capacity,
            len: 0,
        })
    }

    /// Number of positions holding valid entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of positions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// What the cache holds (f32 on devices other than the CPU, whatever was asked).
    pub fn kv_type(&self) -> KvType {
        match self.layers.first().map(|(k, _)| k.dtype()) {
            Some(DType::F16) => KvType::F16,
            _ => KvType::F32,
        }
    }

    /// Forget every position (the memory stays allocated).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Check that a pass of `seq_len` tokens may start at `start_pos`.
    pub(crate) fn check_room(&self, start_pos: usize, seq_len: usize) -> Result<()> {
        if start_pos > self.len {
            return Err(EngineError::CacheGap {
                cached: self.len,
                start_pos,
            });
        }
        let needed = start_pos + seq_len;
        if needed > self.capacity {
            return Err(EngineError::CacheFull {
                capacity: self.capacity,
                needed,
            });
        }
        Ok(())
    }

    /// Write `k`, `v` (`(num_kv_heads, seq, head_dim)`, contiguous) of `layer` at `start_pos` and
    /// return views of all keys and values up to the end of the write, each
    /// `(num_kv_heads, start_pos + seq, head_dim)`.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        start_pos: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let seq_len = k.dim(1)?;
        let (k_cache, v_cache) = &self.layers[layer];
        // Rounded to the cache's type (to nearest, as `write_position` does) where it differs.
        k_cache.slice_set(&k.to_dtype(k_cache.dtype())?, 1, start_pos)?;
        v_cache.slice_set(&v.to_dtype(v_cache.dtype())?, 1, start_pos)?;
        let end = start_pos + seq_len;
        Ok((k_cache.narrow(1, 0, end)?, v_cache.narrow(1, 0, end)?))
    }

    /// Write one position's keys and values of `layer` in place on the CPU: `k` and `v` hold
    /// `(num_kv_heads, head_dim)` values each, written at `pos` (what [`Self::append`] does for
    /// one position, without building tensors: a batched decode step writes one position of
    /// each of its sequences per layer). Fails for a cache that is not f32 in CPU memory.
    pub(crate) fn write_position(
        &mut self,
        layer: usize,
        pos: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<()> {
        let (k_cache, v_cache) = &self.layers[layer];
        let (heads, capacity, head_dim) = k_cache.dims3()?;
        if pos >= capacity || k.len() != heads * head_dim || v.len() != k.len() {
            return Err(EngineError::InvalidRequest {
                field: "kv_cache".into(),
                problem: format!(
                    "cannot write {} keys and {} values at position {pos} of a ({heads}, \
                     {capacity}, {head_dim}) cache",
                    k.len(),
                    v.len()
                ),
            });
        }
        for (cache, src) in [(k_cache, k), (v_cache, v)] {
            cache.inplace_op1(&WritePosition {
                src,
                pos,
                capacity,
                head_dim,
            })?;
        }
        Ok(())
    }

    /// Read access to the raw `(num_kv_heads, capacity, head_dim)` keys and values of `layer`
    /// when the cache lives in CPU memory (f32 or f16); `None` otherwise. Several caches' views may
    /// be held at once (batched decode attends over all of them in one call).
    pub(crate) fn cpu_layer(&self, layer: usize) -> Option<CpuLayer<'_>> {
        let (k_cache, v_cache) = &self.layers[layer];
        let (k, k_layout) = k_cache.storage_and_layout();
        let (v, v_layout) = v_cache.storage_and_layout();
        let view = CpuLayer {
            k_range: k_layout.contiguous_offsets()?,
            v_range: v_layout.contiguous_offsets()?,
            k,
            v,
        };
        (kv_values(&view.k, view.k_range).is_some() && kv_values(&view.v, view.v_range).is_some())
            .then_some(view)
    }

    /// Replace this cache's contents with positions `0..len` of `src` (same model).
    pub(crate) fn copy_prefix_from(&mut self, src: &KvCache, len: usize) -> Result<()> {
        if src.kv_type() != self.kv_type() {
            return Err(EngineError::InvalidRequest {
                field: "kv_cache".into(),
                problem: format!(
                    "cannot copy a {:?} cache into a {:?} one",
                    src.kv_type(),
                    self.kv_type()
                ),
            });
        }
        if len > src.len || len > self.capacity || src.layers.len() != self.layers.len() {
            return Err(EngineError::CacheFull {
                capacity: self.capacity.min(src.len),
                needed: len,
            });
        }
        for ((k, v), (src_k, src_v)) in self.layers.iter().zip(&src.layers) {
            k.slice_set(&src_k.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
            v.slice_set(&src_v.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
        }
        self.len = len;
        Ok(())
    }

    /// Record that positions `0..len` are valid (after all layers were written).
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }
}

/// [`KvCache::write_position`]'s write into one `(num_kv_heads, capacity, head_dim)` tensor:
/// head `h`'s `head_dim` values of `src` at `(h, pos)`.
struct WritePosition<'a> {
    src: &'a [f32],
    pos: usize,
    capacity: usize,
    head_dim: usize,
}

impl candle_core::InplaceOp1 for WritePosition<'_> {
    fn name(&self) -> &'static str {
        "kv-cache-write-position"
    }

    fn cpu_fwd(&self, storage: &mut candle_core::CpuStorage, layout: &Layout) -> CandleResult<()> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("the KV cache is not contiguous");
        };
        let hd = self.head_dim;
        let at = |h: usize| (h * self.capacity + self.pos) * hd;
        match storage {
            candle_core::CpuStorage::F32(all) => {
                let data = &mut all[start..end];
                for (h, row) in self.src.chunks_exact(hd).enumerate() {
                    data[at(h)..][..hd].copy_from_slice(row);
                }
            }
            candle_core::CpuStorage::F16(all) => {
                use half::slice::HalfFloatSliceExt;
                let data = &mut all[start..end];
                for (h, row) in self.src.chunks_exact(hd).enumerate() {
                    // To nearest, as candle's `to_dtype` rounds the prefill's rows.
                    data[at(h)..][..hd].convert_from_f32_slice(row);
                }
            }
            _ => candle_core::bail!("the KV cache is neither f32 nor f16"),
        }
        Ok(())
    }
}

/// One layer's keys and values in CPU memory, borrowed from a [`KvCache`] (see
/// [`KvCache::cpu_layer`]): both `(num_kv_heads, capacity, head_dim)`, f32 or f16.
pub(crate) struct CpuLayer<'a> {
    k: StorageRef<'a>,
    v: StorageRef<'a>,
    k_range: (usize, usize),
    v_range: (usize, usize),
}

impl CpuLayer<'_> {
    pub(crate) fn keys(&self) -> KvValues<'_> {
        kv_values(&self.k, self.k_range).expect("checked at creation")
    }

    pub(crate) fn values(&self) -> KvValues<'_> {
        kv_values(&self.v, self.v_range).expect("checked at creation")
    }
}

/// A cache layer's keys or values in CPU memory, as stored.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KvValues<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl KvValues<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            KvValues::F32(x) => x.len(),
            KvValues::F16(x) => x.len(),
        }
    }

    /// Values `range`.
    pub(crate) fn slice(self, range: std::ops::Range<usize>) -> Self {
        match self {
            KvValues::F32(x) => KvValues::F32(&x[range]),
            KvValues::F16(x) => KvValues::F16(&x[range]),
        }
    }

    /// The values as f32: themselves, or widened (exactly) into `scratch`.
    pub(crate) fn widened<'s>(self, scratch: &'s mut Vec<f32>) -> &'s [f32]
    where
        Self: 's,
    {
        match self {
            KvValues::F32(x) => x,
            KvValues::F16(x) => {
                scratch.resize(x.len(), 0.0);
                <f16 as crate::rowwise::Weight>::widen_into(x, scratch);
                scratch
            }
        }
    }

    /// The values as f32 (widened exactly from f16).
    #[cfg(test)]
    pub(crate) fn to_f32(self) -> Vec<f32> {
        match self {
            KvValues::F32(x) => x.to_vec(),
            KvValues::F16(x) => x.iter().map(|v| v.to_f32()).collect(),
        }
    }
}

/// The values `start..end` of a CPU storage of f32 or f16; `None` for other devices or types.
fn kv_values(storage: &Storage, (start, end): (usize, usize)) -> Option<KvValues<'_>> {
    match storage {
        Storage::Cpu(candle_core::CpuStorage::F32(all)) => Some(KvValues::F32(&all[start..end])),
        Storage::Cpu(candle_core::CpuStorage::F16(all)) => Some(KvValues::F16(&all[start..end])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

    fn tiny_config() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 8,
            hidden_size: 8,
            intermediate_size: 8,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 3,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: 16,
            tie_word_embeddings: false,
        }
    }

    #[test]
    fn a_written_position_is_what_append_writes_and_bad_sizes_are_errors() {
        let config = tiny_config();
        let dev = Device::Cpu;
        // Values that f16 cannot hold exactly, so both writes must round them the same way.
        let k: Vec<f32> = (0..6).map(|v| v as f32 + 1.0 / 3.0).collect();
        let v: Vec<f32> = (0..6).map(|v| -(v as f32) * 1.1).collect();
        for kind in [KvType::F32, KvType::F16] {
            let mut written = KvCache::with_type(&config, 5, &dev, kind).unwrap();
            assert_eq!(written.kv_type(), kind);
            written.write_position(1, 3, &k, &v).unwrap();
            let mut appended = KvCache::with_type(&config, 5, &dev, kind).unwrap();
            let rows = |x: &[f32]| Tensor::from_vec(x.to_vec(), (2, 1, 3), &dev).unwrap();
            appended.append(1, 3, &rows(&k), &rows(&v)).unwrap();
            for layer in 0..2 {
                let (a, b) = (
                    written.cpu_layer(layer).unwrap(),
                    appended.cpu_layer(layer).unwrap(),
                );
                assert_eq!(
                    a.keys().to_f32(),
                    b.keys().to_f32(),
                    "{kind:?} layer {layer}"
                );
                assert_eq!(
                    a.values().to_f32(),
                    b.values().to_f32(),
                    "{kind:?} layer {layer}"
                );
            }
            // Head 1's keys at position 3 of a (2, 5, 3) layer, rounded to the cache's type.
            let expected: Vec<f32> = k[3..]
                .iter()
                .map(|&x| match kind {
                    KvType::F32 => x,
                    KvType::F16 => f16::from_f32(x).to_f32(),
                })
                .collect();
            let stored = written.cpu_layer(1).unwrap().keys().to_f32();
            assert_eq!(stored[(5 + 3) * 3..][..3], expected[..], "{kind:?}");
            if kind == KvType::F16 {
                assert_ne!(expected[..], k[3..], "the values must not be f16-exact");
            }
            assert!(
                written.write_position(0, 5, &k, &v).is_err(),
                "past the capacity"
            );
            assert!(
                written.write_position(0, 0, &k[..3], &v[..3]).is_err(),
                "one head"
            );
            assert!(
                written.write_position(0, 0, &k, &v[..3]).is_err(),
                "values short"
            );
        }
    }

    #[test]
    fn a_prefix_copies_only_between_caches_of_one_type() {
        let config = tiny_config();
        let dev = Device::Cpu;
        let (k, v) = ([0.5f32; 6], [0.25f32; 6]);
        let mut src = KvCache::with_type(&config, 4, &dev, KvType::F16).unwrap();
        src.write_position(0, 0, &k, &v).unwrap();
        src.write_position(1, 0, &k, &v).unwrap();
        src.set_len(1);
        let mut same = KvCache::with_type(&config, 4, &dev, KvType::F16).unwrap();
        same.copy_prefix_from(&src, 1).unwrap();
        assert_eq!(same.len(), 1);
        let mut other = KvCache::new(&config, 4, &dev).unwrap();
        assert!(other.copy_prefix_from(&src, 1).is_err());
        assert_eq!("F16".parse::<KvType>().unwrap(), KvType::F16);
        assert_eq!("f32".parse::<KvType>().unwrap(), KvType::F32);
        assert!("bf16".parse::<KvType>().is_err());
    }
}

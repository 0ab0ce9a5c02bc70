//! The preallocated key/value cache, an explicit argument of every forward pass.
//!
//! One `(num_kv_heads, capacity, head_dim)` f32 tensor for keys and one for values per layer,
//! allocated once at the capacity the caller chooses (the longest prompt plus generation it
//! intends to run). A forward pass at `start_pos` writes its keys/values at
//! `start_pos..start_pos + seq` and attends over `0..start_pos + seq`; starting before the end
//! (`start_pos < len`) rewinds, which is how a caller reuses a cache for a new prompt.
//! Invariant: positions `0..len` hold valid entries.

use candle_core::{DType, Device, Layout, Result as CandleResult, Storage, StorageRef, Tensor};

use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};

/// Keys and values of every layer for positions `0..len`, with room for `capacity`.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: keys and values, each `(num_kv_heads, capacity, head_dim)`.
    layers: Vec<(Tensor, Tensor)>,
    capacity: usize,
    len: usize,
}

impl KvCache {
    /// Allocate a zeroed cache for `capacity` positions.
    pub fn new(config: &LlamaConfig, capacity: usize, device: &Device) -> Result<Self> {
        let shape = (config.num_kv_heads, capacity, config.head_dim);
        let layers = (0..config.num_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, DType::F32, device)?,
                    Tensor::zeros(shape, DType::F32, device)?,
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
        k_cache.slice_set(k, 1, start_pos)?;
        v_cache.slice_set(v, 1, start_pos)?;
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
    /// when the cache lives in CPU memory as f32; `None` otherwise. Several caches' views may
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
        (f32s(&view.k, view.k_range).is_some() && f32s(&view.v, view.v_range).is_some())
            .then_some(view)
    }

    /// Replace this cache's contents with positions `0..len` of `src` (same model).
    pub(crate) fn copy_prefix_from(&mut self, src: &KvCache, len: usize) -> Result<()> {
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
        let candle_core::CpuStorage::F32(all) = storage else {
            candle_core::bail!("the KV cache is not f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("the KV cache is not contiguous");
        };
        let hd = self.head_dim;
        let data = &mut all[start..end];
        for (h, row) in self.src.chunks_exact(hd).enumerate() {
            data[(h * self.capacity + self.pos) * hd..][..hd].copy_from_slice(row);
        }
        Ok(())
    }
}

/// One layer's keys and values in CPU memory, borrowed from a [`KvCache`] (see
/// [`KvCache::cpu_layer`]): both `(num_kv_heads, capacity, head_dim)` f32.
pub(crate) struct CpuLayer<'a> {
    k: StorageRef<'a>,
    v: StorageRef<'a>,
    k_range: (usize, usize),
    v_range: (usize, usize),
}

impl CpuLayer<'_> {
    pub(crate) fn keys(&self) -> &[f32] {
        f32s(&self.k, self.k_range).expect("checked at creation")
    }

    pub(crate) fn values(&self) -> &[f32] {
        f32s(&self.v, self.v_range).expect("checked at creation")
    }
}

/// The f32 values `start..end` of a CPU storage; `None` for other devices or types.
fn f32s(storage: &Storage, (start, end): (usize, usize)) -> Option<&[f32]> {
    match storage {
        Storage::Cpu(cpu) => cpu.as_slice::<f32>().ok().map(|all| &all[start..end]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

    #[test]
    fn a_written_position_is_what_append_writes_and_bad_sizes_are_errors() {
        let config = LlamaConfig {
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
        };
        let dev = Device::Cpu;
        let k: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let v: Vec<f32> = (0..6).map(|v| -(v as f32)).collect();
        let mut written = KvCache::new(&config, 5, &dev).unwrap();
        written.write_position(1, 3, &k, &v).unwrap();
        let mut appended = KvCache::new(&config, 5, &dev).unwrap();
        let rows = |x: &[f32]| Tensor::from_vec(x.to_vec(), (2, 1, 3), &dev).unwrap();
        appended.append(1, 3, &rows(&k), &rows(&v)).unwrap();
        for layer in 0..2 {
            let (a, b) = (
                written.cpu_layer(layer).unwrap(),
                appended.cpu_layer(layer).unwrap(),
            );
            assert_eq!(a.keys(), b.keys(), "layer {layer}");
            assert_eq!(a.values(), b.values(), "layer {layer}");
        }
        // Head 1's keys at position 3 of a (2, 5, 3) layer.
        assert_eq!(
            written.cpu_layer(1).unwrap().keys()[(5 + 3) * 3..][..3],
            [3.0, 4.0, 5.0]
        );
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

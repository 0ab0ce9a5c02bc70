//! Shared helpers of the engine's integration tests: where fixtures and fetched assets live,
//! a minimal `.npy` reader, and the FNV-1a hash the tokenizer golden file uses.
//!
//! Large assets (SmolLM2 GGUF, Llama 3.2 tokenizer.json) are fetched by
//! `scripts/fetch-test-assets.sh` into `<repo>/.cache/test-assets` (or
//! `$GUARDREASONER_TEST_ASSETS`). A test that needs a missing asset fails and says so, unless
//! `GUARDREASONER_SKIP_ASSET_TESTS=1`, in which case it prints why and passes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// How the tests load models: on the CPU, or on the GPU named by
/// `GUARDREASONER_TEST_DEVICE=cuda[:N]` (a build with `--features cuda`), so that the same
/// golden comparisons check the CUDA backend.
pub fn load_options() -> guardreasoner_engine::LoadOptions {
    use guardreasoner_engine::DeviceChoice;
    let device = match std::env::var("GUARDREASONER_TEST_DEVICE").ok().as_deref() {
        None | Some("") | Some("cpu") => DeviceChoice::Cpu,
        Some("cuda") => DeviceChoice::Cuda(0),
        Some(other) => match other.strip_prefix("cuda:").map(str::parse) {
            Some(Ok(n)) => DeviceChoice::Cuda(n),
            _ => panic!("GUARDREASONER_TEST_DEVICE={other}: expected cpu, cuda or cuda:N"),
        },
    };
    guardreasoner_engine::LoadOptions {
        device,
        ..Default::default()
    }
}

/// A step observer that records the logits row of every step.
#[derive(Default)]
pub struct Logits(pub Vec<Vec<f32>>);

impl guardreasoner_engine::StepObserver for Logits {
    fn on_step(
        &mut self,
        step: &guardreasoner_engine::Step<'_>,
    ) -> guardreasoner_engine::StepControl {
        self.0.push(step.logits.to_vec());
        guardreasoner_engine::StepControl::Continue
    }
}

/// `engine.generate_batch_ids` with one [`Logits`] recorder per prompt.
pub fn generate_batch_recorded(
    engine: &guardreasoner_engine::Engine,
    prompts: &[Vec<u32>],
    opts: &[guardreasoner_engine::GenerateOptions],
) -> (Vec<guardreasoner_engine::Generation>, Vec<Logits>) {
    let mut observers: Vec<Logits> = prompts.iter().map(|_| Logits::default()).collect();
    let mut refs: Vec<&mut dyn guardreasoner_engine::StepObserver> = observers
        .iter_mut()
        .map(|o| o as &mut dyn guardreasoner_engine::StepObserver)
        .collect();
    let generations = engine.generate_batch_ids(prompts, opts, &mut refs).unwrap();
    (generations, observers)
}

/// Prompts for the tiny models: twelve repetitive ones of different lengths (so prompt lookup
/// finds drafts) and four others.
pub fn tiny_prompts(vocab: u32) -> Vec<Vec<u32>> {
    let mut prompts: Vec<Vec<u32>> = (0..12u32)
        .map(|i| {
            let period = 2 + i % 5;
            (0..8 + 3 * i)
                .map(|j| (i * 37 + (j % period) * 11 + 3) % vocab)
                .collect()
        })
        .collect();
    prompts.extend((0..4u32).map(|i| (0..5 + i).map(|j| (i * 131 + j * 17 + 5) % vocab).collect()));
    prompts
}

/// Whether the tests run on the CPU, where decode-sized passes are bit-for-bit independent of
/// their batch (on a GPU, cuBLAS may pick other algorithms for other shapes).
pub fn on_cpu() -> bool {
    load_options().device == guardreasoner_engine::DeviceChoice::Cpu
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn skip_allowed() -> bool {
    std::env::var("GUARDREASONER_SKIP_ASSET_TESTS").is_ok_and(|v| v == "1")
}

/// `relative` under the test-asset directory, or `None` (test skipped) when it is missing and
/// skipping is allowed; panics with instructions otherwise.
pub fn asset(relative: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GUARDREASONER_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/test-assets"));
    let path = dir.join(relative);
    if path.exists() {
        return Some(path);
    }
    if skip_allowed() {
        eprintln!(
            "SKIPPED: {} is missing (GUARDREASONER_SKIP_ASSET_TESTS=1)",
            path.display()
        );
        return None;
    }
    panic!(
        "test asset {} is missing: run scripts/fetch-test-assets.sh first \
         (or set GUARDREASONER_SKIP_ASSET_TESTS=1 to skip tests that need it)",
        path.display()
    );
}

/// The GuardReasoner data directory (`$GUARDREASONER_DATA_DIR`, default
/// `<repo>/../shared/data/guardreasoner`), or `None` when missing and skipping is allowed.
pub fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("GUARDREASONER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data/guardreasoner"));
    if dir.join("benchmark").is_dir() {
        return Some(dir);
    }
    if skip_allowed() {
        eprintln!("SKIPPED: {}/benchmark is missing", dir.display());
        return None;
    }
    panic!(
        "GuardReasoner data {}/benchmark is missing: set GUARDREASONER_DATA_DIR \
         (or GUARDREASONER_SKIP_ASSET_TESTS=1 to skip)",
        dir.display()
    );
}

/// A little-endian, C-order `.npy` array: shape and values.
pub struct Npy<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

fn read_npy_raw(path: &Path, descr: &str) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not a .npy file",
        path.display()
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains(&format!("'descr': '{descr}'")),
        "{}: {header}",
        path.display()
    );
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (shape, bytes[start + header_len..].to_vec())
}

pub fn read_npy_f32(path: &Path) -> Npy<f32> {
    let (shape, raw) = read_npy_raw(path, "<f4");
    let data = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Npy { shape, data }
}

pub fn read_npy_i32(path: &Path) -> Npy<i32> {
    let (shape, raw) = read_npy_raw(path, "<i4");
    let data = raw
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Npy { shape, data }
}

/// FNV-1a 64 of ids as u32 little-endian bytes (as `make_tokenizer_golden.py`).
pub fn fnv1a64(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Read a JSON fixture.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `serde_json` array of integers -> ids.
pub fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

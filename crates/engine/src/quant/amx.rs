//! Intel AMX (Advanced Matrix Extensions) for long passes: prompt prefill.
//!
//! AMX adds eight tile registers (up to 16 rows of 64 bytes) and one instruction that
//! multiplies two int8 tiles into a 16x16 tile of i32 sums (`tdpbsud`: signed times unsigned
//! bytes, four products per 32-bit lane). One `tdpbsud` does 8,192 to 16,384 multiply-adds,
//! against 64 for a 512-bit `vpdpbusd`, so on a CPU with AMX (Intel Xeon since Sapphire
//! Rapids) a pass of many activation rows is bound by the vector work around it: scaling the
//! exact integer sums block by block as llama.cpp does. The integer sums are the same numbers
//! the decode kernels compute, so a format's AMX path can give its decode kernels' results
//! bit for bit.
//!
//! Linux gives a process the tile registers' state only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`available`] asks once. Each thread configures its
//! tiles for a pass and releases them after ([`Tiles`]). `GUARDREASONER_AMX=0` turns AMX off
//! (candle's GEMM computes long passes then, as on CPUs without it).

use super::interleaved::{Interleaved, RowTiles, ROWS};
use super::q8_k::{Q8KBlock, QK_K};
use super::{Format, PackedMatrix};

/// Activation rows per tile (and per pass of a kernel).
pub(crate) const MTILE: usize = 16;

/// Whether this CPU and OS run AMX-INT8 kernels (with AVX-512F/BW/VL for the vector work
/// around them), and `GUARDREASONER_AMX` is not `0`.
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var("GUARDREASONER_AMX").as_deref() != Ok("0") && cpu_and_os_allow()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn cpu_and_os_allow() -> bool {
    use std::arch::is_x86_feature_detected as has;
    if !(super::interleaved::pairs_available() && has!("avx512vl")) {
        return false;
    }
    // CPUID leaf 7, EDX bit 24: AMX-TILE, bit 25: AMX-INT8.
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    if edx & (1 << 24) == 0 || edx & (1 << 25) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: asks the kernel for permission to use the tile data state; no memory involved.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn cpu_and_os_allow() -> bool {
    false
}

/// The tile registers of the calling thread, configured (`ldtilecfg`) as `(rows, bytes per
/// row)` for `tmm0`..`tmm7`, and released (`tilerelease`) when dropped, so that a thread
/// between passes saves and restores no tile state.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Tiles(());

#[cfg(target_arch = "x86_64")]
impl Tiles {
    /// # Safety
    /// [`available`] is true.
    pub(crate) unsafe fn configure(shapes: [(u8, u16); 8]) -> Self {
        #[repr(C, align(64))]
        struct Config {
            palette: u8,
            start_row: u8,
            reserved: [u8; 14],
            bytes: [u16; 16],
            rows: [u8; 16],
        }
        let mut config = Config {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes: [0; 16],
            rows: [0; 16],
        };
        for (t, (rows, bytes)) in shapes.into_iter().enumerate() {
            config.rows[t] = rows;
            config.bytes[t] = bytes;
        }
        // SAFETY: the CPU has AMX and the process its permission (the caller's guarantee);
        // `config` is a valid 64-byte palette-1 configuration.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly));
        }
        Tiles(())
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: tiles were configured by `configure`, so the CPU has AMX.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Activation rows rounded to Q8_K, laid out for tile loads: the values as
/// `[tile of 16 rows][block][row][256]` (64 values of the 16 rows are one tile, rows 256
/// bytes apart), the scales as `[tile][block][row]`, and the sums of each 32 values
/// (`bsums` in pairs) two to an i32 as `[tile][block][row][4]`, for the K-quants' min terms.
/// Tiles come in pairs; rows past the last are zero.
pub(crate) struct PackedActs {
    values: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    rows: usize,
    blocks: usize,
}

impl PackedActs {
    /// Pack `acts` (rows of `blocks` blocks each).
    pub(crate) fn new(acts: &[Vec<Q8KBlock>], blocks: usize) -> Self {
        let rows = acts.len();
        let tiles = rows.div_ceil(2 * MTILE) * 2;
        let tile_values = blocks * MTILE * QK_K;
        let mut values = vec![0i8; tiles * tile_values];
        crate::pool::for_each_chunk_mut(&mut values, tile_values, |t, tile| {
            for (r, row) in acts.iter().skip(t * MTILE).take(MTILE).enumerate() {
                for (b, block) in row.iter().enumerate() {
                    tile[(b * MTILE + r) * QK_K..][..QK_K].copy_from_slice(&block.qs);
                }
            }
        });
        let mut scales = vec![0f32; tiles * blocks * MTILE];
        let mut sums = vec![0i32; tiles * blocks * MTILE * 4];
        for (i, row) in acts.iter().enumerate() {
            let (t, r) = (i / MTILE, i % MTILE);
            for (b, block) in row.iter().enumerate() {
                let at = (t * blocks + b) * MTILE + r;
                scales[at] = block.d;
                for (k, pair) in sums[4 * at..4 * at + 4].iter_mut().enumerate() {
                    let sum = |sub: usize| {
                        (block.bsums[2 * sub] as i32 + block.bsums[2 * sub + 1] as i32) as u16
                    };
                    *pair = (sum(2 * k) as u32 | (sum(2 * k + 1) as u32) << 16) as i32;
                }
            }
        }
        PackedActs {
            values,
            scales,
            sums,
            rows,
            blocks,
        }
    }

    /// Activation rows.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Tiles of 16 rows (an even number).
    pub(crate) fn tiles(&self) -> usize {
        self.rows.div_ceil(2 * MTILE) * 2
    }

    /// The 16 rows of block `b` of tile `t`: `[row][256]`.
    pub(crate) fn values(&self, t: usize, b: usize) -> &[i8] {
        &self.values[(t * self.blocks + b) * MTILE * QK_K..][..MTILE * QK_K]
    }

    /// The sums of the 32-value sub-blocks `2k` and `2k + 1` of each of the 16 rows of block
    /// `b` of tile `t`, as i16 pairs: `[row][k]`.
    pub(crate) fn sums(&self, t: usize, b: usize) -> &[i32; 4 * MTILE] {
        self.sums[(t * self.blocks + b) * MTILE * 4..][..4 * MTILE]
            .try_into()
            .expect("64 sums")
    }

    /// The scales (`d`) of the 16 rows of block `b` of tile `t`.
    pub(crate) fn scales(&self, t: usize, b: usize) -> &[f32; MTILE] {
        self.scales[(t * self.blocks + b) * MTILE..][..MTILE]
            .try_into()
            .expect("16 scales")
    }
}

/// A weight format with an AMX kernel: how a block of a pair of groups (16 columns) is
/// unpacked for the tiles, and how it multiplies two tiles of activation rows.
#[cfg(target_arch = "x86_64")]
pub(crate) trait AmxFormat: RowTiles {
    /// One block of a pair of groups, unpacked.
    type Prep: Copy;
    /// A `Prep` to unpack into.
    const EMPTY: Self::Prep;
    /// The tiles' `(rows, bytes per row)`.
    const SHAPES: [(u8, u16); 8];
    /// Whether the format has a min term (`acc_m`).
    const MINS: bool;

    /// Unpack block `b` of the two groups `first` and `second` into `p`.
    ///
    /// # Safety
    /// [`available`] is true.
    unsafe fn prepare(first: &[u8], second: &[u8], b: usize, p: &mut Self::Prep);

    /// Block `b` of the 16 columns of `p` times block `b` of activation tiles `t` and `t + 1`,
    /// added to `acc[0]` and `acc[1]`.
    ///
    /// # Safety
    /// [`available`] is true and the tiles are configured as [`Self::SHAPES`].
    unsafe fn block_products(
        p: &Self::Prep,
        acts: &PackedActs,
        t: usize,
        b: usize,
        acc: &mut [Accumulators],
    );
}

/// Output columns per pass: two groups of tiles.
pub(crate) const N: usize = 2 * ROWS;
/// Activation bytes per panel.
const PANEL_BYTES: usize = 1 << 20;

/// Whether long passes of a `(rows, _)` matrix of a format with an AMX kernel run here.
pub(crate) fn runs(rows: usize) -> bool {
    rows.is_multiple_of(N) && available()
}

/// `x (n, cols)` times `matrix` transposed: `(n, rows)`. Only called when [`runs`].
#[cfg(target_arch = "x86_64")]
pub(crate) fn matmul_t<F: AmxFormat<Plain: Format<Act = Q8KBlock>>>(
    matrix: &Interleaved<F>,
    x: &[f32],
    n: usize,
) -> Vec<f32> {
    let (rows, cols) = matrix.shape();
    assert!(runs(rows), "AMX products called without AMX");
    let blocks = cols / QK_K;
    let acts = PackedActs::new(&super::quantize_rows(x, cols, F::Plain::quantize), blocks);
    let mut out = vec![0f32; n * rows];
    let panel = (PANEL_BYTES / (blocks * QK_K * MTILE)).max(2) / 2 * 2;
    products(matrix, &acts, &mut out, panel);
    out
}

/// `out (acts.rows(), rows)` for every pair of groups, in panels of `panel` (even) tiles of
/// activation rows: each block of a pair of groups is unpacked once per panel (into L1) and
/// used for every tile of the panel, whose float accumulators stay in memory between blocks.
#[cfg(target_arch = "x86_64")]
pub(crate) fn products<F: AmxFormat>(
    matrix: &Interleaved<F>,
    acts: &PackedActs,
    out: &mut [f32],
    panel: usize,
) {
    let (rows, cols) = matrix.shape();
    let blocks = cols / F::Plain::BLOCK;
    assert_eq!(out.len(), acts.rows() * rows);
    assert!(panel > 0 && panel.is_multiple_of(2), "panels of tile pairs");
    let dst = crate::pool::SendPtr::new(out.as_mut_ptr());
    crate::pool::for_each_range(rows / N, |pairs| {
        // SAFETY: `runs` held (checked by `matmul_t`).
        let _tiles = unsafe { Tiles::configure(F::SHAPES) };
        let mut prep = Box::new(F::EMPTY);
        let mut accs = vec![Accumulators::ZERO; panel.min(acts.tiles())];
        for first in (0..acts.tiles()).step_by(panel) {
            let last = (first + panel).min(acts.tiles());
            for pair in pairs.clone() {
                let (s, u) = (matrix.group(2 * pair), matrix.group(2 * pair + 1));
                accs.fill(Accumulators::ZERO);
                for b in 0..blocks {
                    // SAFETY: `runs` held; tiles configured as SHAPES; `last - first` is even
                    // (tiles and panels come in pairs).
                    unsafe {
                        F::prepare(s, u, b, &mut prep);
                        for (t, acc) in (first..last).step_by(2).zip(accs.chunks_exact_mut(2)) {
                            if t + 2 < last {
                                // A tile load from L2 waits for its lines one row at a time.
                                l1_prefetch(acts.values(t + 2, b));
                                l1_prefetch(acts.values(t + 3, b));
                            }
                            F::block_products(&prep, acts, t, b, acc);
                        }
                    }
                }
                for (t, acc) in (first..last).zip(&accs) {
                    let valid = acts.rows().saturating_sub(t * MTILE).min(MTILE);
                    // SAFETY: rows t * 16 .. + valid, columns pair * 16 .. + 16 of `out`,
                    // written by this call only; AVX-512F (`runs`).
                    unsafe {
                        let at = dst.get().add(t * MTILE * rows + pair * N);
                        write_rows(acc, F::MINS, valid, at, rows);
                    }
                }
            }
        }
    });
}

/// The float sums of 16 activation rows times 16 columns: `acc`, and `acc_m` for the formats
/// with a min term.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Accumulators {
    pub(crate) acc: [[f32; N]; MTILE],
    pub(crate) acc_m: [[f32; N]; MTILE],
}

impl Accumulators {
    const ZERO: Self = Accumulators {
        acc: [[0.0; N]; MTILE],
        acc_m: [[0.0; N]; MTILE],
    };
}

/// The first `valid` rows of `acc` (`acc + acc_m` with `mins`) to `out`, rows `stride` apart.
///
/// # Safety
/// `out` holds `valid` rows of 16 at `stride`; the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn write_rows(acc: &Accumulators, mins: bool, valid: usize, out: *mut f32, stride: usize) {
    use std::arch::x86_64::*;
    for r in 0..valid {
        // SAFETY: the caller's guarantee.
        unsafe {
            let mut sum = _mm512_loadu_ps(acc.acc[r].as_ptr());
            if mins {
                sum = _mm512_add_ps(sum, _mm512_loadu_ps(acc.acc_m[r].as_ptr()));
            }
            _mm512_storeu_ps(out.add(r * stride), sum);
        }
    }
}

/// Ask for `bytes` in L1.
#[cfg(target_arch = "x86_64")]
fn l1_prefetch(bytes: &[i8]) {
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch of memory inside `bytes` has no effect but on the caches.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr())
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random;

    #[test]
    fn packed_rows_hold_each_rows_blocks() {
        let (rows, cols) = (19, 512);
        let x = random(rows * cols, 3);
        let acts: Vec<Vec<Q8KBlock>> = x
            .chunks_exact(cols)
            .map(super::super::q8_k::quantize)
            .collect();
        let packed = PackedActs::new(&acts, 2);
        assert_eq!((packed.rows(), packed.tiles()), (19, 2));
        assert_eq!(PackedActs::new(&acts[..16], 2).tiles(), 2, "tiles in pairs");
        for t in 0..2 {
            for b in 0..2 {
                let values = packed.values(t, b);
                for r in 0..MTILE {
                    let i = t * MTILE + r;
                    let got = &values[r * QK_K..][..QK_K];
                    match acts.get(i) {
                        Some(row) => {
                            assert_eq!(got, &row[b].qs[..], "row {i} block {b}");
                            assert_eq!(packed.scales(t, b)[r], row[b].d);
                            for k in 0..4 {
                                let pair = packed.sums(t, b)[4 * r + k];
                                let sum = |sub: usize| -> i32 {
                                    row[b].qs[32 * sub..32 * sub + 32]
                                        .iter()
                                        .map(|&q| q as i32)
                                        .sum()
                                };
                                assert_eq!(pair as i16 as i32, sum(2 * k), "row {i} pair {k}");
                                assert_eq!(pair >> 16, sum(2 * k + 1), "row {i} pair {k}");
                            }
                        }
                        None => {
                            assert!(got.iter().all(|&v| v == 0));
                            assert_eq!(packed.scales(t, b)[r], 0.0);
                            assert_eq!(packed.sums(t, b)[4 * r..4 * r + 4], [0; 4]);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) mod testing {
    use super::*;
    use crate::test_support::random;

    /// Every product of an AMX pass over a `(rows, cols)` matrix of `T` (`data`) equals the
    /// portable code's bit for bit, for row counts that end inside a tile or a pair of
    /// tiles, and panels of one pair (the weights unpacked again per panel).
    pub(crate) fn products_equal_the_portable_code<T>(data: &[u8], rows: usize, cols: usize)
    where
        T: AmxFormat<Plain: Format<Act = Q8KBlock>>,
    {
        if !runs(rows) {
            eprintln!("SKIPPED: no AMX here");
            return;
        }
        let matrix = Interleaved::<T>::new(data, rows, cols).expect("tiles");
        for (n, panel) in [(37usize, 2usize), (16, 4), (1, 2), (70, 4)] {
            let x = random(n * cols, 5 + n as u32);
            let acts: Vec<Vec<Q8KBlock>> = x.chunks_exact(cols).map(T::Plain::quantize).collect();
            let packed = PackedActs::new(&acts, cols / QK_K);
            let mut out = vec![f32::NAN; n * rows];
            products(&matrix, &packed, &mut out, panel);
            for (i, a) in acts.iter().enumerate() {
                for r in 0..rows {
                    let want = T::dot(matrix.group(r / ROWS), r % ROWS, a);
                    assert_eq!(
                        out[i * rows + r].to_bits(),
                        want.to_bits(),
                        "({i}, {r}) n={n}"
                    );
                }
            }
            assert_eq!(matmul_t(&matrix, &x, n), out, "n={n}");
            // Through the matrix: AMX for more than 16 rows, the decode kernels for fewer.
            assert_eq!(PackedMatrix::matmul_t(&matrix, &x, n), out, "n={n}");
        }
    }
}

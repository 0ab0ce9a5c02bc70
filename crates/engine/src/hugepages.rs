//! Weights in transparent huge pages.
//!
//! A decode step streams every weight once. On 4 KiB pages that is a TLB miss every 4 KiB,
//! and the hardware prefetchers stop at every page boundary; on 2 MiB pages neither happens.
//! Linux gives anonymous memory huge pages only where asked (`madvise`) on most distributions
//! (`/sys/kernel/mm/transparent_hugepage/enabled` = `madvise`), while a model file mapped by
//! llama.cpp may get them from the page cache. So after a weight buffer is written, its whole
//! 2 MiB-aligned interior is collapsed into huge pages (`MADV_COLLAPSE`, Linux 6.1+), or, on
//! older kernels, marked for them (`MADV_HUGEPAGE`, collapsed later by `khugepaged`).
//! Failure changes nothing but speed, so it is ignored. `GUARDREASONER_HUGE_PAGES=0` turns it
//! off (for measuring what it gives).

/// Back `bytes` with huge pages where the kernel can (Linux; elsewhere nothing happens).
pub(crate) fn advise(bytes: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        const MADV_COLLAPSE: libc::c_int = 25;
        if bytes.len() < HUGE || std::env::var("GUARDREASONER_HUGE_PAGES").as_deref() == Ok("0") {
            return;
        }
        let start = (bytes.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (bytes.as_ptr() as usize + bytes.len()) / HUGE * HUGE;
        if end <= start {
            return;
        }
        let (at, len) = (start as *mut libc::c_void, end - start);
        // SAFETY: the range lies inside `bytes`, memory this process owns; both advices only
        // change how the kernel backs it, never its contents.
        unsafe {
            if libc::madvise(at, len, MADV_COLLAPSE) != 0 {
                libc::madvise(at, len, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// [`advise`] for the storage of a CPU tensor (other devices: nothing happens).
pub(crate) fn advise_tensor(t: &candle_core::Tensor) {
    use candle_core::{CpuStorage, Storage};
    let (storage, _) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return;
    };
    fn bytes<T>(v: &[T]) -> &[u8] {
        // SAFETY: any initialized slice may be read as bytes.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
    }
    match cpu {
        CpuStorage::F32(v) => advise(bytes(v)),
        CpuStorage::F16(v) => advise(bytes(v)),
        CpuStorage::BF16(v) => advise(bytes(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_keeps_the_contents_of_large_small_and_odd_buffers() {
        for len in [0, 1, 4096 + 7, (5 << 20) + 3] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let before = data.clone();
            advise(&data[len.min(1)..]); // an unaligned start too
            assert_eq!(data, before, "{len} bytes");
        }
        let t = candle_core::Tensor::arange(0f32, 1e6, &candle_core::Device::Cpu).unwrap();
        advise_tensor(&t);
        assert_eq!(
            t.get(999_999).unwrap().to_scalar::<f32>().unwrap(),
            999_999.0
        );
    }
}

//! Device selection: the only place that knows which backends were compiled in.
//!
//! CPU is always available and complete. CUDA exists only with the `cuda` cargo feature
//! (forwarded to candle); asking for it without the feature is an error, not a silent
//! fallback.

use candle_core::Device;

use crate::error::Result;

/// Where to run the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// CUDA device by ordinal.
    Cuda(usize),
}

/// Turn a [`DeviceChoice`] into a candle device.
pub fn select_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(ordinal) => Ok(Device::new_cuda(ordinal)?),
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => Err(crate::error::EngineError::InvalidRequest {
            field: "device".into(),
            problem: "cuda requested but this build has no `cuda` feature".into(),
        }),
    }
}

/// Whether CUDA support was compiled in.
pub fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

//! Shim of `trainer::device::parse_device` (syntax only, as in the trainer) without libtorch's `Device` type.

/// A parsed device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// A CUDA device index.
    Cuda(usize),
}

/// Parse `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device, String> {
    let s = s.trim();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let bad = || format!("expected `cpu`, `cuda` or `cuda:N`, got {s:?}");
    match s.strip_prefix("cuda") {
        Some("") => Ok(Device::Cuda(0)),
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(bad),
        None => Err(bad()),
    }
}

//! Device selection from `cpu` / `cuda` / `cuda:N`.

use config::DeviceSpec;
use tch::Device;

/// Parse a device string (syntax only, [`config::DeviceSpec`]; see [`available`]).
pub fn parse_device(s: &str) -> Result<Device, String> {
    Ok(match s.parse::<DeviceSpec>()? {
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(i) => Device::Cuda(i),
    })
}

/// Check that a device exists in this process (CUDA index below the visible device count).
pub fn available(device: Device) -> Result<Device, String> {
    if let Device::Cuda(index) = device {
        let count = tch::Cuda::device_count().max(0) as usize;
        if index >= count {
            return Err(format!(
                "cuda:{index}: this libtorch sees {count} CUDA device(s); use --device cpu"
            ));
        }
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert_eq!(parse_device("cpu"), Ok(Device::Cpu));
        assert!(parse_device("gpu").unwrap_err().contains("cuda:N"));
        assert!(parse_device("cuda:x").is_err());
        assert_eq!(parse_device("cuda:1"), Ok(Device::Cuda(1)));
        if tch::Cuda::device_count() == 0 {
            assert!(available(Device::Cuda(0))
                .unwrap_err()
                .contains("0 CUDA device"));
        }
    }
}

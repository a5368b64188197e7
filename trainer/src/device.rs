//! Device selection from `cpu` / `cuda` / `cuda:N`.

use tch::Device;

/// Parse a device string (syntax only; see [`available`]).
pub fn parse_device(s: &str) -> Result<Device, String> {
    let s = s.trim();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let index = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| format!("expected `cpu`, `cuda` or `cuda:N`, got {s:?}"))?,
        None => return Err(format!("expected `cpu`, `cuda` or `cuda:N`, got {s:?}")),
    };
    Ok(Device::Cuda(index))
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

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

/// Check that a device exists in this process (CUDA index below the visible device count). Without a usable GPU
/// the error says why: a CPU-only libtorch, no visible device, or an index past the visible ones.
pub fn available(device: Device) -> Result<Device, String> {
    if let Device::Cuda(index) = device {
        let count = tch::Cuda::device_count().max(0) as usize;
        if index >= count {
            return Err(cuda_unavailable(index, count, tch::utils::has_cudart()));
        }
    }
    Ok(device)
}

/// The message for `cuda:index` when this process sees `count` CUDA devices; `cuda_build` says whether the linked
/// libtorch has CUDA support (libtorch_cuda loaded).
fn cuda_unavailable(index: usize, count: usize, cuda_build: bool) -> String {
    if !cuda_build {
        return format!(
            "cuda:{index}: this medmae-train is linked against a CPU-only libtorch (libtorch_cuda is not loaded); \
             build it against the CUDA libtorch (scripts/gpu-build, `--features nccl`) or use --device cpu"
        );
    }
    if count == 0 {
        let hidden = match std::env::var("CUDA_VISIBLE_DEVICES") {
            Ok(v) => format!(" (CUDA_VISIBLE_DEVICES={v:?})"),
            Err(_) => String::new(),
        };
        return format!(
            "cuda:{index}: no CUDA device is visible to this process{hidden}: no NVIDIA GPU or driver \
             (check nvidia-smi), or the launcher hid them; use --device cpu"
        );
    }
    format!(
        "cuda:{index}: this process sees {count} CUDA device(s) (cuda:0 to cuda:{}); use one of them or --device cpu",
        count - 1
    )
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
            let e = available(Device::Cuda(0)).unwrap_err();
            assert!(
                e.starts_with("cuda:0: ") && e.contains("--device cpu"),
                "{e}"
            );
        }
    }

    #[test]
    fn cuda_messages_name_the_cause() {
        let cpu_only = cuda_unavailable(0, 0, false);
        assert!(cpu_only.contains("CPU-only libtorch"), "{cpu_only}");
        let none = cuda_unavailable(0, 0, true);
        assert!(
            none.contains("no CUDA device is visible") && none.contains("nvidia-smi"),
            "{none}"
        );
        let past = cuda_unavailable(3, 2, true);
        assert!(
            past.contains("sees 2 CUDA device(s) (cuda:0 to cuda:1)"),
            "{past}"
        );
    }
}

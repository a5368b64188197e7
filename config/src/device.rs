//! The syntax of a device string (`cpu`, `cuda`, `cuda:N`); the trainer maps it to a libtorch device.

use std::fmt;
use std::str::FromStr;

/// A device named in a config or on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// CUDA device N (`cuda` alone is device 0).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    /// Parse `cpu`, `cuda` or `cuda:N` (surrounding blanks ignored).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "cpu" {
            return Ok(Self::Cpu);
        }
        let bad = || format!("expected `cpu`, `cuda` or `cuda:N`, got {s:?}");
        match s.strip_prefix("cuda") {
            Some("") => Ok(Self::Cuda(0)),
            Some(rest) => rest
                .strip_prefix(':')
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(bad),
            None => Err(bad()),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_cuda_and_rejects_garbage() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!(" cuda ".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        for bad in ["gpu", "cuda:x", "cuda:", "cuda3", "cuda:-1", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.contains("cuda:N"), "{bad}: {e}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        assert_eq!(DeviceSpec::Cpu.to_string(), "cpu");
    }
}

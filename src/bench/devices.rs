//! Peak dense throughput of known accelerators, for MFU (model FLOP/s over the device's peak).
//! Vendor data-sheet numbers without sparsity: bf16 on tensor cores; f32 on the CUDA cores (what
//! an f32 matmul reaches without TF32).

/// A device's peak dense TFLOP/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DevicePeak {
    /// A substring of the device's name, lower case (`"h100"`).
    pub key: &'static str,
    /// Display name.
    pub name: &'static str,
    /// f32 TFLOP/s.
    pub f32_tflops: f64,
    /// bf16 TFLOP/s.
    pub bf16_tflops: f64,
}

/// Known devices, most specific first (`"gh200"` before `"h200"`, `"h100 pcie"` before
/// `"h100"`).
pub const DEVICES: &[DevicePeak] = &[
    DevicePeak {
        key: "gh200",
        name: "NVIDIA GH200",
        f32_tflops: 67.0,
        bf16_tflops: 989.0,
    },
    DevicePeak {
        key: "h200",
        name: "NVIDIA H200",
        f32_tflops: 67.0,
        bf16_tflops: 989.0,
    },
    DevicePeak {
        key: "h100 pcie",
        name: "NVIDIA H100 PCIe",
        f32_tflops: 51.0,
        bf16_tflops: 756.0,
    },
    DevicePeak {
        key: "h100",
        name: "NVIDIA H100 SXM",
        f32_tflops: 67.0,
        bf16_tflops: 989.0,
    },
    DevicePeak {
        key: "b200",
        name: "NVIDIA B200",
        f32_tflops: 80.0,
        bf16_tflops: 2250.0,
    },
    DevicePeak {
        key: "a100",
        name: "NVIDIA A100",
        f32_tflops: 19.5,
        bf16_tflops: 312.0,
    },
    DevicePeak {
        key: "l40s",
        name: "NVIDIA L40S",
        f32_tflops: 91.6,
        bf16_tflops: 362.0,
    },
    DevicePeak {
        key: "rtx 4090",
        name: "NVIDIA GeForce RTX 4090",
        f32_tflops: 82.6,
        bf16_tflops: 165.2,
    },
];

/// The table entry whose key the device name contains (case-insensitive).
pub fn lookup(device_name: &str) -> Option<&'static DevicePeak> {
    let n = device_name.to_lowercase();
    DEVICES.iter().find(|d| n.contains(d.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_entry_wins() {
        assert_eq!(lookup("NVIDIA H100 PCIe").unwrap().bf16_tflops, 756.0);
        assert_eq!(lookup("NVIDIA H100 80GB HBM3").unwrap().bf16_tflops, 989.0);
        assert_eq!(lookup("NVIDIA H200").unwrap().name, "NVIDIA H200");
        assert!(lookup("cpu").is_none());
    }
}

//! Peak memory of a benchmark: the process's peak resident set (`VmHWM`, Linux) on the CPU
//! backend; with the `cuda` feature, the device memory in use once the steps are done (the
//! driver reports no peak; Burn's pool keeps what the step needed, so it is close to it).

/// `VmHWM` of `/proc/self/status`, bytes.
pub fn host_peak_rss() -> Option<u64> {
    vm_hwm(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `VmRSS` of `/proc/self/status` (resident now), bytes.
pub fn host_rss() -> Option<u64> {
    vm_field(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmRSS:",
    )
}

/// `VmHWM` of `/proc/<pid>/status` text, in bytes.
fn vm_hwm(status: &str) -> Option<u64> {
    vm_field(status, "VmHWM:")
}

/// A `kB` field of `/proc/<pid>/status` text, in bytes.
fn vm_field(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// Memory in use on CUDA device 0, bytes (`cuMemGetInfo` total − free).
#[cfg(feature = "cuda")]
pub fn device_memory_in_use() -> Option<u64> {
    let ctx = cudarc::driver::CudaContext::new(0).ok()?;
    let (free, total) = ctx.mem_get_info().ok()?;
    Some(total.saturating_sub(free) as u64)
}

/// The name of CUDA device 0.
#[cfg(feature = "cuda")]
pub fn device_name() -> Option<String> {
    let ctx = cudarc::driver::CudaContext::new(0).ok()?;
    ctx.name().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hwm_is_parsed_in_bytes() {
        let t = "Name: v4train\nVmPeak:  9000 kB\nVmHWM:     1234 kB\nVmRSS: 1000 kB\n";
        assert_eq!(super::vm_hwm(t), Some(1234 * 1024));
        assert_eq!(super::vm_hwm("VmRSS: 1 kB\n"), None);
    }
}

//! What the machine has left: host memory this process may still use (the kernel's
//! `MemAvailable`, capped by the cgroup limit), free disk under a path, and (`cuda` feature) free
//! GPU memory.

use std::path::Path;

/// Bytes this process may still allocate: `/proc/meminfo` `MemAvailable`, capped by the room
/// left under the cgroup memory limit (cgroup v2 `memory.max − memory.current`, or v1
/// `memory.limit_in_bytes − memory.usage_in_bytes`). `None` where neither is known (not Linux).
pub fn available_host_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_available(&t));
    let cgroup = cgroup_room(Path::new("/proc/self/cgroup"), Path::new("/sys/fs/cgroup"));
    match (meminfo, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

/// `MemAvailable` of `/proc/meminfo` text, in bytes.
pub(crate) fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// Room left under this process's cgroup memory limit (the tightest one on the path from its
/// cgroup to the root); `None` without a limit or a readable cgroup.
fn cgroup_room(self_cgroup: &Path, root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(self_cgroup).ok()?;
    let mut best: Option<u64> = None;
    for line in text.lines() {
        // `hierarchy-id:controllers:path`; v2 is `0::/path`, v1 names `memory` in the controllers.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(rel)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = rel.trim_start_matches('/');
        let room = if id == "0" && controllers.is_empty() {
            // cgroup v2: `/sys/fs/cgroup` itself, or `unified/` on a hybrid (v1 + v2) host
            let v2 = if root.join("cgroup.controllers").exists() {
                root.to_path_buf()
            } else {
                root.join("unified")
            };
            tightest(&v2.join(rel), &v2, "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            let base = root.join("memory");
            tightest(
                &base.join(rel),
                &base,
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            None
        };
        if let Some(r) = room {
            best = Some(best.map_or(r, |b| b.min(r)));
        }
    }
    best
}

/// Smallest `limit − usage` over `dir` and its ancestors up to `root` (containers often see
/// only their own cgroup as `/`, so the walk also covers that case).
fn tightest(dir: &Path, root: &Path, limit: &str, usage: &str) -> Option<u64> {
    let mut best: Option<u64> = None;
    let mut at = Some(dir);
    while let Some(d) = at {
        if let Some(room) = room_in(d, limit, usage) {
            best = Some(best.map_or(room, |b| b.min(room)));
        }
        if d == root {
            break;
        }
        at = d.parent().filter(|p| p.starts_with(root));
    }
    best
}

/// `limit − usage` of one cgroup directory; `None` when unlimited or unreadable.
pub(crate) fn room_in(dir: &Path, limit: &str, usage: &str) -> Option<u64> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let limit = read(limit)?;
    let limit: u64 = limit.trim().parse().ok()?; // "max" (v2, unlimited) does not parse
                                                 // cgroup v1 reports "unlimited" as a huge page-rounded number.
    if limit >= 1 << 60 {
        return None;
    }
    let used: u64 = read(usage).and_then(|u| u.trim().parse().ok()).unwrap_or(0);
    Some(limit.saturating_sub(used))
}

/// Free bytes an unprivileged process may write on the filesystem holding `path` (statvfs
/// `f_bavail × f_frsize`), asked of `path` or, when it does not exist yet (a checkpoint
/// directory before the first save), of its nearest existing ancestor. `None` when no ancestor
/// can be queried.
pub fn available_disk(path: &Path) -> Option<u64> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let mut at = Some(absolute.as_path());
    while let Some(p) = at {
        if p.exists() {
            let st = nix::sys::statvfs::statvfs(p).ok()?;
            #[allow(clippy::useless_conversion)] // the field types differ between platforms
            let (blocks, size) = (u64::from(st.blocks_available()), st.fragment_size() as u64);
            return Some(blocks.saturating_mul(size));
        }
        at = p.parent();
    }
    None
}

/// Free memory of CUDA device 0 (the device `--device cuda` trains on), from the driver's
/// `cuMemGetInfo`; `None` when no driver or device answers.
#[cfg(feature = "cuda")]
pub fn available_device_memory() -> Option<u64> {
    let ctx = cudarc::driver::CudaContext::new(0).ok()?;
    let (free, _total) = ctx.mem_get_info().ok()?;
    Some(free as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let t = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   23000000 kB\n";
        assert_eq!(mem_available(t), Some(23_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn cgroup_limits_cap_the_room() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cg");
        let leaf = root.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        let w = |d: &Path, f: &str, v: &str| std::fs::write(d.join(f), v).unwrap();
        w(&root, "cgroup.controllers", "memory\n");
        w(&root, "memory.max", "max\n");
        w(&root.join("a"), "memory.max", "1000\n");
        w(&root.join("a"), "memory.current", "400\n");
        w(&leaf, "memory.max", "5000\n");
        w(&leaf, "memory.current", "100\n");
        let self_cg = dir.path().join("self");
        std::fs::write(&self_cg, "0::/a/b\n").unwrap();
        // the parent's 600 bytes of room are tighter than the leaf's 4900
        assert_eq!(cgroup_room(&self_cg, &root), Some(600));
        std::fs::write(&self_cg, "0::/\n").unwrap();
        assert_eq!(cgroup_room(&self_cg, &root), None, "unlimited root");
        // cgroup v1
        let v1 = dir.path().join("v1");
        let mem = v1.join("memory/x");
        std::fs::create_dir_all(&mem).unwrap();
        w(&mem, "memory.limit_in_bytes", "2048\n");
        w(&mem, "memory.usage_in_bytes", "48\n");
        w(
            &v1.join("memory"),
            "memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        std::fs::write(&self_cg, "5:cpu:/x\n4:memory:/x\n").unwrap();
        assert_eq!(cgroup_room(&self_cg, &v1), Some(2000));
    }

    #[test]
    fn disk_of_a_missing_directory_is_its_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let here = available_disk(dir.path()).expect("statvfs of a temp dir");
        assert!(here > 0);
        let missing = dir.path().join("not/yet/created");
        let there = available_disk(&missing).expect("nearest existing ancestor");
        // same filesystem; free space may move a little between the two calls
        assert!(there.abs_diff(here) < here / 10 + (1 << 20));
    }
}

//! The size of the file system holding a log directory (statvfs), for DescribeLogDirs and
//! the log-dir metrics.

use std::path::Path;

/// Bytes of one file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Available to this (unprivileged) user: what Kafka reports as usable bytes.
    pub free: u64,
    pub total: u64,
}

/// The file system holding `dir`; `None` when it cannot be read (no such directory).
pub fn disk_space(dir: &Path) -> Option<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let unit = s.f_frsize as u64;
    Some(DiskSpace { free: s.f_bavail as u64 * unit, total: s.f_blocks as u64 * unit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_directory() {
        let s = disk_space(&std::env::temp_dir()).unwrap();
        assert!(s.total > 0 && s.free <= s.total, "{s:?}");
        assert!(disk_space(Path::new("/no/such/dir")).is_none());
    }
}

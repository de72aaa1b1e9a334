//! What the operating system knows about this process and its log directories: CPU,
//! memory and descriptors from `/proc/self`, free and total bytes from `statvfs`. Read at
//! scrape time; anything unreadable is left out rather than reported as zero.

#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

pub fn process_stats() -> ProcessStats {
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let statm = std::fs::read_to_string("/proc/self/statm").ok();
    let limits = std::fs::read_to_string("/proc/self/limits").ok();
    ProcessStats {
        cpu_seconds: stat.as_deref().and_then(cpu_ticks).filter(|_| ticks > 0).map(|t| t as f64 / ticks as f64),
        resident_bytes: statm
            .as_deref()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|p| p * page.max(1) as u64),
        open_fds: open_fds(),
        max_fds: limits.as_deref().and_then(max_open_files),
    }
}

/// Listing `/proc/self/fd` costs the kernel a lookup per descriptor, and a broker with
/// thousands of partitions holds tens of thousands: count at most every ten seconds.
fn open_fds() -> Option<u64> {
    static LAST: parking_lot::Mutex<Option<(std::time::Instant, u64)>> = parking_lot::Mutex::new(None);
    let mut last = LAST.lock();
    if let Some((at, n)) = *last {
        if at.elapsed() < std::time::Duration::from_secs(10) {
            return Some(n);
        }
    }
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    *last = Some((std::time::Instant::now(), n));
    Some(n)
}

/// utime + stime from `/proc/self/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (fjord (dev) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 9 0 100 1000 300";
        assert_eq!(cpu_ticks(stat), Some(300));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1048576              1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1_048_576));
    }

    #[test]
    fn reads_this_process_and_a_real_directory() {
        let p = process_stats();
        assert!(
            p.cpu_seconds.is_some()
                && p.resident_bytes.unwrap() > 0
                && p.open_fds.unwrap() > 0
                && p.max_fds.unwrap() > 0,
            "{p:?}"
        );
    }
}

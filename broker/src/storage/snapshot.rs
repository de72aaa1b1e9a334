//! Producer state snapshot files (Kafka's `<offset>.snapshot`): the state of every producer
//! as of an offset, so a restart or a truncation replays the batches after the newest one
//! instead of every batch header of the log. The log stores them as checksummed blobs; what
//! is inside belongs to the producer state (`producer_state.rs`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::segment::file_name;

const EXT: &str = "snapshot";

fn path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(file_name(offset, EXT))
}

/// The offsets of the snapshots in `dir`, ascending.
pub fn list(dir: &Path) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        if let Some(o) = name.to_string_lossy().strip_suffix(".snapshot").and_then(|s| s.parse::<i64>().ok()) {
            out.push(o);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Write the snapshot at `offset` (tmp file, then rename, so a reader never sees half of
/// one). Returns the file for an fsync after the caller's lock is released.
pub fn write(dir: &Path, offset: i64, body: &[u8]) -> Result<File> {
    let tmp = path(dir, offset).with_extension("snapshot.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&crc32c::crc32c(body).to_be_bytes())?;
    f.write_all(body)?;
    std::fs::rename(&tmp, path(dir, offset))?;
    Ok(f)
}

/// The body of the snapshot at `offset`, or `None` when it is missing or fails its
/// checksum (a power loss before its fsync): the caller then takes an older one.
pub fn read(dir: &Path, offset: i64) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path(dir, offset)).ok()?;
    let (crc, body) = bytes.split_at_checked(4)?;
    (u32::from_be_bytes(crc.try_into().ok()?) == crc32c::crc32c(body)).then(|| body.to_vec())
}

/// The snapshot files `keep` says no to (their paths, for the caller to delete).
pub fn select(dir: &Path, keep: impl Fn(i64) -> bool) -> Result<Vec<PathBuf>> {
    Ok(list(dir)?.into_iter().filter(|o| !keep(*o)).map(|o| path(dir, o)).collect())
}

/// Delete the snapshots `keep` says no to, now.
pub fn delete_unless(dir: &Path, keep: impl Fn(i64) -> bool) -> Result<()> {
    for p in select(dir, keep)? {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_read_listed_and_a_damaged_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 40, b"forty").unwrap();
        write(dir.path(), 7, b"seven").unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![7, 40]);
        assert_eq!(read(dir.path(), 40).as_deref(), Some(&b"forty"[..]));
        let p = path(dir.path(), 40);
        let mut bytes = std::fs::read(&p).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(read(dir.path(), 40), None);
        delete_unless(dir.path(), |o| o < 10).unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![7]);
    }
}

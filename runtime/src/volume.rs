//! Writing a directory the way the kubelet writes a Secret or ConfigMap
//! volume: files go into a fresh hidden timestamped directory, each visible
//! name is a symlink through `..data`, and `..data` is switched to the new
//! directory with one atomic rename. Readers never see a half-written set.
//!
//! Sigil's binaries only read such directories; this writer exists so tests
//! and `make demo` exercise exactly what a pod sees.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Replaces the content of `dir` with `files` (name, content) atomically.
pub fn write_atomically(dir: &Path, files: &[(&str, &[u8])]) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let version = format!("..{nanos}_{}", SEQ.fetch_add(1, Ordering::Relaxed));
    let version_dir = dir.join(&version);
    std::fs::create_dir(&version_dir)?;
    for (name, content) in files {
        std::fs::write(version_dir.join(name), content)?;
    }
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_resolve_through_the_data_link_and_old_versions_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_atomically(dir.path(), &[("kid", b"a"), ("alg", b"ES256")]).expect("first");
        let first = std::fs::read_link(dir.path().join(DATA)).expect("..data");
        write_atomically(dir.path(), &[("kid", b"b"), ("alg", b"ES256")]).expect("second");
        assert_eq!(std::fs::read(dir.path().join("kid")).expect("kid"), b"b");
        assert_eq!(std::fs::read_link(dir.path().join("kid")).expect("link"), Path::new("..data/kid"));
        assert!(!dir.path().join(first).exists(), "the previous version is removed");
        let versions = std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("..1")))
            .count();
        assert_eq!(versions, 1);
    }
}

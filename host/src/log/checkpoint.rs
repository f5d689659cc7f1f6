//! Small durable files holding one offset each (`log-start-offset`, `recovery-point`,
//! a partition's `high-watermark`), and the atomic replacement the leader-epoch
//! checkpoint shares with them.
//!
//! A checkpoint is replaced atomically: written to a `.tmp` sibling, fsynced, renamed over
//! the old one and the directory fsynced, so after a crash it holds either the old or the
//! new value, never a mix.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{io_error, sync_error, LogError};

/// Reads a checkpoint. `Ok(None)` if it does not exist; `Err(Corrupt)` if it does not hold
/// one decimal offset.
pub(crate) fn read(path: &Path) -> Result<Option<i64>, LogError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(LogError::Corrupt {
                path: path.to_path_buf(),
                reason: "checkpoint is not text".to_string(),
            })
        }
        Err(e) => return Err(io_error(path, "read checkpoint", e)),
    };
    text.trim()
        .parse::<i64>()
        .map(Some)
        .map_err(|_| LogError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("checkpoint holds {:?}, not an offset", text.trim()),
        })
}

/// Atomically replaces the checkpoint at `path` with `value`.
pub(crate) fn write(path: &Path, value: i64) -> Result<(), LogError> {
    replace(path, format!("{value}\n").as_bytes())
}

/// Atomically replaces the file at `path` with `contents`: after a crash it holds either
/// the old or the new contents.
pub(super) fn replace(path: &Path, contents: &[u8]) -> Result<(), LogError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let mut file = File::create(tmp).map_err(|e| io_error(tmp, "create checkpoint", e))?;
    file.write_all(contents)
        .map_err(|e| io_error(tmp, "write checkpoint", e))?;
    crate::durability::sync_file(&file, tmp).map_err(|e| sync_error(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| io_error(path, "rename checkpoint into place", e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes renames, creations and removals in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    crate::durability::sync_dir(dir).map_err(|e| sync_error(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recovery-point");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, 42).unwrap();
        write(&path, 43).unwrap();
        assert_eq!(read(&path).unwrap(), Some(43));
        assert!(!dir.path().join("recovery-point.tmp").exists());
        std::fs::write(&path, "nonsense").unwrap();
        assert!(matches!(read(&path), Err(LogError::Corrupt { .. })));
    }
}

//! The one door to the disk's durability: every fsync the broker makes, of a file or of a
//! directory, goes through [`sync_file`], [`sync_file_data`] or [`sync_dir`].
//!
//! Why a room of its own: to test what a power loss does to the broker, a test must know
//! which bytes the broker had made durable when it was killed. With
//! `QUIVER_TEST_SYNC_LEDGER=<path>` set in the broker's environment, every successful
//! fsync is also appended to that ledger file, and `tests/chaos/powercut.py` rewrites a
//! killed broker's data directory as a power loss would have left it (see
//! `docs/reliability.md`, "Power loss"). The mode is read once, at the first fsync or at
//! startup ([`init`]); when it is off, the whole cost is one branch on a value already
//! loaded. It is compiled into every build on purpose, so that the binary a power-loss
//! test judges is the binary that ships. It is not a setting of the configuration: an
//! operator has no use for it, and the broker warns at startup when it is on.
//!
//! What is recorded, one line each, written with a single `write()` (a SIGKILL leaves the
//! page cache, so the ledger of a killed process is complete up to its last line; the
//! ledger itself is never fsynced, it is for processes killed on a machine that keeps
//! running):
//!
//! - `F <ino> <btime> <len> <path>` after a file's fsync succeeded. `len` is the file's
//!   length taken *before* the fsync began: what was written before is covered, bytes
//!   appended while it ran are not. A file is named by its inode and birth time (ns since
//!   the epoch), not by its path: renames keep the record, and a new file that reuses a
//!   freed inode number does not inherit it.
//! - `D <path> <name>/<ino>/<btime> ...` after a directory's fsync succeeded, with the
//!   entries listed *before* the fsync began: those names, pointing at those files, are
//!   durable.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use parking_lot::Mutex;

/// The environment variable naming the ledger file. Test use only.
pub const LEDGER_ENV: &str = "QUIVER_TEST_SYNC_LEDGER";

/// The ledger could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the sync ledger {path} named by {LEDGER_ENV}: {source}")]
pub struct LedgerError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug)]
struct Ledger {
    path: PathBuf,
    file: Mutex<File>,
    /// Held from taking a record (a length, a listing) until it is appended. The last
    /// record of a name is what a power cut keeps, so records must be appended in the
    /// order they were taken: two threads syncing one directory (replicas created in
    /// parallel) could otherwise append an older listing after a newer one, and the
    /// cut would drop a name that was in fact made durable.
    turn: Mutex<()>,
}

static LEDGER: OnceLock<Result<Option<Ledger>, LedgerError>> = OnceLock::new();

fn open_from_env() -> Result<Option<Ledger>, LedgerError> {
    let Some(path) = std::env::var_os(LEDGER_ENV).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(file) => Ok(Some(Ledger {
            path,
            file: Mutex::new(file),
            turn: Mutex::new(()),
        })),
        Err(source) => Err(LedgerError { path, source }),
    }
}

fn ledger() -> Option<&'static Ledger> {
    match LEDGER.get_or_init(open_from_env) {
        Ok(ledger) => ledger.as_ref(),
        Err(_) => None,
    }
}

/// Reads the environment once and opens the ledger if it is asked for; warns that the
/// test mode is on. Called by `quiver serve` once logging is set up, so that a ledger that
/// cannot be opened stops startup instead of silently recording nothing.
pub fn init() -> Result<(), &'static LedgerError> {
    match LEDGER.get_or_init(open_from_env) {
        Ok(Some(ledger)) => {
            tracing::warn!(
                ledger = %ledger.path.display(),
                "{LEDGER_ENV} is set: every fsync is recorded for power-loss tests; this is a test mode"
            );
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether fsyncs are being recorded.
pub fn recording() -> bool {
    ledger().is_some()
}

/// A file's identity across renames: inode and birth time in ns (0 where the file system
/// keeps no birth time).
fn identity(meta: &std::fs::Metadata) -> (u64, u128) {
    let born = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    (meta.ino(), born)
}

impl Ledger {
    fn append(&self, line: String) {
        if let Err(e) = self.file.lock().write_all(line.as_bytes()) {
            tracing::warn!(ledger = %self.path.display(), error = %e, "could not append to the sync ledger");
        }
    }
}

fn sync_with(
    file: &File,
    path: &Path,
    sync: impl FnOnce(&File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let Some(ledger) = ledger() else {
        return sync(file);
    };
    let _turn = ledger.turn.lock();
    let before = file.metadata();
    sync(file)?;
    match before {
        Ok(meta) => {
            let (ino, born) = identity(&meta);
            ledger.append(format!(
                "F\t{ino}\t{born}\t{}\t{}\n",
                meta.len(),
                path.display()
            ));
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "could not stat a file for the sync ledger")
        }
    }
    Ok(())
}

/// `fsync`: the file's data and metadata. `path` names it in the ledger and nowhere else.
pub fn sync_file(file: &File, path: &Path) -> std::io::Result<()> {
    sync_with(file, path, File::sync_all)
}

/// `fdatasync`: the file's data and the metadata needed to read it back (its length).
pub fn sync_file_data(file: &File, path: &Path) -> std::io::Result<()> {
    sync_with(file, path, File::sync_data)
}

/// Makes the creations, renames and removals of entries of `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let handle = File::open(dir)?;
    let Some(ledger) = ledger() else {
        return handle.sync_all();
    };
    let _turn = ledger.turn.lock();
    let mut line = format!("D\t{}", dir.display());
    for entry in std::fs::read_dir(dir)?.flatten() {
        // An entry removed since the listing is simply not in the ledger.
        if let Ok(meta) = std::fs::symlink_metadata(entry.path()) {
            let (ino, born) = identity(&meta);
            line.push_str(&format!(
                "\t{}/{ino}/{born}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    line.push('\n');
    handle.sync_all()?;
    ledger.append(line);
    Ok(())
}

/// Creates `dir` (and missing parents) and makes each created directory's entry durable
/// in its parent, so that a directory the broker then fills survives a power loss.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Created meanwhile by someone else: still make sure its entry is durable.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_work_with_the_ledger_off() {
        // The test process does not set the variable: the plain fsyncs run.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"abc").unwrap();
        sync_file(&file, &path).unwrap();
        sync_file_data(&file, &path).unwrap();
        sync_dir(dir.path()).unwrap();
        let nested = dir.path().join("a/b/c");
        create_dir_all(&nested).unwrap();
        create_dir_all(&nested).unwrap();
        assert!(nested.is_dir());
    }

    #[test]
    fn identity_changes_with_a_new_file_at_the_same_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"1").unwrap();
        let first = identity(&std::fs::metadata(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        std::fs::write(&path, b"2").unwrap();
        let second = identity(&std::fs::metadata(&path).unwrap());
        // A file system without birth times (0) cannot tell them apart; ext4 and tmpfs can.
        if first.1 != 0 {
            assert_ne!(first, second);
        }
    }
}

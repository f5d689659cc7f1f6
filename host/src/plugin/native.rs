//! Native plugins: trusted shared libraries implementing the partitioner contract
//! through a C ABI, for hot paths where even a sandbox boundary is too much.
//!
//! They run inside the broker process with no sandbox, so they are off unless
//! `plugins.native.enabled` is set, and only files inside `plugins.native.dirs` are
//! loaded. The library declares its API version and kind through exported symbols,
//! checked before any other symbol is used.

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use libloading::{Library, Symbol};
use parking_lot::Mutex;
use quiver_plugin_sdk::abi::{QuiverBatch, QuiverBuf, QuiverStr};
use quiver_plugin_sdk::columns::Columns;

use super::{CallError, Deployment, PluginError};

type VersionFn = unsafe extern "C" fn() -> u32;
type KindFn = unsafe extern "C" fn() -> *const std::ffi::c_char;
type InitFn =
    unsafe extern "C" fn(*const QuiverStr, *const QuiverStr, usize, *mut QuiverBuf) -> i32;
type PartitionFn = unsafe extern "C" fn(*const QuiverBatch, u32, *mut u32, *mut QuiverBuf) -> i32;

/// API version 0.1.0 as the C ABI encodes it.
const API_VERSION: u32 = 0x00_01_00;
/// Room for an error message from the library.
const ERROR_CAPACITY: usize = 4096;

/// A loaded native partitioner.
pub struct NativePartitioner {
    path: PathBuf,
    // Calls are serialised: the C contract does not promise thread safety. The lock holds
    // the error buffer the library may write a message into, allocated once.
    error: Mutex<Vec<u8>>,
    partition: PartitionFn,
    // Declared last so it is dropped after the function pointers above stop being used.
    _library: Library,
}

impl std::fmt::Debug for NativePartitioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativePartitioner")
            .field("path", &self.path)
            .finish()
    }
}

/// Resolves `file` inside one of `dirs`, refusing anything that escapes them.
pub fn resolve(file: &str, dirs: &[PathBuf]) -> Result<PathBuf, PluginError> {
    for dir in dirs {
        let Ok(dir) = dir.canonicalize() else {
            continue;
        };
        let Ok(candidate) = dir.join(file).canonicalize() else {
            continue;
        };
        if candidate.starts_with(&dir) && candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(PluginError::NativeNotAllowed(format!(
        "'{file}' is not a file inside plugins.native.dirs ({})",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn error_text(buf: &[u8], err: &QuiverBuf) -> String {
    let len = err.len.min(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

impl NativePartitioner {
    /// Loads the library at `path` (already resolved) and runs its init with `config`.
    pub fn load(path: &Path, config: &[(String, String)]) -> Result<Self, PluginError> {
        let bad = |what: String| PluginError::Native(format!("{}: {what}", path.display()));
        // SAFETY: loading runs the library's initialisers. Native plugins are trusted by
        // configuration (off by default, only from configured directories).
        let library =
            unsafe { Library::new(path) }.map_err(|e| bad(format!("cannot load: {e}")))?;
        // SAFETY: the symbols are looked up with the types the C contract declares.
        unsafe {
            let version: Symbol<VersionFn> = library
                .get(b"quiver_plugin_api_version\0")
                .map_err(|_| bad("does not export quiver_plugin_api_version".into()))?;
            let v = version();
            if v != API_VERSION {
                return Err(bad(format!(
                    "implements plugin API {}.{}.{}; this broker supports 0.1.0",
                    v >> 16,
                    (v >> 8) & 0xff,
                    v & 0xff
                )));
            }
            let kind: Symbol<KindFn> = library
                .get(b"quiver_plugin_kind\0")
                .map_err(|_| bad("does not export quiver_plugin_kind".into()))?;
            let kind = CStr::from_ptr(kind()).to_string_lossy().into_owned();
            if kind != "partitioner" {
                return Err(PluginError::WrongKind(format!(
                    "{} is a '{kind}' plugin, not a partitioner",
                    path.display()
                )));
            }
            let init: Symbol<InitFn> = library
                .get(b"quiver_partitioner_init\0")
                .map_err(|_| bad("does not export quiver_partitioner_init".into()))?;
            let partition: Symbol<PartitionFn> = library
                .get(b"quiver_partitioner_partition\0")
                .map_err(|_| bad("does not export quiver_partitioner_partition".into()))?;
            let keys: Vec<QuiverStr> = config
                .iter()
                .map(|(k, _)| QuiverStr {
                    ptr: k.as_ptr(),
                    len: k.len(),
                })
                .collect();
            let values: Vec<QuiverStr> = config
                .iter()
                .map(|(_, v)| QuiverStr {
                    ptr: v.as_ptr(),
                    len: v.len(),
                })
                .collect();
            let mut message = vec![0u8; ERROR_CAPACITY];
            let mut err = QuiverBuf {
                ptr: message.as_mut_ptr(),
                cap: message.len(),
                len: 0,
            };
            if init(keys.as_ptr(), values.as_ptr(), keys.len(), &mut err) != 0 {
                return Err(PluginError::Init(error_text(&message, &err)));
            }
            let partition = *partition;
            Ok(Self {
                path: path.to_path_buf(),
                error: Mutex::new(message),
                partition,
                _library: library,
            })
        }
    }

    /// Chooses a partition for every record of `batch`.
    pub fn partition(
        &self,
        deployment: &Deployment,
        batch: &Columns,
        partitions: u32,
    ) -> Result<Vec<u32>, CallError> {
        let records = batch.offsets.len();
        let abi = QuiverBatch::from_columns(batch);
        let mut out = vec![0u32; records];
        let mut message = self.error.lock();
        let mut err = QuiverBuf {
            ptr: message.as_mut_ptr(),
            cap: message.len(),
            len: 0,
        };
        // SAFETY: `abi` points into `batch`, alive for the call; `out` has room for one
        // partition per record, as the contract says; `err` describes the locked buffer.
        let code = unsafe { (self.partition)(&abi, partitions, out.as_mut_ptr(), &mut err) };
        if code != 0 {
            return Err(CallError::Plugin(error_text(&message, &err)));
        }
        drop(message);
        super::partitioner::check_output(
            &out,
            records,
            partitions,
            deployment.limits.max_output_bytes,
        )?;
        Ok(out)
    }
}

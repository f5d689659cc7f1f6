//! Native plugins: trusted shared libraries implementing the partitioner or transform
//! contract through a C ABI, for hot paths where even a sandbox boundary is too much.
//!
//! They run inside the broker process with no sandbox, so they are off unless
//! `plugins.native.enabled` is set, and only files inside `plugins.native.dirs` are
//! loaded. The library declares its API version and kind through exported symbols,
//! checked before any other symbol is used. Nothing limits what a native call does:
//! no deadline, no memory cap; the host still checks what comes back (output size,
//! well-formed columns), and a caught panic is treated as a WASM trap is.

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libloading::Library;
use parking_lot::Mutex;
use quiver_plugin_sdk::abi::{
    QuiverBatch, QuiverBuf, QuiverStr, QuiverTransformOutput, QUIVER_ERR_INVALID_CONFIG,
    QUIVER_ERR_INVALID_INPUT, QUIVER_ERR_PANIC,
};
use quiver_plugin_sdk::columns::Columns;

use super::transform::Unchecked;
use super::{CallError, Deployment, PluginError};

type VersionFn = unsafe extern "C" fn() -> u32;
type KindFn = unsafe extern "C" fn() -> *const std::ffi::c_char;
type InitFn =
    unsafe extern "C" fn(*const QuiverStr, *const QuiverStr, usize, *mut QuiverBuf) -> i32;
type PartitionFn = unsafe extern "C" fn(*const QuiverBatch, u32, *mut u32, *mut QuiverBuf) -> i32;
type OpenFn = unsafe extern "C" fn(
    *const QuiverStr,
    *const QuiverStr,
    usize,
    *mut *mut c_void,
    *mut QuiverBuf,
) -> i32;
type TransformFn = unsafe extern "C" fn(
    *mut c_void,
    *const QuiverBatch,
    *mut QuiverTransformOutput,
    *mut QuiverBuf,
) -> i32;
type CloseFn = unsafe extern "C" fn(*mut c_void);

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

/// A plugin's message with its error code, worded as a WASM plugin's `plugin-error` is,
/// so an operator reads the same text whichever way the plugin was built.
fn coded(code: i32, message: String) -> String {
    match code {
        QUIVER_ERR_INVALID_CONFIG => format!("invalid config: {message}"),
        QUIVER_ERR_INVALID_INPUT => format!("invalid input: {message}"),
        _ => message,
    }
}

/// Loads the library at `path` (already resolved), checks its API version and that it
/// is a plugin of `kind`.
fn open_library(path: &Path, kind: &str) -> Result<Library, PluginError> {
    let bad = |what: String| PluginError::Native(format!("{}: {what}", path.display()));
    // SAFETY: loading runs the library's initialisers. Native plugins are trusted by
    // configuration (off by default, only from configured directories).
    let library = unsafe { Library::new(path) }.map_err(|e| bad(format!("cannot load: {e}")))?;
    // SAFETY: the symbols are looked up with the types the C contract declares.
    unsafe {
        let version: VersionFn = symbol(&library, path, "quiver_plugin_api_version")?;
        let v = version();
        if v != API_VERSION {
            return Err(bad(format!(
                "implements plugin API {}.{}.{}; this broker supports 0.1.0",
                v >> 16,
                (v >> 8) & 0xff,
                v & 0xff
            )));
        }
        let declared: KindFn = symbol(&library, path, "quiver_plugin_kind")?;
        let declared = CStr::from_ptr(declared()).to_string_lossy().into_owned();
        if declared != kind {
            return Err(PluginError::WrongKind(format!(
                "{} is a '{declared}' plugin, not a {kind}",
                path.display()
            )));
        }
    }
    Ok(library)
}

/// Looks up `name` in `library` as a `T`.
///
/// # Safety
///
/// `T` must be the function type the C contract declares for `name`.
unsafe fn symbol<T: Copy>(library: &Library, path: &Path, name: &str) -> Result<T, PluginError> {
    // SAFETY: forwarded to the caller.
    unsafe { library.get::<T>(name) }
        .map(|s| *s)
        .map_err(|_| PluginError::Native(format!("{}: does not export {name}", path.display())))
}

/// `config` as the two arrays of borrowed strings the C calls take.
fn config_strs(config: &[(String, String)]) -> (Vec<QuiverStr>, Vec<QuiverStr>) {
    config
        .iter()
        .map(|(k, v)| (QuiverStr::new(k), QuiverStr::new(v)))
        .unzip()
}

impl NativePartitioner {
    /// Loads the library at `path` (already resolved) and runs its init with `config`.
    pub fn load(path: &Path, config: &[(String, String)]) -> Result<Self, PluginError> {
        let library = open_library(path, "partitioner")?;
        // SAFETY: the symbols are looked up with the types the C contract declares.
        unsafe {
            let init: InitFn = symbol(&library, path, "quiver_partitioner_init")?;
            let partition: PartitionFn = symbol(&library, path, "quiver_partitioner_partition")?;
            let (keys, values) = config_strs(config);
            let mut message = vec![0u8; ERROR_CAPACITY];
            let mut err = QuiverBuf {
                ptr: message.as_mut_ptr(),
                cap: message.len(),
                len: 0,
            };
            let code = init(keys.as_ptr(), values.as_ptr(), keys.len(), &mut err);
            if code != 0 {
                return Err(PluginError::Init(coded(code, error_text(&message, &err))));
            }
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
            return Err(CallError::Plugin(coded(code, error_text(&message, &err))));
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

/// A loaded native transform library. Instances are opened per running transform
/// (each with its own configuration); each holds the library, so it stays loaded
/// while any instance is open, whatever happens to the deployment.
pub struct NativeTransform {
    path: PathBuf,
    library: Arc<Library>,
    open: OpenFn,
    transform: TransformFn,
    close: CloseFn,
}

impl std::fmt::Debug for NativeTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeTransform")
            .field("path", &self.path)
            .finish()
    }
}

impl NativeTransform {
    /// Loads the library at `path` (already resolved) and looks up its transform
    /// symbols; `init` runs when a transform opens an instance with its configuration.
    pub fn load(path: &Path) -> Result<Self, PluginError> {
        let library = open_library(path, "transform")?;
        // SAFETY: the symbols are looked up with the types the C contract declares.
        let (open, transform, close) = unsafe {
            (
                symbol::<OpenFn>(&library, path, "quiver_transform_open")?,
                symbol::<TransformFn>(&library, path, "quiver_transform_transform")?,
                symbol::<CloseFn>(&library, path, "quiver_transform_close")?,
            )
        };
        Ok(Self {
            path: path.to_path_buf(),
            library: Arc::new(library),
            open,
            transform,
            close,
        })
    }

    /// Opens an instance configured with `config` (its `init` runs now).
    pub fn open(&self, config: &[(String, String)]) -> Result<NativeTransformInstance, CallError> {
        let (keys, values) = config_strs(config);
        let mut message = vec![0u8; ERROR_CAPACITY];
        let mut err = QuiverBuf::new(&mut message);
        let mut ptr = std::ptr::null_mut();
        // SAFETY: both arrays hold `config.len()` strings borrowed from `config`, alive
        // for the call; `ptr` is writable; `err` describes `message`.
        let code = unsafe {
            (self.open)(
                keys.as_ptr(),
                values.as_ptr(),
                keys.len(),
                &mut ptr,
                &mut err,
            )
        };
        if code != 0 || ptr.is_null() {
            return Err(CallError::Init(coded(code, error_text(&message, &err))));
        }
        Ok(NativeTransformInstance {
            ptr,
            transform: self.transform,
            close: self.close,
            message,
            _library: self.library.clone(),
        })
    }
}

/// One open instance of a native transform, closed when dropped.
pub struct NativeTransformInstance {
    ptr: *mut c_void,
    transform: TransformFn,
    close: CloseFn,
    /// The error buffer the library writes a message into, allocated once.
    message: Vec<u8>,
    // Dropped after `close` has run (in `Drop`), so the code stays mapped until then.
    _library: Arc<Library>,
}

// SAFETY: the contract lets an instance be used from any thread, one at a time;
// `&mut self` on every call guarantees the one at a time.
unsafe impl Send for NativeTransformInstance {}

impl std::fmt::Debug for NativeTransformInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeTransformInstance")
            .finish_non_exhaustive()
    }
}

impl NativeTransformInstance {
    /// Transforms `batch`. A panic in the plugin is a [`CallError::Trap`]: the instance
    /// refuses further calls and the caller drops it, as it drops a trapped WASM
    /// instance.
    pub(super) fn transform(&mut self, batch: &Columns) -> Result<Unchecked, CallError> {
        let abi = QuiverBatch::from_columns(batch);
        let mut out = QuiverTransformOutput::empty();
        let mut err = QuiverBuf::new(&mut self.message);
        // SAFETY: `ptr` is a live instance used by this thread alone (`&mut self`);
        // `abi` describes `batch`, alive for the call; `out` and `err` are writable.
        let code = unsafe { (self.transform)(self.ptr, &abi, &mut out, &mut err) };
        if code != 0 {
            let text = coded(code, error_text(&self.message, &err));
            return Err(if code == QUIVER_ERR_PANIC {
                CallError::Trap(text)
            } else {
                CallError::Plugin(text)
            });
        }
        // SAFETY: every pointer of `out` points into the instance, which is not called
        // again nor closed before these copies are made.
        unsafe {
            let failed = (out.failed_code != 0).then(|| {
                let text = String::from_utf8_lossy(out.failed_message.as_bytes()).into_owned();
                (out.failed_offset, coded(out.failed_code, text))
            });
            Ok(Unchecked {
                records: out.records.as_batch().to_columns(),
                targets: out.targets().to_vec(),
                partitions: out.partitions().to_vec(),
                failed,
            })
        }
    }
}

impl Drop for NativeTransformInstance {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from this library's open and is never used again.
        unsafe { (self.close)(self.ptr) };
    }
}

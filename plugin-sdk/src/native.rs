//! The plugin side of the native C ABI (see [`crate::abi`] for the contract).
//!
//! The exported `extern "C"` functions are generated into the plugin crate (they must be
//! symbols of the plugin's own `.so`), but each is a one-line call into the generic
//! functions here, so the unsafe pointer handling and the panic barrier are written and
//! tested once, in the SDK.

use crate::abi::{
    QuiverBatch, QuiverBuf, QuiverStr, QUIVER_ERR_FAILED, QUIVER_ERR_INVALID_CONFIG,
    QUIVER_ERR_INVALID_INPUT, QUIVER_ERR_PANIC, QUIVER_OK,
};
use crate::config::Config;
use crate::error::{PluginError, Result};
use crate::partitioner::{run_partition, Partitioner};
use crate::slot::{init_into, Slot};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `quiver_plugin_kind` for partitioners.
pub const PARTITIONER_KIND: &std::ffi::CStr = c"partitioner";

/// Body of `quiver_partitioner_init`.
///
/// # Safety
///
/// `keys` and `values` point to `n` [`QuiverStr`]s each (either may be null when `n` is
/// 0), each valid as [`QuiverStr::as_bytes`] requires; `err` is null or a valid
/// [`QuiverBuf`].
pub unsafe fn partitioner_init<T: Partitioner + Default>(
    slot: &Slot<T>,
    keys: *const QuiverStr,
    values: *const QuiverStr,
    n: usize,
    err: *mut QuiverBuf,
) -> i32 {
    let outcome = guard(slot, || {
        let mut entries = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: the caller guarantees `n` valid entries behind both pointers.
            let (key, value) = unsafe { ((*keys.add(i)).as_bytes(), (*values.add(i)).as_bytes()) };
            let utf8 = |bytes: &[u8], what: &str| {
                String::from_utf8(bytes.to_vec()).map_err(|_| {
                    PluginError::invalid_config(format!("config {what} {i} is not UTF-8"))
                })
            };
            entries.push((utf8(key, "key")?, utf8(value, "value")?));
        }
        let config = Config::new(entries);
        init_into(slot, |plugin| plugin.init(&config))
    });
    // SAFETY: forwarded to the caller.
    unsafe { report(outcome, err) }
}

/// Body of `quiver_partitioner_partition`.
///
/// # Safety
///
/// `batch` points to a [`QuiverBatch`] valid as [`QuiverBatch::as_batch`] requires; `out`
/// has room for `batch.count` `u32`s; `err` is null or a valid [`QuiverBuf`].
pub unsafe fn partitioner_partition<T: Partitioner>(
    slot: &Slot<T>,
    batch: *const QuiverBatch,
    partitions: u32,
    out: *mut u32,
    err: *mut QuiverBuf,
) -> i32 {
    let outcome = guard(slot, || {
        if batch.is_null() || out.is_null() {
            return Err(PluginError::invalid_input("null batch or output pointer"));
        }
        // SAFETY: the caller guarantees `batch` is valid; `run_partition` validates the
        // columns before reading records.
        let raw = unsafe { &*batch };
        let view = unsafe { raw.as_batch() };
        if view.len() != raw.count {
            return Err(PluginError::invalid_input(format!(
                "batch count is {} but the offsets column has {} entries",
                raw.count,
                view.len()
            )));
        }
        let mut inner = slot.lock();
        let (plugin, scratch) = inner.parts()?;
        run_partition(plugin, &view, partitions, scratch)?;
        // SAFETY: `out` has room for `count` entries and `scratch.len() == count`.
        unsafe { std::ptr::copy_nonoverlapping(scratch.as_ptr(), out, scratch.len()) };
        Ok(())
    });
    // SAFETY: forwarded to the caller.
    unsafe { report(outcome, err) }
}

/// Outcome of a guarded call: the plugin's result, or the message of a caught panic.
enum Outcome {
    Done(Result<()>),
    Panicked(String),
}

/// Runs `f`, catching a panic so it never unwinds into C. After a panic the plugin value
/// may be half-updated, so it is discarded.
fn guard<T>(slot: &Slot<T>, f: impl FnOnce() -> Result<()>) -> Outcome {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => Outcome::Done(result),
        Err(payload) => {
            slot.set(None);
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            Outcome::Panicked(format!("plugin panicked: {message}"))
        }
    }
}

/// Turns an outcome into the C return code, writing the message to `err`.
///
/// # Safety
///
/// `err` is null or a valid [`QuiverBuf`].
unsafe fn report(outcome: Outcome, err: *mut QuiverBuf) -> i32 {
    let (code, message) = match outcome {
        Outcome::Done(Ok(())) => return QUIVER_OK,
        Outcome::Done(Err(e)) => {
            let code = match e {
                PluginError::InvalidConfig(_) => QUIVER_ERR_INVALID_CONFIG,
                PluginError::InvalidInput(_) => QUIVER_ERR_INVALID_INPUT,
                PluginError::Failed(_) => QUIVER_ERR_FAILED,
            };
            (code, e.message().to_owned())
        }
        Outcome::Panicked(message) => (QUIVER_ERR_PANIC, message),
    };
    if !err.is_null() {
        // SAFETY: the caller guarantees a non-null `err` is valid.
        unsafe { (*err).write(&message) };
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::{Batch, ColumnsBuilder};

    #[derive(Default)]
    struct Modulo {
        panic_on: Option<Vec<u8>>,
    }

    impl Partitioner for Modulo {
        fn init(&mut self, config: &Config) -> Result<()> {
            self.panic_on = config.get("panic.on").map(|s| s.as_bytes().to_vec());
            config.check_known(&["panic.on"])?;
            Ok(())
        }

        fn partition_batch(&mut self, batch: &Batch<'_>, n: u32, out: &mut Vec<u32>) -> Result<()> {
            for record in batch {
                let key = record.key().unwrap_or_default();
                assert!(Some(key) != self.panic_on.as_deref(), "boom on {key:?}");
                out.push(key.len() as u32 % n);
            }
            Ok(())
        }
    }

    fn init(slot: &Slot<Modulo>, pairs: &[(&str, &str)], err: &mut QuiverBuf) -> i32 {
        let keys: Vec<_> = pairs.iter().map(|(k, _)| QuiverStr::new(k)).collect();
        let values: Vec<_> = pairs.iter().map(|(_, v)| QuiverStr::new(v)).collect();
        // SAFETY: both arrays hold `pairs.len()` strings borrowed from `pairs`.
        unsafe { partitioner_init(slot, keys.as_ptr(), values.as_ptr(), pairs.len(), err) }
    }

    fn partition(
        slot: &Slot<Modulo>,
        keys: &[&str],
        n: u32,
        err: &mut QuiverBuf,
    ) -> (i32, Vec<u32>) {
        let mut b = ColumnsBuilder::new("t", -1);
        for k in keys {
            b.push(
                Some(k.as_bytes()),
                None,
                &[] as &[(&str, Option<&[u8]>)],
                0,
                -1,
            );
        }
        let columns = b.build();
        let raw = QuiverBatch::from_columns(&columns);
        let mut out = vec![u32::MAX; keys.len()];
        // SAFETY: `raw` describes `columns`; `out` has one slot per record.
        let code = unsafe { partitioner_partition(slot, &raw, n, out.as_mut_ptr(), err) };
        (code, out)
    }

    #[test]
    fn init_and_partition_through_the_c_entry_points() {
        let slot = Slot::new();
        let mut storage = [0u8; 256];
        let mut err = QuiverBuf::new(&mut storage);
        assert_eq!(init(&slot, &[], &mut err), QUIVER_OK);
        let (code, out) = partition(&slot, &["a", "bb", "ccc"], 2, &mut err);
        assert_eq!(code, QUIVER_OK);
        assert_eq!(out, [1, 0, 1]);
    }

    #[test]
    fn errors_map_to_codes_and_messages() {
        let slot = Slot::new();
        let mut storage = [0u8; 256];
        let mut err = QuiverBuf::new(&mut storage);
        let (code, _) = partition(&slot, &["a"], 2, &mut err);
        assert_eq!(code, QUIVER_ERR_FAILED);
        // SAFETY: `err` wrote into `storage`.
        assert_eq!(
            unsafe { err.written() },
            b"plugin called before a successful init"
        );

        assert_eq!(
            init(&slot, &[("nope", "1")], &mut err),
            QUIVER_ERR_INVALID_CONFIG
        );
        // SAFETY: as above.
        let message = String::from_utf8(unsafe { err.written() }.to_vec()).unwrap();
        assert!(
            message.starts_with("unknown config key `nope`"),
            "{message}"
        );
    }

    #[test]
    fn a_panic_is_caught_and_discards_the_plugin() {
        let slot = Slot::new();
        let mut storage = [0u8; 256];
        let mut err = QuiverBuf::new(&mut storage);
        assert_eq!(init(&slot, &[("panic.on", "x")], &mut err), QUIVER_OK);
        let (code, _) = partition(&slot, &["x"], 2, &mut err);
        assert_eq!(code, QUIVER_ERR_PANIC);
        // SAFETY: `err` wrote into `storage`.
        let message = String::from_utf8(unsafe { err.written() }.to_vec()).unwrap();
        assert!(message.starts_with("plugin panicked: boom on"), "{message}");
        let (code, _) = partition(&slot, &["y"], 2, &mut err);
        assert_eq!(
            code, QUIVER_ERR_FAILED,
            "state is gone until init runs again"
        );
        assert_eq!(init(&slot, &[], &mut err), QUIVER_OK);
        assert_eq!(partition(&slot, &["y"], 2, &mut err).0, QUIVER_OK);
    }

    #[test]
    fn a_null_error_buffer_is_tolerated() {
        let slot: Slot<Modulo> = Slot::new();
        let mut b = ColumnsBuilder::new("t", -1);
        b.push(Some(b"a"), None, &[] as &[(&str, Option<&[u8]>)], 0, -1);
        let columns = b.build();
        let raw = QuiverBatch::from_columns(&columns);
        let mut out = [0u32; 1];
        // SAFETY: valid batch and output; `err` may be null.
        let code = unsafe {
            partitioner_partition(&slot, &raw, 2, out.as_mut_ptr(), std::ptr::null_mut())
        };
        assert_eq!(code, QUIVER_ERR_FAILED);
    }
}

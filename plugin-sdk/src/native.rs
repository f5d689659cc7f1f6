//! The plugin side of the native C ABI (see [`crate::abi`] for the contract).
//!
//! The exported `extern "C"` functions are generated into the plugin crate (they must be
//! symbols of the plugin's own `.so`), but each is a one-line call into the generic
//! functions here, so the unsafe pointer handling and the panic barrier are written and
//! tested once, in the SDK.

use crate::abi::{
    QuiverBatch, QuiverBuf, QuiverStr, QuiverTransformOutput, QUIVER_ERR_FAILED,
    QUIVER_ERR_INVALID_CONFIG, QUIVER_ERR_INVALID_INPUT, QUIVER_ERR_PANIC, QUIVER_OK,
};
use crate::config::Config;
use crate::error::{PluginError, Result};
use crate::partitioner::{run_partition, Partitioner};
use crate::slot::{init_into, Slot};
use crate::transform::{Transform, TransformInstance, TransformOutput};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `quiver_plugin_kind` for partitioners.
pub const PARTITIONER_KIND: &std::ffi::CStr = c"partitioner";

/// `quiver_plugin_kind` for transforms.
pub const TRANSFORM_KIND: &std::ffi::CStr = c"transform";

/// The configuration the host passed as two arrays of `n` strings.
///
/// # Safety
///
/// As [`partitioner_init`] requires of `keys`, `values` and `n`.
unsafe fn read_config(
    keys: *const QuiverStr,
    values: *const QuiverStr,
    n: usize,
) -> Result<Config> {
    if n > 0 && (keys.is_null() || values.is_null()) {
        return Err(PluginError::invalid_config("null configuration arrays"));
    }
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: the caller guarantees `n` valid entries behind both pointers.
        let (key, value) = unsafe { ((*keys.add(i)).as_bytes(), (*values.add(i)).as_bytes()) };
        let utf8 = |bytes: &[u8], what: &str| {
            String::from_utf8(bytes.to_vec())
                .map_err(|_| PluginError::invalid_config(format!("config {what} {i} is not UTF-8")))
        };
        entries.push((utf8(key, "key")?, utf8(value, "value")?));
    }
    Ok(Config::new(entries))
}

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
        // SAFETY: forwarded to the caller.
        let config = unsafe { read_config(keys, values, n) }?;
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

/// One configured transform behind a `void *` handed to the host.
struct NativeTransform<T> {
    instance: TransformInstance<T>,
    /// The last call's answer, which the output pointers point into.
    last: Option<TransformOutput>,
    /// Set by a panic: the plugin value may be half-updated, so the instance refuses
    /// every later call and the host replaces it.
    poisoned: bool,
}

/// Body of `quiver_transform_open`: stores a configured instance in `*instance`, or
/// returns the error's code with the reason in `err`.
///
/// # Safety
///
/// As [`partitioner_init`] requires of `keys`, `values`, `n` and `err`; `instance` is
/// valid for a write.
pub unsafe fn transform_open<T: Transform + Default>(
    keys: *const QuiverStr,
    values: *const QuiverStr,
    n: usize,
    instance: *mut *mut c_void,
    err: *mut QuiverBuf,
) -> i32 {
    if instance.is_null() {
        let outcome = Outcome::Done(Err(PluginError::invalid_input("null instance pointer")));
        // SAFETY: forwarded to the caller.
        return unsafe { report(outcome, err) };
    }
    let mut opened = None;
    let outcome = catch(|| {
        // SAFETY: forwarded to the caller.
        let config = unsafe { read_config(keys, values, n) }?;
        let mut instance = TransformInstance::<T>::default();
        instance.init(&config)?;
        opened = Some(Box::new(NativeTransform {
            instance,
            last: None,
            poisoned: false,
        }));
        Ok(())
    });
    // SAFETY: forwarded to the caller.
    let code = unsafe { report(outcome, err) };
    if let (QUIVER_OK, Some(opened)) = (code, opened) {
        // SAFETY: the caller guarantees `instance` is valid for a write.
        unsafe { instance.write(Box::into_raw(opened).cast()) };
    }
    code
}

/// Body of `quiver_transform_transform`.
///
/// # Safety
///
/// `instance` came from [`transform_open`] for the same `T` and is not closed, nor used
/// by another thread during the call; `batch` is valid as [`QuiverBatch::as_batch`]
/// requires; `out` is valid for writes; `err` is null or a valid [`QuiverBuf`].
pub unsafe fn transform_transform<T: Transform>(
    instance: *mut c_void,
    batch: *const QuiverBatch,
    out: *mut QuiverTransformOutput,
    err: *mut QuiverBuf,
) -> i32 {
    if instance.is_null() || batch.is_null() || out.is_null() {
        let outcome = Outcome::Done(Err(PluginError::invalid_input(
            "null instance, batch or output pointer",
        )));
        // SAFETY: forwarded to the caller.
        return unsafe { report(outcome, err) };
    }
    // SAFETY: the caller guarantees a live instance of `T` used by this thread alone.
    let state = unsafe { &mut *instance.cast::<NativeTransform<T>>() };
    if state.poisoned {
        let outcome = Outcome::Done(Err(PluginError::failed(
            "the instance panicked earlier; close it and open another",
        )));
        // SAFETY: forwarded to the caller.
        return unsafe { report(outcome, err) };
    }
    state.last = None;
    let outcome = catch(|| {
        // SAFETY: the caller guarantees `batch` is valid; the instance validates the
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
        state.last = Some(state.instance.transform(&view)?);
        Ok(())
    });
    if matches!(outcome, Outcome::Panicked(_)) {
        state.poisoned = true;
        state.last = None;
    }
    if let (Outcome::Done(Ok(())), Some(last)) = (&outcome, &state.last) {
        let (failed_code, failed_offset, failed_message) = match &last.failed {
            None => (QUIVER_OK, -1, QuiverStr::new("")),
            Some((offset, error)) => (code(error), *offset, QuiverStr::new(error.message())),
        };
        // SAFETY: the caller guarantees `out` is valid for writes; what it points to
        // lives in `state.last` until the next call or the close.
        unsafe {
            out.write(QuiverTransformOutput {
                records: QuiverBatch::from_columns(&last.records),
                targets: last.targets.as_ptr(),
                targets_len: last.targets.len(),
                partitions: last.partitions.as_ptr(),
                partitions_len: last.partitions.len(),
                failed_code,
                failed_offset,
                failed_message,
            })
        };
    }
    // SAFETY: forwarded to the caller.
    unsafe { report(outcome, err) }
}

/// Body of `quiver_transform_close`.
///
/// # Safety
///
/// `instance` is null or came from [`transform_open`] for the same `T`, is not in use
/// and is never used again.
pub unsafe fn transform_close<T: Transform>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: the caller hands over a live instance of `T` for good. A plugin whose
    // drop panics must not unwind into C; what it leaks then is its own.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
        drop(Box::from_raw(instance.cast::<NativeTransform<T>>()))
    }));
}

/// Outcome of a guarded call: the plugin's result, or the message of a caught panic.
enum Outcome {
    Done(Result<()>),
    Panicked(String),
}

/// Runs `f`, catching a panic so it never unwinds into C.
fn catch(f: impl FnOnce() -> Result<()>) -> Outcome {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => Outcome::Done(result),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            Outcome::Panicked(format!("plugin panicked: {message}"))
        }
    }
}

/// [`catch`] for a plugin in a slot: after a panic the plugin value may be
/// half-updated, so it is discarded.
fn guard<T>(slot: &Slot<T>, f: impl FnOnce() -> Result<()>) -> Outcome {
    let outcome = catch(f);
    if matches!(outcome, Outcome::Panicked(_)) {
        slot.set(None);
    }
    outcome
}

/// The C code of a plugin error.
fn code(error: &PluginError) -> i32 {
    match error {
        PluginError::InvalidConfig(_) => QUIVER_ERR_INVALID_CONFIG,
        PluginError::InvalidInput(_) => QUIVER_ERR_INVALID_INPUT,
        PluginError::Failed(_) => QUIVER_ERR_FAILED,
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
        Outcome::Done(Err(e)) => (code(&e), e.message().to_owned()),
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

    /// What a call wrote into `err`, which points into a live buffer of the test.
    fn written(err: &QuiverBuf) -> String {
        // SAFETY: every test's `err` writes into storage that outlives this call.
        String::from_utf8(unsafe { err.written() }.to_vec()).unwrap()
    }

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
        let message = written(&err);
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
        let message = written(&err);
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

    /// Upper-cases values to output 0; fails records whose value is "bad"; panics on
    /// "boom".
    #[derive(Default)]
    struct Upper;

    impl Transform for Upper {
        fn init(&mut self, config: &Config) -> Result<()> {
            config.check_known(&["quiver.input", "quiver.outputs"])?;
            Ok(())
        }

        fn transform(
            &mut self,
            record: &crate::columns::Record<'_>,
            out: &mut crate::transform::Outputs,
        ) -> Result<()> {
            let value = record.value().unwrap_or_default();
            assert!(value != b"boom", "boom at {}", record.offset());
            if value == b"bad" {
                return Err(PluginError::invalid_input("bad value"));
            }
            let upper = value.to_ascii_uppercase();
            out.write(
                0,
                record.key(),
                Some(&upper),
                record.headers(),
                record.timestamp(),
            );
            Ok(())
        }
    }

    fn open_upper(pairs: &[(&str, &str)], err: &mut QuiverBuf) -> *mut c_void {
        let keys: Vec<_> = pairs.iter().map(|(k, _)| QuiverStr::new(k)).collect();
        let values: Vec<_> = pairs.iter().map(|(_, v)| QuiverStr::new(v)).collect();
        let mut instance = std::ptr::null_mut();
        // SAFETY: both arrays hold `pairs.len()` strings borrowed from `pairs`; the
        // instance pointer is writable.
        let code = unsafe {
            transform_open::<Upper>(
                keys.as_ptr(),
                values.as_ptr(),
                pairs.len(),
                &mut instance,
                err,
            )
        };
        assert_eq!(code == QUIVER_OK, !instance.is_null(), "code {code}");
        instance
    }

    fn call_upper(
        instance: *mut c_void,
        values: &[&str],
        err: &mut QuiverBuf,
    ) -> (i32, QuiverTransformOutput) {
        let mut b = ColumnsBuilder::new("in", 0);
        for (i, v) in values.iter().enumerate() {
            b.push(
                Some(b"k"),
                Some(v.as_bytes()),
                &[("h", Some(&b"x"[..]))],
                100 + i as i64,
                10 + i as i64,
            );
        }
        let columns = b.build();
        let raw = QuiverBatch::from_columns(&columns);
        let mut out = QuiverTransformOutput::empty();
        // SAFETY: a live instance of `Upper`, a batch describing `columns`, a writable
        // output.
        let code = unsafe { transform_transform::<Upper>(instance, &raw, &mut out, err) };
        (code, out)
    }

    #[test]
    fn a_transform_instance_answers_through_the_c_entry_points() {
        let mut storage = [0u8; 256];
        let mut err = QuiverBuf::new(&mut storage);
        let instance = open_upper(&[("quiver.outputs", "a")], &mut err);
        assert!(!instance.is_null());
        let (code, out) = call_upper(instance, &["a", "b", "bad", "c"], &mut err);
        assert_eq!(code, QUIVER_OK);
        // SAFETY: `out` points into the instance, alive and not called again yet.
        let records = unsafe { out.records.as_batch() };
        records.validate().unwrap();
        let values: Vec<_> = records
            .iter()
            .map(|r| r.value().unwrap().to_vec())
            .collect();
        assert_eq!(values, [b"A".to_vec(), b"B".to_vec()]);
        assert_eq!(records.offsets, [10, 11]);
        assert_eq!(records.timestamps, [100, 101]);
        assert_eq!(
            records.iter().next().unwrap().header("h"),
            Some(Some(&b"x"[..]))
        );
        // SAFETY: as above.
        assert_eq!(unsafe { out.targets() }, [0, 0]);
        // SAFETY: as above.
        assert_eq!(unsafe { out.partitions() }, [-1, -1]);
        assert_eq!(out.failed_code, QUIVER_ERR_INVALID_INPUT);
        assert_eq!(out.failed_offset, 12);
        // SAFETY: as above.
        assert_eq!(unsafe { out.failed_message.as_bytes() }, b"bad value");
        // SAFETY: the instance is not used again.
        unsafe { transform_close::<Upper>(instance) };
    }

    #[test]
    fn a_bad_configuration_opens_no_instance() {
        let mut storage = [0u8; 256];
        let mut err = QuiverBuf::new(&mut storage);
        let instance = open_upper(&[("nope", "1")], &mut err);
        assert!(instance.is_null());
        let message = written(&err);
        assert!(
            message.starts_with("unknown config key `nope`"),
            "{message}"
        );
    }

    #[test]
    fn a_transform_panic_is_caught_and_poisons_the_instance() {
        let mut storage = [0u8; 256];
        let mut err = QuiverBuf::new(&mut storage);
        let instance = open_upper(&[], &mut err);
        let (code, _) = call_upper(instance, &["a", "boom"], &mut err);
        assert_eq!(code, QUIVER_ERR_PANIC);
        let message = written(&err);
        assert_eq!(message, "plugin panicked: boom at 11");
        let (code, _) = call_upper(instance, &["a"], &mut err);
        assert_eq!(code, QUIVER_ERR_FAILED);
        let message = written(&err);
        assert_eq!(
            message,
            "the instance panicked earlier; close it and open another"
        );
        // SAFETY: the instance is not used again.
        unsafe { transform_close::<Upper>(instance) };
        // Another instance of the same library is unaffected.
        let fresh = open_upper(&[], &mut err);
        assert_eq!(call_upper(fresh, &["a"], &mut err).0, QUIVER_OK);
        // SAFETY: as above.
        unsafe { transform_close::<Upper>(fresh) };
    }

    #[test]
    fn malformed_input_and_null_pointers_fail_the_call() {
        let mut storage = [0u8; 256];
        let mut err = QuiverBuf::new(&mut storage);
        let instance = open_upper(&[], &mut err);
        let mut columns = {
            let mut b = ColumnsBuilder::new("in", 0);
            b.push(
                Some(b"k"),
                Some(b"v"),
                &[] as &[(&str, Option<&[u8]>)],
                0,
                0,
            );
            b.build()
        };
        columns.ends[1] = 99;
        let raw = QuiverBatch::from_columns(&columns);
        let mut out = QuiverTransformOutput::empty();
        // SAFETY: a live instance; `raw` describes `columns`.
        let code = unsafe { transform_transform::<Upper>(instance, &raw, &mut out, &mut err) };
        assert_eq!(code, QUIVER_ERR_INVALID_INPUT);
        // SAFETY: null pointers are refused before use.
        let code =
            unsafe { transform_transform::<Upper>(std::ptr::null_mut(), &raw, &mut out, &mut err) };
        assert_eq!(code, QUIVER_ERR_INVALID_INPUT);
        // SAFETY: the instance is not used again; closing null does nothing.
        unsafe {
            transform_close::<Upper>(instance);
            transform_close::<Upper>(std::ptr::null_mut());
        }
    }
}

//! Where a plugin instance keeps its one plugin value between calls.
//!
//! A component instance (or a loaded native library) holds exactly one plugin value,
//! created by `init` and used by every later call. The generated glue keeps it in a
//! `static Slot<T>`; the test harness keeps one in a local, so both run the same code.
//! The slot is a mutex because a native library may be called from several host threads;
//! on wasm32 (no threads) the lock is an uncontended flag.

use crate::error::{PluginError, Result};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The plugin value of one instance, plus scratch space reused across calls.
pub struct Slot<T> {
    inner: Mutex<SlotInner<T>>,
}

// Manual, so the slot is `Debug` whatever the plugin type is.
impl<T> std::fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

/// The contents of a [`Slot`].
#[derive(Debug)]
pub struct SlotInner<T> {
    /// The initialised plugin, `None` before `init` succeeds (or after a caught panic).
    pub plugin: Option<T>,
    /// Reused output buffer, so native calls do not allocate per batch.
    pub scratch: Vec<u32>,
}

impl<T> Slot<T> {
    /// An empty slot; `const` so it can initialise a `static`.
    pub const fn new() -> Self {
        Slot {
            inner: Mutex::new(SlotInner {
                plugin: None,
                scratch: Vec::new(),
            }),
        }
    }

    /// Locks the slot. A lock poisoned by a panic is recovered: the code that catches
    /// panics clears the plugin, so no half-updated value is ever used again.
    pub fn lock(&self) -> MutexGuard<'_, SlotInner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Installs (or, with `None`, discards) the plugin value.
    pub fn set(&self, plugin: Option<T>) {
        self.lock().plugin = plugin;
    }

    /// Runs `f` on the initialised plugin.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        let mut inner = self.lock();
        f(inner.plugin.as_mut().ok_or_else(not_initialised)?)
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> SlotInner<T> {
    /// The plugin and the scratch buffer, or the not-initialised error.
    pub fn parts(&mut self) -> Result<(&mut T, &mut Vec<u32>)> {
        match self.plugin.as_mut() {
            Some(plugin) => Ok((plugin, &mut self.scratch)),
            None => Err(not_initialised()),
        }
    }
}

/// Calls before a successful `init` are a host bug (the contract says `init` comes first)
/// or follow a failed `init`; either way no configured plugin exists to answer.
pub(crate) fn not_initialised() -> PluginError {
    PluginError::failed("plugin called before a successful init")
}

/// Creates a `T`, runs its `init` hook, and installs it only if `init` succeeds.
pub(crate) fn init_into<T: Default>(
    slot: &Slot<T>,
    init: impl FnOnce(&mut T) -> Result<()>,
) -> Result<()> {
    // Drop any previous value first: a failed re-init must not leave the old
    // configuration serving.
    slot.set(None);
    let mut plugin = T::default();
    init(&mut plugin)?;
    slot.set(Some(plugin));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_before_init_fail_and_failed_init_leaves_nothing() {
        let slot: Slot<u32> = Slot::new();
        assert_eq!(slot.with(|v| Ok(*v)), Err(not_initialised()));
        init_into(&slot, |v| {
            *v = 5;
            Ok(())
        })
        .unwrap();
        assert_eq!(slot.with(|v| Ok(*v)), Ok(5));
        assert!(init_into(&slot, |_| Err(PluginError::invalid_config("no"))).is_err());
        assert!(slot.with(|v| Ok(*v)).is_err());
    }
}

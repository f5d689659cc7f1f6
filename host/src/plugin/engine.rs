//! The one wasmtime engine of a broker: its configuration (component model, pooling
//! allocator, epoch interruption), the thread that advances epochs, and the on-disk
//! cache of compiled components.
//!
//! Compiling a component takes tens of milliseconds; loading a compiled one takes a
//! fraction of one, so every component is compiled once and kept under
//! `<data_dir>/plugins/cache`. The cache key is the component's hash together with a
//! fingerprint of everything that changes the machine code: the wasmtime version and
//! the engine settings. Changing a setting therefore misses the cache instead of
//! loading code compiled for other settings.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;
use crate::config::PluginsConfig;

/// How often the epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// The wasmtime version the host is built against, part of the cache key.
const WASMTIME_VERSION: &str = "48.0.8";

/// The engine, its epoch ticker and its component cache.
pub struct PluginEngine {
    engine: Engine,
    cache_dir: PathBuf,
    fingerprint: String,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("cache_dir", &self.cache_dir)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl PluginEngine {
    /// Builds the engine for `settings`, caching compiled components in `cache_dir`.
    pub fn new(settings: &PluginsConfig, cache_dir: &Path) -> Result<Self, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(settings.max_instances)
            .total_core_instances(settings.max_instances * 8)
            .total_memories(settings.max_instances * 2)
            .total_tables(settings.max_instances * 4)
            .total_stacks(settings.max_instances)
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_memory_size(settings.max_memory_bytes as usize);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // Plugins are called synchronously, one call per instance at a time. The
            // component-model-async bookkeeping (a guest task pushed and torn down per
            // call) cost ~0.3 µs of every call (`plugin_bench`), for no use.
            .concurrency_support(false)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let fingerprint = {
            let mut h = Sha256::new();
            h.update(WASMTIME_VERSION);
            h.update(format!(
                "component-model;no-concurrency;epoch;pooling;{};{};{}",
                settings.max_instances,
                settings.max_memory_bytes,
                std::env::consts::ARCH
            ));
            hex(&h.finalize()[..8])
        };
        fs::create_dir_all(cache_dir).map_err(|source| PluginError::Io {
            path: cache_dir.to_path_buf(),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("quiver-plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Engine(format!("starting the epoch thread: {e}")))?
        };
        Ok(Self {
            engine,
            cache_dir: cache_dir.to_path_buf(),
            fingerprint,
            stop,
            ticker: Some(ticker),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Epoch ticks that make up `timeout` (at least one).
    pub fn ticks(timeout: Duration) -> u64 {
        (timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
    }

    /// Loads `wasm` as a component, from the cache when it was compiled before.
    /// Returns the component and whether it came from the cache.
    pub fn load(&self, wasm: &[u8]) -> Result<(Component, bool), PluginError> {
        let key = format!("{}-{}.cwasm", sha256_hex(wasm), self.fingerprint);
        let path = self.cache_dir.join(key);
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of this engine
            // configuration (the fingerprint is in its name) into a directory only the
            // broker writes; wasmtime additionally checks its header and version.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "discarding unusable compiled component");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        check_component_header(wasm)?;
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| PluginError::NotAComponent(e.root_cause().to_string()))?;
        match component.serialize() {
            Ok(bytes) => {
                let tmp = path.with_extension("tmp");
                // Synced before the rename: after a power loss the name must not point
                // at a file whose blocks never reached the disk, since compiled code is
                // trusted once its header checks out.
                let written = fs::File::create(&tmp)
                    .and_then(|mut file| {
                        std::io::Write::write_all(&mut file, &bytes)?;
                        crate::durability::sync_file_data(&file, &tmp)
                    })
                    .and_then(|_| fs::rename(&tmp, &path));
                if let Err(e) = written {
                    tracing::warn!(file = %path.display(), error = %e, "could not cache a compiled component");
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not serialise a compiled component")
            }
        }
        Ok((component, false))
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Explains the two common ways a file is not a component before the parser does.
pub(crate) fn check_component_header(wasm: &[u8]) -> Result<(), PluginError> {
    const MAGIC: &[u8] = b"\0asm";
    if !wasm.starts_with(MAGIC) {
        return Err(PluginError::NotAComponent(
            "the bytes do not start with the WebAssembly magic number".into(),
        ));
    }
    if wasm.get(4..8) == Some(&[1, 0, 0, 0][..]) {
        return Err(PluginError::NotAComponent(
            "this is a core WebAssembly module, not a component; build the plugin with --target wasm32-wasip2".into(),
        ));
    }
    Ok(())
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the plugin API version a component declares in its `quiver:api-version`
/// custom section (the SDK writes it), looking into nested core modules, without
/// compiling or instantiating anything.
pub fn api_version(wasm: &[u8]) -> Result<Option<String>, PluginError> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| PluginError::NotAComponent(e.to_string()))?;
        if let wasmparser::Payload::CustomSection(section) = payload {
            if section.name() == "quiver:api-version" {
                let version = std::str::from_utf8(section.data()).map_err(|_| {
                    PluginError::NotAComponent("the quiver:api-version section is not UTF-8".into())
                })?;
                return Ok(Some(version.trim().to_string()));
            }
        }
    }
    Ok(None)
}

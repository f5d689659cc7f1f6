//! Plugins: deploying, keeping and calling the WebAssembly components (and, when
//! enabled, trusted native libraries) that carry Quiver's policy.
//!
//! A deploy is validated before it serves: the bytes must be a component, declare a
//! plugin API version this host binds (`quiver:api-version`), link against the sandbox
//! (no import the host does not provide), export the declared kind's world, and
//! initialise with the given configuration. Only then is it stored (versioned, under
//! `<data_dir>/plugins`) and swapped in; a refused deploy leaves the previous version
//! serving. Calls hold an `Arc` of the version they started with, so a swap never
//! drops an in-flight call.
//!
//! Failure policy: a trap discards the instance and the next call gets a fresh one; after
//! `plugins.max_traps` consecutive traps the plugin is marked failed with the reason
//! until it is redeployed or rolled back. What a failed call means for the caller is the
//! caller's policy (a partitioner fails the produce, or falls back to murmur2).

pub mod bindings;
pub mod connector;
pub mod engine;
pub mod metrics;
pub mod native;
pub mod partitioner;
pub mod quota;
pub mod sandbox;
pub mod transform;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use quiver_plugin_sdk::columns::Columns;
use serde::{Deserialize, Serialize};
use wasmtime::component::Linker;

use crate::broker::now_ms;
use crate::config::PluginsConfig;
use crate::controller::state::{Component, PluginMeta};
use connector::{ConnectorSession, Mapped, WasmConnector};
use engine::PluginEngine;
use metrics::{MetricsSnapshot, Outcome, PluginMetrics};
use native::{NativePartitioner, NativeTransform};
use partitioner::WasmPartitioner;
use quota::{PolicyClient, PolicyLimits, PolicyUsage, QuotaPolicySession, WasmQuotaPolicy};
use sandbox::{HostState, LogLine, PluginLog};
use transform::{TransformOutput, TransformSession, WasmTransform};

/// Why a plugin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine could not be set up.
    #[error("plugin engine: {0}")]
    Engine(String),
    /// A limit the deploy asks for is out of its range or past the broker's.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A file under the plugin directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The registry file is damaged.
    #[error("plugin registry {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The name is not acceptable.
    #[error("invalid plugin name '{0}': use 1-64 characters of a-z, 0-9, '-' and '_'")]
    InvalidName(String),
    /// The kind is unknown or not served by this broker yet.
    #[error("{0}")]
    UnsupportedKind(String),
    /// The bytes are not a WebAssembly component.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component declares no or an unsupported plugin API version.
    #[error("{0}")]
    ApiVersion(String),
    /// The component imports something the sandbox does not provide.
    #[error("the component cannot be linked in the sandbox: {0}")]
    Link(String),
    /// The component does not implement the declared kind.
    #[error("{0}")]
    WrongKind(String),
    /// The plugin's `init` refused the configuration or trapped.
    #[error("init failed: {0}")]
    Init(String),
    /// A native plugin could not be loaded.
    #[error("native plugin: {0}")]
    Native(String),
    /// Native plugins are disabled or the file is outside the allowed directories.
    #[error("native plugins: {0}")]
    NativeNotAllowed(String),
    /// No plugin (or version) by that name.
    #[error("no plugin named '{0}'")]
    Unknown(String),
    /// Rollback with no earlier version.
    #[error("plugin '{0}' has no earlier version to roll back to")]
    NoPreviousVersion(String),
    /// The plugin is still referenced.
    #[error("plugin '{name}' is used by topic(s) {topics}; change their configs first")]
    InUse {
        /// The plugin.
        name: String,
        /// The topics using it.
        topics: String,
    },
}

/// Why one call into a plugin failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The instance trapped (panic, deadline, memory cap); it was discarded.
    #[error("trapped: {0}")]
    Trap(String),
    /// `init` of a fresh instance failed.
    #[error("init failed: {0}")]
    Init(String),
    /// The plugin returned an error.
    #[error("returned an error: {0}")]
    Plugin(String),
    /// The plugin returned unusable output.
    #[error("returned bad output: {0}")]
    Output(String),
    /// The plugin is marked failed and is not called.
    #[error("is failed: {0}")]
    Failed(String),
    /// No plugin by that name is deployed.
    #[error("is not deployed")]
    NotDeployed,
    /// The plugin is not of the kind the caller needs.
    #[error("{0}")]
    WrongKind(String),
}

/// The kinds of plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Chooses partitions.
    Partitioner,
    /// Transforms records.
    Transform,
    /// Decides quotas.
    QuotaPolicy,
    /// Mirror policy.
    Connector,
}

impl std::str::FromStr for Kind {
    type Err = PluginError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "partitioner" => Ok(Kind::Partitioner),
            "transform" => Ok(Kind::Transform),
            "quota-policy" => Ok(Kind::QuotaPolicy),
            "connector" => Ok(Kind::Connector),
            other => Err(PluginError::UnsupportedKind(format!(
                "unknown plugin kind '{other}': expected partitioner, transform, quota-policy or connector"
            ))),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Partitioner => "partitioner",
            Kind::Transform => "transform",
            Kind::QuotaPolicy => "quota-policy",
            Kind::Connector => "connector",
        })
    }
}

/// Per-plugin limits; unset fields take the `[plugins]` defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Memory cap per instance, bytes.
    pub max_memory_bytes: Option<u64>,
    /// Deadline per call, ms.
    pub call_timeout_ms: Option<u64>,
    /// Largest output per call, bytes.
    pub max_output_bytes: Option<u64>,
}

/// The range each limit a deploy sets must be in, whatever the broker allows.
pub const LIMIT_RANGES: [(&str, u64, u64); 3] = [
    // A WebAssembly instance needs its stack and data: below 1 MiB no plugin starts.
    ("max_memory_bytes", 1024 * 1024, 4 * 1024 * 1024 * 1024),
    ("call_timeout_ms", 1, 600_000),
    ("max_output_bytes", 1, 1024 * 1024 * 1024),
];

/// A limit a deploy asks for that is out of its range or past the broker's ceiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value} is out of range: {reason}")]
pub struct LimitError {
    /// The limit's name, as the API and the CLI spell it.
    pub field: &'static str,
    /// The value asked for.
    pub value: u64,
    /// What it must be.
    pub reason: String,
}

impl LimitOverrides {
    fn fields(&self) -> [Option<u64>; 3] {
        [
            self.max_memory_bytes,
            self.call_timeout_ms,
            self.max_output_bytes,
        ]
    }

    /// Checks every limit set against its range ([`LIMIT_RANGES`]).
    pub fn check_ranges(&self) -> Result<(), LimitError> {
        for ((field, min, max), value) in LIMIT_RANGES.into_iter().zip(self.fields()) {
            let Some(value) = value else { continue };
            if !(min..=max).contains(&value) {
                return Err(LimitError {
                    field,
                    value,
                    reason: format!("must be between {min} and {max}"),
                });
            }
        }
        Ok(())
    }

    /// Checks every limit set against its range and against the broker's `[plugins]`
    /// value, which is the most a deploy may ask for: a deploy may lower a limit for
    /// its plugin or transform, never raise it past what the operator allows.
    pub fn check(&self, broker: &PluginsConfig) -> Result<(), LimitError> {
        self.check_ranges()?;
        for ((field, _, _), (value, ceiling)) in LIMIT_RANGES
            .into_iter()
            .zip(self.fields().into_iter().zip(ceilings(broker)))
        {
            match value {
                Some(value) if value > ceiling => {
                    return Err(LimitError {
                        field,
                        value,
                        reason: format!("more than this broker's plugins.{field} ({ceiling})"),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The broker's `[plugins]` limits, in the order of [`LIMIT_RANGES`].
fn ceilings(broker: &PluginsConfig) -> [u64; 3] {
    [
        broker.max_memory_bytes,
        broker.call_timeout_ms,
        broker.max_output_bytes,
    ]
}

/// Effective limits of one deployment.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Memory cap per instance, bytes.
    pub max_memory_bytes: u64,
    /// Deadline per call, ms.
    pub call_timeout_ms: u64,
    /// Largest output per call, bytes.
    pub max_output_bytes: u64,
    /// Initialised instances kept for reuse.
    pub idle_instances: usize,
}

impl Limits {
    /// A deployment's limits: its overrides, else the broker's defaults (a transform
    /// without limits of its own).
    fn resolve(defaults: &PluginsConfig, o: &LimitOverrides) -> Self {
        TransformLimits::resolve(defaults, o, &LimitOverrides::default())
            .limits(defaults.idle_instances)
    }

    /// The per-call deadline.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

/// Where one effective limit of a transform's instances comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitSource {
    /// The transform's own setting.
    Transform,
    /// The plugin deployment's override (`quiver plugin deploy --…`).
    Plugin,
    /// The broker's `[plugins]` value: the default, and the ceiling nothing exceeds.
    Broker,
}

/// One effective limit and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SourcedLimit {
    /// The value in force.
    pub value: u64,
    /// Whose setting it is.
    pub source: LimitSource,
}

/// The effective limits of one transform's plugin instances, each with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TransformLimits {
    /// Memory cap per instance, bytes.
    pub max_memory_bytes: SourcedLimit,
    /// Deadline per call, ms.
    pub call_timeout_ms: SourcedLimit,
    /// Largest output per call, bytes.
    pub max_output_bytes: SourcedLimit,
}

impl TransformLimits {
    /// Resolves a transform's limits: its own setting, else its plugin deployment's
    /// override, else the broker's default. The broker's `[plugins]` values are also
    /// ceilings: a deploy asking for more is refused ([`LimitOverrides::check`]), and a
    /// broker whose own value is lower than what a deploy elsewhere (or under an older
    /// configuration) got runs with its own.
    pub fn resolve(
        defaults: &PluginsConfig,
        plugin: &LimitOverrides,
        transform: &LimitOverrides,
    ) -> Self {
        let pick = |t: Option<u64>, p: Option<u64>, broker: u64| {
            let (value, source) = match (t, p) {
                (Some(value), _) => (value, LimitSource::Transform),
                (None, Some(value)) => (value, LimitSource::Plugin),
                (None, None) => (broker, LimitSource::Broker),
            };
            if value > broker {
                SourcedLimit {
                    value: broker,
                    source: LimitSource::Broker,
                }
            } else {
                SourcedLimit { value, source }
            }
        };
        let [memory, timeout, output] = ceilings(defaults);
        Self {
            max_memory_bytes: pick(transform.max_memory_bytes, plugin.max_memory_bytes, memory),
            call_timeout_ms: pick(transform.call_timeout_ms, plugin.call_timeout_ms, timeout),
            max_output_bytes: pick(transform.max_output_bytes, plugin.max_output_bytes, output),
        }
    }

    /// The limits an instance runs with.
    pub fn limits(&self, idle_instances: usize) -> Limits {
        Limits {
            max_memory_bytes: self.max_memory_bytes.value,
            call_timeout_ms: self.call_timeout_ms.value,
            max_output_bytes: self.max_output_bytes.value,
            idle_instances,
        }
    }
}

/// Where a version's code comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A WebAssembly component stored under the plugin directory.
    Wasm {
        /// SHA-256 of the component.
        sha256: String,
    },
    /// A native library inside `plugins.native.dirs`.
    Native {
        /// The library's path.
        path: PathBuf,
    },
}

/// One stored version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// 1, 2, …
    pub version: u32,
    /// The code.
    pub source: Source,
    /// Configuration passed to init.
    pub config: Vec<(String, String)>,
    /// Limit overrides.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// The plugin API version the code declares.
    pub api_version: String,
    /// When it was deployed.
    pub deployed_at_ms: i64,
}

/// A plugin's stored versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Its kind.
    pub kind: Kind,
    /// The version serving.
    pub active: u32,
    /// Every version deployed and still kept, oldest first.
    pub versions: Vec<VersionRecord>,
    /// Set when the serving version was marked failed; kept across restarts until a
    /// deploy or rollback replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failure>,
}

/// Why and when a serving version was marked failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The reason, as `describe` shows it.
    pub reason: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Registry {
    plugins: BTreeMap<String, PluginRecord>,
}

/// A checked version, ready to be recorded (see [`Plugins::prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What the deploy answers.
    pub outcome: DeployOutcome,
    /// The version's record.
    pub record: VersionRecord,
    /// The component (SHA-256 and bytes), for a WebAssembly plugin.
    pub component: Option<(String, bytes::Bytes)>,
}

/// A request to deploy a plugin version.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The plugin's name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its code.
    pub code: Code,
    /// Configuration for init.
    pub config: Vec<(String, String)>,
    /// Limit overrides.
    pub limits: LimitOverrides,
}

/// Code to deploy.
#[derive(Debug, Clone)]
pub enum Code {
    /// Component bytes.
    Wasm(Vec<u8>),
    /// A library file name inside `plugins.native.dirs`.
    Native(String),
}

/// What a successful deploy reports.
#[derive(Debug, Clone, Serialize)]
pub struct DeployOutcome {
    /// The plugin.
    pub name: String,
    /// The version now serving.
    pub version: u32,
    /// Its kind.
    pub kind: Kind,
    /// Whether the compiled component came from the cache.
    pub cached: bool,
    /// Time from receiving the bytes to serving, µs.
    pub deploy_us: u64,
    /// Time to instantiate one instance, µs (WASM only).
    pub instantiate_us: u64,
}

/// The running code of a deployment.
#[derive(Debug)]
enum Runner {
    WasmPartitioner(WasmPartitioner),
    NativePartitioner(NativePartitioner),
    WasmTransform(WasmTransform),
    NativeTransform(NativeTransform),
    WasmConnector(WasmConnector),
    WasmQuotaPolicy(WasmQuotaPolicy),
}

/// Health of a deployment.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Status {
    /// Serving.
    Active,
    /// Not called until redeployed or rolled back.
    Failed {
        /// Why.
        reason: String,
        /// When, ms since the epoch.
        at_ms: i64,
    },
}

/// One serving version of a plugin and everything its calls need.
#[derive(Debug)]
pub struct Deployment {
    /// The plugin.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The version.
    pub version: u32,
    /// Configuration given to init.
    pub config: Vec<(String, String)>,
    /// Effective limits.
    pub limits: Limits,
    /// The overrides the version was deployed with (what a transform's own limits
    /// fall back to, field by field).
    pub overrides: LimitOverrides,
    /// The plugin's log ring.
    pub log: PluginLog,
    /// Counters.
    pub metrics: PluginMetrics,
    /// Time the last fresh instance took to instantiate, µs.
    pub instantiate_us: AtomicU64,
    status: Mutex<Status>,
    /// Whether `status` is `Failed`: what every call checks, without taking the lock.
    failed: AtomicBool,
    consecutive_traps: AtomicU32,
    runner: Runner,
}

/// What `describe` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    /// The plugin.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The version serving.
    pub active_version: u32,
    /// Health of the serving version.
    pub status: Status,
    /// Effective limits.
    pub limits: Limits,
    /// Counters of the serving version.
    pub metrics: MetricsSnapshot,
    /// Every stored version.
    pub versions: Vec<VersionRecord>,
}

/// Every plugin of the broker.
pub struct Plugins {
    settings: PluginsConfig,
    dir: PathBuf,
    engine: PluginEngine,
    linker: Linker<HostState>,
    registry: Mutex<Registry>,
    active: RwLock<BTreeMap<String, Arc<Deployment>>>,
    /// Stored plugins whose serving version did not load at startup, with the reason
    /// and a log holding it.
    unloadable: RwLock<BTreeMap<String, (String, PluginLog)>>,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugins")
            .field("dir", &self.dir)
            .field("active", &self.active.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Plugins {
    /// Opens the plugin directory under `data_dir` and brings every active version back.
    /// A stored plugin that no longer loads is kept and reported failed, not fatal.
    pub fn open(settings: &PluginsConfig, data_dir: &Path) -> Result<Self, PluginError> {
        let dir = data_dir.join("plugins");
        crate::durability::create_dir_all(&dir).map_err(|source| PluginError::Io {
            path: dir.clone(),
            source,
        })?;
        let engine = PluginEngine::new(settings, &dir.join("cache"))?;
        let mut linker = Linker::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let registry_path = dir.join("registry.json");
        let registry: Registry = match fs::read(&registry_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| PluginError::Corrupt {
                path: registry_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::default(),
            Err(source) => {
                return Err(PluginError::Io {
                    path: registry_path,
                    source,
                })
            }
        };
        let plugins = Self {
            settings: settings.clone(),
            dir,
            engine,
            linker,
            registry: Mutex::new(Registry::default()),
            active: RwLock::new(BTreeMap::new()),
            unloadable: RwLock::new(BTreeMap::new()),
        };
        for (name, record) in &registry.plugins {
            let Some(version) = record.versions.iter().find(|v| v.version == record.active) else {
                continue;
            };
            match plugins.load(name, record.kind, version) {
                Ok((deployment, _)) => {
                    if let Some(failure) = &record.failed {
                        // Failed before the restart: stays failed until replaced.
                        deployment.mark_failed(failure.reason.clone(), failure.at_ms);
                    }
                    plugins
                        .active
                        .write()
                        .insert(name.clone(), Arc::new(deployment));
                }
                Err(e) => {
                    tracing::error!(plugin = %name, version = version.version, error = %e, "stored plugin does not load");
                    let reason = format!("version {} does not load: {e}", version.version);
                    let log = PluginLog::default();
                    log.push("host", &reason);
                    plugins
                        .unloadable
                        .write()
                        .insert(name.clone(), (reason, log));
                }
            }
        }
        *plugins.registry.lock() = registry;
        Ok(plugins)
    }

    fn wasm_path(&self, name: &str, sha256: &str) -> PathBuf {
        self.dir.join(name).join(format!("{sha256}.wasm"))
    }

    /// Compiles/links/initialises one stored or new version.
    fn load(
        &self,
        name: &str,
        kind: Kind,
        version: &VersionRecord,
    ) -> Result<(Deployment, bool), PluginError> {
        let limits = Limits::resolve(&self.settings, &version.limits);
        let log = PluginLog::default();
        let (runner, cached) = match &version.source {
            Source::Wasm { sha256 } => {
                let path = self.wasm_path(name, sha256);
                let wasm = fs::read(&path).map_err(|source| PluginError::Io { path, source })?;
                let (component, cached) = self.engine.load(&wasm)?;
                let runner = match kind {
                    Kind::Transform => {
                        Runner::WasmTransform(WasmTransform::new(&component, &self.linker)?)
                    }
                    Kind::Connector => {
                        Runner::WasmConnector(WasmConnector::new(&component, &self.linker)?)
                    }
                    Kind::QuotaPolicy => {
                        Runner::WasmQuotaPolicy(WasmQuotaPolicy::new(&component, &self.linker)?)
                    }
                    Kind::Partitioner => {
                        Runner::WasmPartitioner(WasmPartitioner::new(&component, &self.linker)?)
                    }
                };
                (runner, cached)
            }
            Source::Native { path } => {
                if !matches!(kind, Kind::Partitioner | Kind::Transform) {
                    return Err(PluginError::UnsupportedKind(format!(
                        "native plugins can be partitioners or transforms; a {kind} must be a WASM component"
                    )));
                }
                if !self.settings.native.enabled {
                    return Err(PluginError::NativeNotAllowed(
                        "disabled (set plugins.native.enabled = true)".into(),
                    ));
                }
                let runner = if kind == Kind::Transform {
                    Runner::NativeTransform(NativeTransform::load(path)?)
                } else {
                    Runner::NativePartitioner(NativePartitioner::load(path, &version.config)?)
                };
                (runner, false)
            }
        };
        let deployment = Deployment {
            name: name.to_string(),
            kind,
            version: version.version,
            config: version.config.clone(),
            limits,
            overrides: version.limits.clone(),
            log,
            metrics: PluginMetrics::default(),
            instantiate_us: AtomicU64::new(0),
            status: Mutex::new(Status::Active),
            failed: AtomicBool::new(false),
            consecutive_traps: AtomicU32::new(0),
            runner,
        };
        let warmed = match &deployment.runner {
            Runner::WasmPartitioner(runner) => runner.warm_up(&self.engine, &deployment),
            Runner::WasmTransform(runner) => runner.warm_up(&self.engine, &deployment),
            Runner::WasmConnector(runner) => runner.warm_up(&self.engine, &deployment),
            Runner::WasmQuotaPolicy(runner) => runner.warm_up(&self.engine, &deployment),
            Runner::NativePartitioner(_) | Runner::NativeTransform(_) => Ok(()),
        };
        warmed.map_err(|e| match e {
            CallError::Init(m) => PluginError::Init(m),
            other => PluginError::Init(other.to_string()),
        })?;
        deployment.log.push(
            "host",
            &format!(
                "version {} loaded ({})",
                version.version,
                if cached {
                    "compiled code from cache"
                } else {
                    "compiled"
                }
            ),
        );
        Ok((deployment, cached))
    }

    /// Checks a deploy request and builds its version record, numbered `version`:
    /// limits within their ranges and the broker's `[plugins]` values, a component of
    /// the declared kind's world and a supported API version, stored
    /// under the plugin directory, compiled, instantiated and initialised with its
    /// config. Nothing serves it yet; the component's bytes come back for the
    /// cluster's metadata.
    pub fn prepare(
        &self,
        request: DeployRequest,
        version: u32,
        current: Option<Kind>,
    ) -> Result<Prepared, PluginError> {
        let started = Instant::now();
        if !valid_name(&request.name) {
            return Err(PluginError::InvalidName(request.name));
        }
        request.limits.check(&self.settings)?;
        if let Some(existing) = current.filter(|k| *k != request.kind) {
            return Err(PluginError::UnsupportedKind(format!(
                "plugin '{}' is a {existing}; a {} cannot replace it (remove it first)",
                request.name, request.kind
            )));
        }
        let (source, api_version, component) = match request.code {
            Code::Wasm(bytes) => {
                engine::check_component_header(&bytes)?;
                let api = engine::api_version(&bytes)?.ok_or_else(|| {
                    PluginError::ApiVersion(
                        "the component declares no plugin API version (custom section quiver:api-version); build it with quiver-plugin-sdk".into(),
                    )
                })?;
                if !bindings::SUPPORTED_API_VERSIONS.contains(&api.as_str()) {
                    return Err(PluginError::ApiVersion(format!(
                        "the component implements plugin API {api}; this broker supports {}",
                        bindings::SUPPORTED_API_VERSIONS.join(", ")
                    )));
                }
                let sha256 = engine::sha256_hex(&bytes);
                self.store_component(&request.name, &sha256, &bytes)?;
                (
                    Source::Wasm {
                        sha256: sha256.clone(),
                    },
                    api,
                    Some((sha256, bytes::Bytes::from(bytes))),
                )
            }
            Code::Native(file) => {
                if !self.settings.native.enabled {
                    return Err(PluginError::NativeNotAllowed(
                        "disabled (set plugins.native.enabled = true)".into(),
                    ));
                }
                let path = native::resolve(&file, &self.settings.native.dirs)?;
                (Source::Native { path }, "0.1.0".to_string(), None)
            }
        };
        let record = VersionRecord {
            version,
            source,
            config: request.config,
            limits: request.limits,
            api_version,
            deployed_at_ms: now_ms(),
        };
        // Validation: everything up to a successful init, before anything is recorded.
        let (deployment, cached) = self.load(&request.name, request.kind, &record)?;
        Ok(Prepared {
            outcome: DeployOutcome {
                name: request.name,
                version,
                kind: request.kind,
                cached,
                deploy_us: started.elapsed().as_micros() as u64,
                instantiate_us: deployment.instantiate_us.load(Ordering::Relaxed),
            },
            record,
            component,
        })
    }

    fn store_component(&self, name: &str, sha256: &str, bytes: &[u8]) -> Result<(), PluginError> {
        let path = self.wasm_path(name, sha256);
        if path.exists() {
            return Ok(());
        }
        let io = |source| PluginError::Io {
            path: path.clone(),
            source,
        };
        let dir = path.parent().expect("has a parent");
        crate::durability::create_dir_all(dir).map_err(io)?;
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut file = fs::File::create(&tmp).map_err(io)?;
            file.write_all(bytes).map_err(io)?;
            // The registry that names this component is persisted after it: both must
            // be on disk before a deploy is answered, or a power loss could leave a
            // registry pointing at a component that is not there.
            crate::durability::sync_file(&file, &tmp).map_err(io)?;
        }
        fs::rename(&tmp, &path).map_err(io)?;
        crate::durability::sync_dir(dir).map_err(io)
    }

    /// Validates and deploys a new version on this broker alone; on success it serves
    /// immediately. (A broker's admin API deploys through the cluster instead:
    /// [`prepare`](Self::prepare), then the metadata, then [`sync`](Self::sync).)
    pub fn deploy(&self, request: DeployRequest) -> Result<DeployOutcome, PluginError> {
        let (next_version, current) = {
            let registry = self.registry.lock();
            let record = registry.plugins.get(&request.name);
            (
                record
                    .and_then(|r| r.versions.iter().map(|v| v.version).max())
                    .unwrap_or(0)
                    + 1,
                record.map(|r| r.kind),
            )
        };
        let name = request.name.clone();
        let kind = request.kind;
        let prepared = self.prepare(request, next_version, current)?;
        let mut registry = self.registry.lock();
        let mut next = Registry {
            plugins: registry.plugins.clone(),
        };
        let record = next
            .plugins
            .entry(name.clone())
            .or_insert_with(|| PluginRecord {
                kind,
                active: next_version,
                versions: Vec::new(),
                failed: None,
            });
        record.active = next_version;
        record.failed = None;
        record.versions.push(prepared.record.clone());
        let (deployment, _) = self.load(&name, kind, &prepared.record)?;
        self.persist(&next)?;
        *registry = next;
        self.serve(
            &name,
            deployment,
            &format!("version {next_version} deployed and serving"),
        );
        tracing::info!(plugin = %name, version = next_version, kind = %kind, deploy_us = prepared.outcome.deploy_us, "plugin deployed");
        Ok(prepared.outcome)
    }

    /// Brings this broker's plugins in line with the cluster's: components written,
    /// each plugin's record taken as given, a changed serving version loaded (a
    /// version that does not load here is reported unloadable with the reason), and
    /// plugins the cluster no longer has removed. A plugin whose serving version did
    /// not change keeps its health (a failed one stays failed until replaced).
    pub fn sync(&self, wanted: &BTreeMap<String, PluginMeta>) {
        let mut changed = false;
        let mut registry = self.registry.lock();
        let mut next = Registry {
            plugins: registry.plugins.clone(),
        };
        for (name, meta) in wanted {
            let local = next.plugins.get(name);
            let same = local.is_some_and(|r| {
                r.kind == meta.record.kind
                    && r.active == meta.record.active
                    && r.versions == meta.record.versions
            });
            if same {
                continue;
            }
            changed = true;
            for (sha256, Component(bytes)) in &meta.code {
                if let Err(e) = self.store_component(name, sha256, bytes) {
                    tracing::error!(plugin = %name, error = %e, "could not store a plugin component");
                }
            }
            let mut record = meta.record.clone();
            let serving = self.active.read().get(name).map(|d| (d.kind, d.version));
            if serving == Some((record.kind, record.active)) {
                record.failed = local.and_then(|r| r.failed.clone());
            } else {
                record.failed = None;
                let version = record.versions.iter().find(|v| v.version == record.active);
                match version.map(|v| self.load(name, record.kind, v)) {
                    Some(Ok((deployment, _))) => {
                        self.serve(
                            name,
                            deployment,
                            &format!("version {} serving (from the cluster)", record.active),
                        );
                        tracing::info!(plugin = %name, version = record.active, kind = %record.kind, "plugin serving");
                    }
                    Some(Err(e)) => {
                        let reason = format!("version {} does not load here: {e}", record.active);
                        tracing::error!(plugin = %name, version = record.active, error = %e, "plugin version does not load on this broker");
                        let log = PluginLog::default();
                        log.push("host", &reason);
                        self.active.write().remove(name);
                        self.unloadable.write().insert(name.clone(), (reason, log));
                    }
                    None => {}
                }
            }
            next.plugins.insert(name.clone(), record);
        }
        let gone: Vec<String> = next
            .plugins
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            changed = true;
            next.plugins.remove(&name);
            self.forget(&name);
        }
        if !changed {
            return;
        }
        if let Err(e) = self.persist(&next) {
            tracing::error!(error = %e, "could not store the plugin registry");
        }
        *registry = next;
    }

    /// The plugin records of this broker, for adopting them into the cluster's
    /// metadata, with the components they name.
    pub fn stored(&self) -> BTreeMap<String, (PluginRecord, BTreeMap<String, bytes::Bytes>)> {
        let registry = self.registry.lock();
        registry
            .plugins
            .iter()
            .map(|(name, record)| {
                let code = record
                    .versions
                    .iter()
                    .filter_map(|v| match &v.source {
                        Source::Wasm { sha256 } => fs::read(self.wasm_path(name, sha256))
                            .ok()
                            .map(|b| (sha256.clone(), bytes::Bytes::from(b))),
                        Source::Native { .. } => None,
                    })
                    .collect();
                (name.clone(), (record.clone(), code))
            })
            .collect()
    }

    /// Serves the version before the active one again.
    pub fn rollback(&self, name: &str) -> Result<u32, PluginError> {
        let mut registry = self.registry.lock();
        let record = registry
            .plugins
            .get(name)
            .ok_or_else(|| PluginError::Unknown(name.to_string()))?;
        let previous = record
            .versions
            .iter()
            .filter(|v| v.version < record.active)
            .max_by_key(|v| v.version)
            .cloned()
            .ok_or_else(|| PluginError::NoPreviousVersion(name.to_string()))?;
        let (deployment, _) = self.load(name, record.kind, &previous)?;
        let mut next = Registry {
            plugins: registry.plugins.clone(),
        };
        let record = next.plugins.get_mut(name).expect("present");
        record.active = previous.version;
        record.failed = None;
        self.persist(&next)?;
        *registry = next;
        self.serve(
            name,
            deployment,
            &format!("rolled back to version {}", previous.version),
        );
        tracing::info!(
            plugin = name,
            version = previous.version,
            "plugin rolled back"
        );
        Ok(previous.version)
    }

    /// Removes a plugin and all its versions. `in_use` lists the topics referencing it;
    /// a plugin in use is not removed.
    pub fn remove(&self, name: &str, in_use: &[String]) -> Result<(), PluginError> {
        if !in_use.is_empty() {
            return Err(PluginError::InUse {
                name: name.to_string(),
                topics: in_use.join(", "),
            });
        }
        let mut registry = self.registry.lock();
        if !registry.plugins.contains_key(name) {
            return Err(PluginError::Unknown(name.to_string()));
        }
        let mut next = Registry {
            plugins: registry.plugins.clone(),
        };
        next.plugins.remove(name);
        self.persist(&next)?;
        *registry = next;
        self.forget(name);
        Ok(())
    }

    /// Makes `deployment` the serving version of `name`, noting `event` in its log.
    fn serve(&self, name: &str, deployment: Deployment, event: &str) {
        deployment.log.push("host", event);
        self.unloadable.write().remove(name);
        self.active
            .write()
            .insert(name.to_string(), Arc::new(deployment));
    }

    /// Stops serving `name` and deletes its files (the registry is the caller's).
    fn forget(&self, name: &str) {
        self.active.write().remove(name);
        self.unloadable.write().remove(name);
        if let Err(e) = fs::remove_dir_all(self.dir.join(name)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(plugin = name, error = %e, "could not remove plugin files");
            }
        }
        tracing::info!(plugin = name, "plugin removed");
    }

    fn persist(&self, registry: &Registry) -> Result<(), PluginError> {
        let path = self.dir.join("registry.json");
        let io = |source| PluginError::Io {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(registry).expect("registry serialises");
        {
            use std::io::Write;
            let mut file = fs::File::create(&tmp).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            crate::durability::sync_file(&file, &tmp).map_err(io)?;
        }
        fs::rename(&tmp, &path).map_err(io)?;
        crate::durability::sync_dir(&self.dir).map_err(io)
    }

    /// Every plugin with its serving version.
    pub fn list(&self) -> Vec<Description> {
        let names: Vec<String> = self.registry.lock().plugins.keys().cloned().collect();
        names.iter().filter_map(|n| self.describe(n)).collect()
    }

    /// One plugin in detail.
    pub fn describe(&self, name: &str) -> Option<Description> {
        let record = self.registry.lock().plugins.get(name).cloned()?;
        let active = self.active.read().get(name).cloned();
        let (status, limits, metrics) = match &active {
            Some(d) => (d.status(), d.limits.clone(), d.metrics.snapshot()),
            None => (
                Status::Failed {
                    reason: self
                        .unloadable
                        .read()
                        .get(name)
                        .map(|(reason, _)| reason.clone())
                        .unwrap_or_else(|| "the stored version does not load".into()),
                    at_ms: 0,
                },
                Limits::resolve(&self.settings, &LimitOverrides::default()),
                PluginMetrics::default().snapshot(),
            ),
        };
        Some(Description {
            name: name.to_string(),
            kind: record.kind,
            active_version: record.active,
            status,
            limits,
            metrics,
            versions: record.versions,
        })
    }

    /// The last `n` lines of a plugin's log.
    pub fn logs(&self, name: &str, n: usize) -> Option<Vec<LogLine>> {
        if let Some(d) = self.active.read().get(name) {
            return Some(d.log.tail(n));
        }
        self.unloadable.read().get(name).map(|(_, log)| log.tail(n))
    }

    /// The serving version of a plugin.
    pub fn get(&self, name: &str) -> Option<Arc<Deployment>> {
        self.active.read().get(name).cloned()
    }

    /// Runs the partitioner `name` over `batch`.
    pub fn partition(
        &self,
        name: &str,
        batch: Columns,
        partitions: u32,
    ) -> Result<Vec<u32>, CallError> {
        let Some(deployment) = self.get(name) else {
            return Err(match self.unloadable.read().get(name) {
                Some((reason, _)) => CallError::Failed(reason.clone()),
                None => CallError::NotDeployed,
            });
        };
        let result = deployment.partition(&self.engine, batch, partitions, self.settings.max_traps);
        if result.is_err() {
            if let Status::Failed { reason, at_ms } = deployment.status() {
                self.persist_failure(name, deployment.version, reason, at_ms);
            }
        }
        result
    }

    /// Opens a session of the transform plugin `name` for one running transform:
    /// `config` is appended to the plugin's own configuration, the instances get the
    /// transform's `limits` (over the deployment's, see [`TransformLimits::resolve`])
    /// and `init` runs now.
    pub fn open_transform(
        &self,
        name: &str,
        config: Vec<(String, String)>,
        limits: &LimitOverrides,
    ) -> Result<TransformSession, CallError> {
        let Some(deployment) = self.get(name) else {
            return Err(match self.unloadable.read().get(name) {
                Some((reason, _)) => CallError::Failed(reason.clone()),
                None => CallError::NotDeployed,
            });
        };
        let limits = TransformLimits::resolve(&self.settings, &deployment.overrides, limits)
            .limits(self.settings.idle_instances);
        TransformSession::open(&self.engine, deployment, config, limits)
    }

    /// The limits a transform with `limits` of its own gets on this broker from the
    /// serving version of the plugin `name` (the broker's defaults under its own
    /// overrides when the plugin is not loaded here).
    pub fn transform_limits(&self, name: &str, limits: &LimitOverrides) -> TransformLimits {
        let plugin = self
            .get(name)
            .map(|d| d.overrides.clone())
            .unwrap_or_default();
        TransformLimits::resolve(&self.settings, &plugin, limits)
    }

    /// Opens a session of the connector plugin `name` for one mirror: `config` is
    /// appended to the plugin's own configuration and `init` runs now.
    pub fn open_connector(
        &self,
        name: &str,
        config: Vec<(String, String)>,
    ) -> Result<ConnectorSession, CallError> {
        let Some(deployment) = self.get(name) else {
            return Err(match self.unloadable.read().get(name) {
                Some((reason, _)) => CallError::Failed(reason.clone()),
                None => CallError::NotDeployed,
            });
        };
        ConnectorSession::open(&self.engine, deployment, config)
    }

    /// Opens a session of the serving version of the quota-policy plugin `name`; `init`
    /// runs now.
    pub fn open_quota_policy(&self, name: &str) -> Result<QuotaPolicySession, CallError> {
        let Some(deployment) = self.get(name) else {
            return Err(match self.unloadable.read().get(name) {
                Some((reason, _)) => CallError::Failed(reason.clone()),
                None => CallError::NotDeployed,
            });
        };
        QuotaPolicySession::open(&self.engine, deployment)
    }

    /// Persists a failure a session's call has just caused.
    fn note_failure<T>(&self, deployment: &Deployment, result: &Result<T, CallError>) {
        if result.is_err() {
            if let Status::Failed { reason, at_ms } = deployment.status() {
                self.persist_failure(&deployment.name, deployment.version, reason, at_ms);
            }
        }
    }

    /// The quota key a policy gives `client`.
    pub fn quota_key(
        &self,
        session: &mut QuotaPolicySession,
        client: &PolicyClient,
    ) -> Result<String, CallError> {
        let result = session.quota_key(&self.engine, self.settings.max_traps, client);
        self.note_failure(&session.deployment().clone(), &result);
        result
    }

    /// The limits a policy gives a new key.
    pub fn initial_limits(
        &self,
        session: &mut QuotaPolicySession,
        key: &str,
    ) -> Result<PolicyLimits, CallError> {
        let result = session.initial_limits(&self.engine, self.settings.max_traps, key);
        self.note_failure(&session.deployment().clone(), &result);
        result
    }

    /// The limits a policy changes after a window.
    pub fn rebalance(
        &self,
        session: &mut QuotaPolicySession,
        window_ms: u32,
        usage: &[PolicyUsage],
    ) -> Result<Vec<(String, PolicyLimits)>, CallError> {
        let result = session.rebalance(&self.engine, self.settings.max_traps, window_ms, usage);
        self.note_failure(&session.deployment().clone(), &result);
        result
    }

    /// The target topic a connector session names for a source topic.
    pub fn target_topic(
        &self,
        session: &mut ConnectorSession,
        alias: &str,
        topic: &str,
    ) -> Result<Option<String>, CallError> {
        session.target_topic(&self.engine, alias, topic)
    }

    /// Whether a connector session mirrors a group's offsets.
    pub fn mirror_group(
        &self,
        session: &mut ConnectorSession,
        alias: &str,
        group: &str,
    ) -> Result<bool, CallError> {
        session.mirror_group(&self.engine, alias, group)
    }

    /// Runs one fetched batch through a connector session.
    pub fn map_records(
        &self,
        session: &mut ConnectorSession,
        alias: &str,
        batch: Columns,
    ) -> Result<Mapped, CallError> {
        session.map_records(&self.engine, alias, batch)
    }

    /// Runs one batch through a transform session.
    pub fn transform(
        &self,
        session: &mut TransformSession,
        batch: Columns,
    ) -> Result<TransformOutput, CallError> {
        session.transform(&self.engine, batch)
    }

    /// Records that the serving version of `name` failed, so a restart keeps it failed.
    fn persist_failure(&self, name: &str, version: u32, reason: String, at_ms: i64) {
        let mut registry = self.registry.lock();
        let Some(record) = registry.plugins.get(name) else {
            return;
        };
        if record.active != version || record.failed.is_some() {
            return;
        }
        let mut next = Registry {
            plugins: registry.plugins.clone(),
        };
        next.plugins.get_mut(name).expect("present").failed = Some(Failure { reason, at_ms });
        match self.persist(&next) {
            Ok(()) => *registry = next,
            Err(e) => {
                tracing::error!(plugin = name, error = %e, "could not record that the plugin failed")
            }
        }
    }
}

impl Deployment {
    /// A store for one instance of this version: the sandbox's host state, the memory
    /// cap as its limiter, and a first call deadline (instantiation runs start
    /// functions).
    fn new_store(&self, engine: &PluginEngine) -> wasmtime::Store<HostState> {
        self.new_store_with(engine, &self.limits)
    }

    /// [`new_store`](Self::new_store) with other limits than the deployment's (a
    /// transform's own).
    fn new_store_with(&self, engine: &PluginEngine, limits: &Limits) -> wasmtime::Store<HostState> {
        let mut store = wasmtime::Store::new(
            engine.engine(),
            HostState::new(&self.log, limits.max_memory_bytes),
        );
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(PluginEngine::ticks(limits.call_timeout()));
        store
    }

    /// Health of this version.
    pub fn status(&self) -> Status {
        self.status.lock().clone()
    }

    /// Counts a call's outcome toward marking this version failed: traps and unusable
    /// answers are misbehaviour; an error the plugin returns is it speaking for itself.
    /// `what` names the call in the log (empty for a kind with a single call).
    fn judge<T>(&self, result: &Result<T, CallError>, max_traps: u32, what: &str) {
        let what = if what.is_empty() {
            String::new()
        } else {
            format!("{what}: ")
        };
        match result {
            Ok(_) => self.consecutive_traps.store(0, Ordering::Relaxed),
            Err(e @ (CallError::Trap(_) | CallError::Output(_))) => {
                let (wording, last) = match e {
                    CallError::Trap(reason) => {
                        self.log.push("host", &format!("{what}trap: {reason}"));
                        ("traps", reason.clone())
                    }
                    other => {
                        self.log
                            .push("host", &format!("{what}call failed: {other}"));
                        ("failed calls", other.to_string())
                    }
                };
                let count = self.consecutive_traps.fetch_add(1, Ordering::Relaxed) + 1;
                if count >= max_traps {
                    let reason = format!("{count} consecutive {wording}; last: {last}");
                    self.log.push("host", &format!("marked failed: {reason}"));
                    tracing::error!(plugin = %self.name, version = self.version, %reason, "plugin marked failed");
                    self.mark_failed(reason, now_ms());
                }
            }
            Err(e) => self.log.push("host", &format!("{what}call failed: {e}")),
        }
    }

    /// Stops serving this version: every later call fails with `reason`.
    fn mark_failed(&self, reason: String, at_ms: i64) {
        let mut status = self.status.lock();
        *status = Status::Failed { reason, at_ms };
        self.failed.store(true, Ordering::Release);
    }

    fn partition(
        &self,
        engine: &PluginEngine,
        batch: Columns,
        partitions: u32,
        max_traps: u32,
    ) -> Result<Vec<u32>, CallError> {
        if self.failed.load(Ordering::Acquire) {
            if let Status::Failed { reason, .. } = self.status() {
                return Err(CallError::Failed(reason));
            }
        }
        let records = batch.offsets.len();
        let started = Instant::now();
        let result = match &self.runner {
            Runner::WasmPartitioner(r) => r.partition(engine, self, batch, partitions),
            Runner::NativePartitioner(r) => r.partition(self, &batch, partitions),
            Runner::WasmTransform(_)
            | Runner::NativeTransform(_)
            | Runner::WasmConnector(_)
            | Runner::WasmQuotaPolicy(_) => Err(CallError::WrongKind(format!(
                "plugin '{}' is a {}, not a partitioner",
                self.name, self.kind
            ))),
        };
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(CallError::Trap(_)) => Outcome::Trap,
            Err(_) => Outcome::Error,
        };
        self.metrics.record(records, started.elapsed(), outcome);
        self.judge(&result, max_traps, "");
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(memory: Option<u64>, timeout: Option<u64>, output: Option<u64>) -> LimitOverrides {
        LimitOverrides {
            max_memory_bytes: memory,
            call_timeout_ms: timeout,
            max_output_bytes: output,
        }
    }

    fn sourced(value: u64, source: LimitSource) -> SourcedLimit {
        SourcedLimit { value, source }
    }

    #[test]
    fn a_transforms_limits_override_its_plugins_which_override_the_brokers() {
        let broker = PluginsConfig::default();
        let none = LimitOverrides::default();
        let r = TransformLimits::resolve(&broker, &none, &none);
        assert_eq!(
            r,
            TransformLimits {
                max_memory_bytes: sourced(64 << 20, LimitSource::Broker),
                call_timeout_ms: sourced(500, LimitSource::Broker),
                max_output_bytes: sourced(16 << 20, LimitSource::Broker),
            }
        );
        let plugin = overrides(Some(32 << 20), Some(100), None);
        let r = TransformLimits::resolve(&broker, &plugin, &overrides(None, Some(50), Some(4096)));
        assert_eq!(
            r,
            TransformLimits {
                max_memory_bytes: sourced(32 << 20, LimitSource::Plugin),
                call_timeout_ms: sourced(50, LimitSource::Transform),
                max_output_bytes: sourced(4096, LimitSource::Transform),
            }
        );
        // A transform may ask for more than its plugin's override, up to the broker's cap.
        let r = TransformLimits::resolve(&broker, &plugin, &overrides(Some(48 << 20), None, None));
        assert_eq!(
            r.max_memory_bytes,
            sourced(48 << 20, LimitSource::Transform)
        );
        assert_eq!(r.call_timeout_ms, sourced(100, LimitSource::Plugin));
        let limits = r.limits(broker.idle_instances);
        assert_eq!(
            (
                limits.max_memory_bytes,
                limits.call_timeout_ms,
                limits.max_output_bytes
            ),
            (48 << 20, 100, 16 << 20)
        );
    }

    /// A broker allowing 8 MiB, 100 ms and 4 KiB.
    fn small_broker() -> PluginsConfig {
        PluginsConfig {
            max_memory_bytes: 8 << 20,
            call_timeout_ms: 100,
            max_output_bytes: 4096,
            ..PluginsConfig::default()
        }
    }

    #[test]
    fn nothing_raises_a_limit_past_the_brokers() {
        let broker = small_broker();
        let none = LimitOverrides::default();
        // Deployed elsewhere, or under an older configuration, with more.
        let big = overrides(Some(64 << 20), Some(1_000), Some(1 << 20));
        for (plugin, transform) in [(&big, &none), (&none, &big), (&big, &big)] {
            assert_eq!(
                TransformLimits::resolve(&broker, plugin, transform),
                TransformLimits {
                    max_memory_bytes: sourced(8 << 20, LimitSource::Broker),
                    call_timeout_ms: sourced(100, LimitSource::Broker),
                    max_output_bytes: sourced(4096, LimitSource::Broker),
                }
            );
        }
        // The ceilings themselves are the deploy's own.
        let equal = overrides(Some(8 << 20), Some(100), Some(4096));
        let r = TransformLimits::resolve(&broker, &equal, &none);
        assert_eq!(r.call_timeout_ms, sourced(100, LimitSource::Plugin));
        assert_eq!(r.max_output_bytes, sourced(4096, LimitSource::Plugin));
    }

    #[test]
    fn a_deploy_asking_past_a_brokers_limit_names_the_field_the_value_and_the_limit() {
        let broker = small_broker();
        let refused = |o: LimitOverrides| o.check(&broker).unwrap_err().to_string();
        assert_eq!(
            refused(overrides(Some((8 << 20) + 1), None, None)),
            "max_memory_bytes 8388609 is out of range: more than this broker's plugins.max_memory_bytes (8388608)"
        );
        assert_eq!(
            refused(overrides(None, Some(101), None)),
            "call_timeout_ms 101 is out of range: more than this broker's plugins.call_timeout_ms (100)"
        );
        assert_eq!(
            refused(overrides(None, None, Some(4097))),
            "max_output_bytes 4097 is out of range: more than this broker's plugins.max_output_bytes (4096)"
        );
        // A range comes first: 0 is refused as such, even under every ceiling.
        assert_eq!(
            refused(overrides(None, Some(0), None)),
            "call_timeout_ms 0 is out of range: must be between 1 and 600000"
        );
        assert_eq!(
            overrides(Some(8 << 20), Some(100), Some(4096)).check(&broker),
            Ok(())
        );
        assert_eq!(LimitOverrides::default().check(&broker), Ok(()));
        assert_eq!(
            PluginError::from(overrides(None, Some(101), None).check(&broker).unwrap_err())
                .to_string(),
            "call_timeout_ms 101 is out of range: more than this broker's plugins.call_timeout_ms (100)"
        );
    }
}

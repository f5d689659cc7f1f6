//! The one place host bindings are generated from `wit/` (package `quiver:plugin@0.1.0`).
//! Each world gets its own module because each generates its own copy of the shared
//! types.

/// The `partitioner` world.
pub mod partitioner {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "partitioner",
    });
}

/// The `transform` world.
pub mod transform {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transform",
    });
}

/// The `connector` world.
pub mod connector {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "connector",
    });
}

/// The `quota-policy` world.
pub mod quota_policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "quota-policy",
    });
}

/// The text of a plugin's own error: the same `plugin-error` variant in every world,
/// generated once per world.
macro_rules! plugin_error_text {
    ($($world:ident),* $(,)?) => {$(
        impl $world::exports::quiver::plugin::lifecycle::PluginError {
            /// What the plugin said, with the kind of error for the two it names.
            pub fn text(&self) -> String {
                match self {
                    Self::InvalidConfig(m) => format!("invalid config: {m}"),
                    Self::InvalidInput(m) => format!("invalid input: {m}"),
                    Self::Failed(m) => m.clone(),
                }
            }
        }
    )*};
}

plugin_error_text!(partitioner, transform, connector, quota_policy);

/// Links `component` against the sandbox's `linker` and makes the typed pre-instance
/// of `world` with `typed`: fails with `Link` if it imports anything the host does not
/// provide, `WrongKind` if it lacks the world's exports.
pub(super) fn link_world<P>(
    component: &wasmtime::component::Component,
    linker: &wasmtime::component::Linker<super::sandbox::HostState>,
    world: &str,
    typed: impl FnOnce(
        wasmtime::component::InstancePre<super::sandbox::HostState>,
    ) -> wasmtime::Result<P>,
) -> Result<P, super::PluginError> {
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(|e| super::PluginError::Link(format!("{e:#}")))?;
    typed(instance_pre).map_err(|e| {
        super::PluginError::WrongKind(format!(
            "the component does not implement the {world} world: {e:#}"
        ))
    })
}

/// The plugin API versions this host can bind, newest first.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.1.0"];

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

/// The plugin API versions this host can bind, newest first.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.1.0"];

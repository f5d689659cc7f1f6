//! The registration macros and the export glue they expand to.
//!
//! `register_<kind>!(T)` asserts at compile time that `T` implements the kind's trait (plus
//! `Default + Send + 'static`), then expands the glue for the target being built:
//!
//! - on wasm32 (with the `guest` feature): a `__quiver_system` module holding the world's
//!   bindings (`bindings!`), `Guest` implementations on top of [`crate::glue`], the
//!   `export!` call, and the `quiver:api-version` custom section;
//! - elsewhere, with the `native` feature and for partitioners and transforms: the C
//!   ABI symbols of [`crate::abi`] in a `__quiver_native` module;
//! - elsewhere otherwise: nothing, so the crate builds as a plain library whose plugin
//!   type the [`crate::testing`] harness drives.
//!
//! The glue macros are selected by the SDK's own `cfg`, so the choice is made once, here.
//!
//! # Why the bindings are expanded in the plugin crate
//!
//! The WIT, the `generate!` options and the glue are all defined here, once; but
//! `bindings!` expands `wit_bindgen::generate!` inside the plugin crate rather than in
//! the SDK. Generating all four worlds in the SDK does not work: every world exports the
//! shared `lifecycle` interface, and `wit-bindgen` names an exported interface's
//! `#[macro_export]` glue after the interface alone, so the worlds' macros collide; and
//! an SDK-level world description with exports would be linked into every plugin,
//! turning a partitioner into the union of all four worlds. Expanded per plugin, each
//! component describes exactly its own world. The cost is one `generate!` expansion
//! (milliseconds) per plugin crate.

/// Registers `T` as the crate's partitioner; see [`Partitioner`](crate::Partitioner).
///
/// A crate registers exactly one plugin. `T` must implement
/// [`Partitioner`](crate::Partitioner) + `Default` + `Send` + `'static`.
#[macro_export]
macro_rules! register_partitioner {
    ($plugin:ty $(,)?) => {
        const _: () = $crate::__private::assert_partitioner::<$plugin>();
        #[doc(hidden)]
        type __QuiverPartitioner = $plugin;
        $crate::__partitioner_wasm_glue!();
        $crate::__partitioner_native_glue!();
    };
}

/// Registers `T` as the crate's transform; see [`Transform`](crate::Transform).
#[macro_export]
macro_rules! register_transform {
    ($plugin:ty $(,)?) => {
        const _: () = $crate::__private::assert_transform::<$plugin>();
        #[doc(hidden)]
        type __QuiverTransform = $plugin;
        $crate::__transform_wasm_glue!();
        $crate::__transform_native_glue!();
    };
}

/// Registers `T` as the crate's quota policy; see [`QuotaPolicy`](crate::QuotaPolicy).
#[macro_export]
macro_rules! register_quota_policy {
    ($plugin:ty $(,)?) => {
        const _: () = $crate::__private::assert_quota_policy::<$plugin>();
        #[doc(hidden)]
        type __QuiverQuotaPolicy = $plugin;
        $crate::__quota_policy_wasm_glue!();
    };
}

/// Registers `T` as the crate's connector; see [`Connector`](crate::Connector).
#[macro_export]
macro_rules! register_connector {
    ($plugin:ty $(,)?) => {
        const _: () = $crate::__private::assert_connector::<$plugin>();
        #[doc(hidden)]
        type __QuiverConnector = $plugin;
        $crate::__connector_wasm_glue!();
    };
}

/// Emits the `quiver:api-version` custom section (content: the UTF-8 API version) into
/// the crate being built, on wasm32 only.
///
/// The registration macros call it; call it yourself only when implementing the
/// generated bindings by hand. It must appear exactly once per component: the linker
/// concatenates sections of the same name.
#[macro_export]
macro_rules! api_version_section {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[used]
        #[unsafe(link_section = "quiver:api-version")]
        static __QUIVER_API_VERSION: [u8; $crate::__private::API_VERSION_BYTES.len()] =
            $crate::__private::API_VERSION_BYTES;
    };
}

#[cfg(all(target_arch = "wasm32", feature = "guest"))]
mod wasm {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

    /// Conversions between the world's generated types (local to the plugin crate) and
    /// the SDK's. They move vectors; no bytes are copied.
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __wit_conversions {
        () => {
            use self::quiver::plugin::types as wit_types;

            fn columns(b: wit_types::RecordBatch) -> $crate::Columns {
                $crate::Columns {
                    topic: b.topic,
                    partition: b.partition,
                    offsets: b.offsets,
                    timestamps: b.timestamps,
                    ends: b.ends,
                    header_ends: b.header_ends,
                    data: b.data,
                }
            }

            #[allow(dead_code)] // only worlds that return batches use it
            fn record_batch(c: $crate::Columns) -> wit_types::RecordBatch {
                wit_types::RecordBatch {
                    topic: c.topic,
                    partition: c.partition,
                    offsets: c.offsets,
                    timestamps: c.timestamps,
                    ends: c.ends,
                    header_ends: c.header_ends,
                    data: c.data,
                }
            }

            fn wit_error(e: $crate::PluginError) -> wit_types::PluginError {
                match e {
                    $crate::PluginError::InvalidConfig(m) => {
                        wit_types::PluginError::InvalidConfig(m)
                    }
                    $crate::PluginError::InvalidInput(m) => wit_types::PluginError::InvalidInput(m),
                    $crate::PluginError::Failed(m) => wit_types::PluginError::Failed(m),
                }
            }

            fn config(
                entries: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> $crate::Config {
                $crate::Config::new(entries)
            }
        };
    }

    #[doc(hidden)]
    #[macro_export]
    macro_rules! __partitioner_wasm_glue {
        () => {
            #[doc(hidden)]
            mod __quiver_system {
                $crate::bindings!(partitioner);
                $crate::__wit_conversions!();
                use $crate::__private::{glue, Slot};

                static PLUGIN: Slot<super::__QuiverPartitioner> = Slot::new();

                struct Component;

                impl exports::quiver::plugin::lifecycle::Guest for Component {
                    fn init(
                        entries: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                    ) -> ::core::result::Result<(), wit_types::PluginError> {
                        glue::partitioner_init(&PLUGIN, config(entries)).map_err(wit_error)
                    }
                }

                impl exports::quiver::plugin::partition::Guest for Component {
                    fn partition(
                        batch: wit_types::RecordBatch,
                        partitions: u32,
                    ) -> ::core::result::Result<::std::vec::Vec<u32>, wit_types::PluginError>
                    {
                        glue::partitioner_partition(&PLUGIN, &columns(batch), partitions)
                            .map_err(wit_error)
                    }
                }

                export!(Component);
                $crate::api_version_section!();
            }
        };
    }

    #[doc(hidden)]
    #[macro_export]
    macro_rules! __transform_wasm_glue {
        () => {
            #[doc(hidden)]
            mod __quiver_system {
                $crate::bindings!(transform);
                $crate::__wit_conversions!();
                use exports::quiver::plugin::record_transform::{Output, RecordFailure};
                use $crate::__private::{glue, Slot, TransformInstance};

                static PLUGIN: Slot<TransformInstance<super::__QuiverTransform>> = Slot::new();

                struct Component;

                impl exports::quiver::plugin::lifecycle::Guest for Component {
                    fn init(
                        entries: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                    ) -> ::core::result::Result<(), wit_types::PluginError> {
                        glue::transform_init(&PLUGIN, config(entries)).map_err(wit_error)
                    }
                }

                impl exports::quiver::plugin::record_transform::Guest for Component {
                    fn transform(
                        batch: wit_types::RecordBatch,
                    ) -> ::core::result::Result<Output, wit_types::PluginError> {
                        let output = glue::transform_transform(&PLUGIN, &columns(batch))
                            .map_err(wit_error)?;
                        Ok(Output {
                            records: record_batch(output.records),
                            targets: output.targets,
                            partitions: output.partitions,
                            failed: output.failed.map(|(offset, error)| RecordFailure {
                                offset,
                                error: wit_error(error),
                            }),
                        })
                    }
                }

                export!(Component);
                $crate::api_version_section!();
            }
        };
    }

    #[doc(hidden)]
    #[macro_export]
    macro_rules! __quota_policy_wasm_glue {
        () => {
            #[doc(hidden)]
            mod __quiver_system {
                $crate::bindings!(quota_policy);
                $crate::__wit_conversions!();
                use exports::quiver::plugin::policy::{Assignment, Client, Limits, Usage};
                use $crate::__private::{glue, Slot};

                static PLUGIN: Slot<super::__QuiverQuotaPolicy> = Slot::new();

                struct Component;

                fn wit_limits(limits: $crate::Limits) -> Limits {
                    Limits {
                        produce_bytes_per_second: limits.produce_bytes_per_second,
                        fetch_bytes_per_second: limits.fetch_bytes_per_second,
                        request_percentage: limits.request_percentage,
                        controller_mutations_per_second: limits.controller_mutations_per_second,
                    }
                }

                impl exports::quiver::plugin::lifecycle::Guest for Component {
                    fn init(
                        entries: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                    ) -> ::core::result::Result<(), wit_types::PluginError> {
                        glue::quota_init(&PLUGIN, config(entries)).map_err(wit_error)
                    }
                }

                impl exports::quiver::plugin::policy::Guest for Component {
                    fn quota_key(
                        client: Client,
                    ) -> ::core::result::Result<::std::string::String, wit_types::PluginError>
                    {
                        let client = $crate::Client {
                            principal: client.principal,
                            tenant: client.tenant,
                            client_id: client.client_id,
                            listener: client.listener,
                            host: client.host,
                        };
                        glue::quota_key(&PLUGIN, &client).map_err(wit_error)
                    }

                    fn initial_limits(
                        key: ::std::string::String,
                    ) -> ::core::result::Result<Limits, wit_types::PluginError> {
                        glue::quota_initial_limits(&PLUGIN, &key)
                            .map(wit_limits)
                            .map_err(wit_error)
                    }

                    fn rebalance(
                        window_ms: u32,
                        usage: ::std::vec::Vec<Usage>,
                    ) -> ::core::result::Result<::std::vec::Vec<Assignment>, wit_types::PluginError>
                    {
                        let usage: ::std::vec::Vec<$crate::Usage> = usage
                            .into_iter()
                            .map(|u| $crate::Usage {
                                key: u.key,
                                produce_bytes: u.produce_bytes,
                                fetch_bytes: u.fetch_bytes,
                                requests: u.requests,
                                request_time_us: u.request_time_us,
                                connections: u.connections,
                            })
                            .collect();
                        let changes =
                            glue::quota_rebalance(&PLUGIN, window_ms, &usage).map_err(wit_error)?;
                        Ok(changes
                            .into_iter()
                            .map(|(key, limits)| Assignment {
                                key,
                                limits: wit_limits(limits),
                            })
                            .collect())
                    }
                }

                export!(Component);
                $crate::api_version_section!();
            }
        };
    }

    #[doc(hidden)]
    #[macro_export]
    macro_rules! __connector_wasm_glue {
        () => {
            #[doc(hidden)]
            mod __quiver_system {
                $crate::bindings!(connector);
                $crate::__wit_conversions!();
                use $crate::__private::{glue, Slot};

                static PLUGIN: Slot<super::__QuiverConnector> = Slot::new();

                struct Component;

                impl exports::quiver::plugin::lifecycle::Guest for Component {
                    fn init(
                        entries: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                    ) -> ::core::result::Result<(), wit_types::PluginError> {
                        glue::connector_init(&PLUGIN, config(entries)).map_err(wit_error)
                    }
                }

                impl exports::quiver::plugin::mirror::Guest for Component {
                    fn target_topic(
                        source_cluster: ::std::string::String,
                        topic: ::std::string::String,
                    ) -> ::core::option::Option<::std::string::String> {
                        glue::connector_target_topic(&PLUGIN, &source_cluster, &topic)
                    }

                    fn mirror_group(
                        source_cluster: ::std::string::String,
                        group: ::std::string::String,
                    ) -> bool {
                        glue::connector_mirror_group(&PLUGIN, &source_cluster, &group)
                    }

                    fn map_records(
                        source_cluster: ::std::string::String,
                        batch: wit_types::RecordBatch,
                    ) -> ::core::result::Result<wit_types::RecordBatch, wit_types::PluginError>
                    {
                        glue::connector_map_records(&PLUGIN, &source_cluster, &columns(batch))
                            .map(record_batch)
                            .map_err(wit_error)
                    }
                }

                export!(Component);
                $crate::api_version_section!();
            }
        };
    }
}

#[cfg(all(target_arch = "wasm32", not(feature = "guest")))]
mod wasm {
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __partitioner_wasm_glue {
        () => {
            ::core::compile_error!(
                "building a plugin for wasm32 needs the `guest` feature of quiver-plugin-sdk"
            );
        };
    }
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __transform_wasm_glue {
        () => {
            ::core::compile_error!(
                "building a plugin for wasm32 needs the `guest` feature of quiver-plugin-sdk"
            );
        };
    }
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __quota_policy_wasm_glue {
        () => {
            ::core::compile_error!(
                "building a plugin for wasm32 needs the `guest` feature of quiver-plugin-sdk"
            );
        };
    }
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __connector_wasm_glue {
        () => {
            ::core::compile_error!(
                "building a plugin for wasm32 needs the `guest` feature of quiver-plugin-sdk"
            );
        };
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod wasm {
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __partitioner_wasm_glue {
        () => {};
    }
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __transform_wasm_glue {
        () => {};
    }
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __quota_policy_wasm_glue {
        () => {};
    }
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __connector_wasm_glue {
        () => {};
    }
}

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
mod native {
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __partitioner_native_glue {
        () => {
            #[doc(hidden)]
            mod __quiver_native {
                use $crate::__private::{native, Slot};
                use $crate::abi::{QuiverBatch, QuiverBuf, QuiverStr};

                static PLUGIN: Slot<super::__QuiverPartitioner> = Slot::new();

                /// The API version this plugin was built against.
                #[unsafe(no_mangle)]
                pub extern "C" fn quiver_plugin_api_version() -> u32 {
                    $crate::abi::QUIVER_API_VERSION
                }

                /// The plugin kind, a static NUL-terminated string.
                #[unsafe(no_mangle)]
                pub extern "C" fn quiver_plugin_kind() -> *const ::core::ffi::c_char {
                    native::PARTITIONER_KIND.as_ptr()
                }

                /// Creates and configures the plugin.
                ///
                /// # Safety
                ///
                /// As `quiver_plugin_sdk::__private::native::partitioner_init` documents.
                #[unsafe(no_mangle)]
                pub unsafe extern "C" fn quiver_partitioner_init(
                    keys: *const QuiverStr,
                    values: *const QuiverStr,
                    n: usize,
                    err: *mut QuiverBuf,
                ) -> i32 {
                    // SAFETY: forwarded to the host, which calls with valid arguments.
                    unsafe { native::partitioner_init(&PLUGIN, keys, values, n, err) }
                }

                /// Chooses a partition for every record of `batch`.
                ///
                /// # Safety
                ///
                /// As `quiver_plugin_sdk::__private::native::partitioner_partition`
                /// documents.
                #[unsafe(no_mangle)]
                pub unsafe extern "C" fn quiver_partitioner_partition(
                    batch: *const QuiverBatch,
                    partitions: u32,
                    out: *mut u32,
                    err: *mut QuiverBuf,
                ) -> i32 {
                    // SAFETY: forwarded to the host, which calls with valid arguments.
                    unsafe { native::partitioner_partition(&PLUGIN, batch, partitions, out, err) }
                }
            }
        };
    }

    #[doc(hidden)]
    #[macro_export]
    macro_rules! __transform_native_glue {
        () => {
            #[doc(hidden)]
            mod __quiver_native {
                use ::core::ffi::c_void;
                use $crate::__private::native;
                use $crate::abi::{QuiverBatch, QuiverBuf, QuiverStr, QuiverTransformOutput};

                type Plugin = super::__QuiverTransform;

                /// The API version this plugin was built against.
                #[unsafe(no_mangle)]
                pub extern "C" fn quiver_plugin_api_version() -> u32 {
                    $crate::abi::QUIVER_API_VERSION
                }

                /// The plugin kind, a static NUL-terminated string.
                #[unsafe(no_mangle)]
                pub extern "C" fn quiver_plugin_kind() -> *const ::core::ffi::c_char {
                    native::TRANSFORM_KIND.as_ptr()
                }

                /// Creates and configures an instance.
                ///
                /// # Safety
                ///
                /// As `quiver_plugin_sdk::__private::native::transform_open` documents.
                #[unsafe(no_mangle)]
                pub unsafe extern "C" fn quiver_transform_open(
                    keys: *const QuiverStr,
                    values: *const QuiverStr,
                    n: usize,
                    instance: *mut *mut c_void,
                    err: *mut QuiverBuf,
                ) -> i32 {
                    // SAFETY: forwarded to the host, which calls with valid arguments.
                    unsafe { native::transform_open::<Plugin>(keys, values, n, instance, err) }
                }

                /// Transforms one batch.
                ///
                /// # Safety
                ///
                /// As `quiver_plugin_sdk::__private::native::transform_transform`
                /// documents.
                #[unsafe(no_mangle)]
                pub unsafe extern "C" fn quiver_transform_transform(
                    instance: *mut c_void,
                    batch: *const QuiverBatch,
                    out: *mut QuiverTransformOutput,
                    err: *mut QuiverBuf,
                ) -> i32 {
                    // SAFETY: forwarded to the host, which calls with valid arguments.
                    unsafe { native::transform_transform::<Plugin>(instance, batch, out, err) }
                }

                /// Frees an instance.
                ///
                /// # Safety
                ///
                /// As `quiver_plugin_sdk::__private::native::transform_close` documents.
                #[unsafe(no_mangle)]
                pub unsafe extern "C" fn quiver_transform_close(instance: *mut c_void) {
                    // SAFETY: forwarded to the host, which calls with valid arguments.
                    unsafe { native::transform_close::<Plugin>(instance) }
                }
            }
        };
    }
}

#[cfg(not(all(feature = "native", not(target_arch = "wasm32"))))]
mod native {
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __partitioner_native_glue {
        () => {};
    }
    #[doc(hidden)]
    #[macro_export]
    macro_rules! __transform_native_glue {
        () => {};
    }
}

//! `split`: route each record to one of the transform's outputs by a header value or a
//! JSON field of its value.
//!
//! Configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `header` | route by the value of this header, or |
//! | `field` | route by this dotted path into the value's JSON object, e.g. `ship.country` (exactly one of the two) |
//! | `route.<value>` | the output topic for records whose header or field is `<value>`, e.g. `route.eu=orders.eu` (at least one) |
//! | `default` | the output topic for records with no route (default: such records are dropped) |
//!
//! Every named topic must be one of the transform's outputs (`--output`); the deploy is
//! refused otherwise. A JSON string routes by its text, any other JSON value by its
//! compact JSON text (`7`, `true`); a header by its bytes. A header without a value, a
//! value that is not a JSON object, and a missing or null field have no route. Records
//! keep their key, value, headers and timestamp; each output topic's partitioner places
//! them.

use std::collections::HashMap;

use quiver_plugin_sdk::prelude::*;
use quiver_plugin_sdk::select::Selector;

/// The transform and its parsed configuration.
#[derive(Debug)]
pub struct Split {
    source: Selector,
    /// Routing value -> output index.
    routes: HashMap<Vec<u8>, u32>,
    /// Output index of records without a route; `None` drops them.
    default: Option<u32>,
}

impl Default for Split {
    fn default() -> Self {
        Split {
            source: Selector::Header(String::new()),
            routes: HashMap::new(),
            default: None,
        }
    }
}

/// What `check_known`-style errors list as this plugin's keys.
const KNOWN_KEYS: &str = "header, field, route.<value>, default";

impl Transform for Split {
    fn init(&mut self, config: &Config) -> Result<()> {
        // The output index of the topic configured under `key`.
        let output = |key: &str, topic: &str| -> Result<u32> {
            config.output_index(topic).ok_or_else(|| {
                let outputs = config.outputs();
                let outputs = if outputs.is_empty() {
                    "none".to_owned()
                } else {
                    outputs.join(", ")
                };
                ConfigError::invalid(
                    key,
                    topic,
                    format!("not one of the transform's outputs ({outputs})"),
                )
                .into()
            })
        };
        self.source = Selector::from_config(config)?;
        self.routes.clear();
        // `iter` yields repeated keys in order, so a later `route.x` replaces an earlier
        // one, as `Config::get` does for other keys.
        for (key, topic) in config.iter() {
            if let Some(value) = key.strip_prefix("route.") {
                if value.is_empty() {
                    return Err(ConfigError::invalid(
                        key,
                        topic,
                        "name the routed value after `route.`, e.g. route.eu",
                    )
                    .into());
                }
                self.routes
                    .insert(value.as_bytes().to_vec(), output(key, topic)?);
            } else if !matches!(key, "header" | "field" | "default") && !key.starts_with("quiver.")
            {
                return Err(ConfigError::Unknown {
                    key: key.to_owned(),
                    known: KNOWN_KEYS.to_owned(),
                }
                .into());
            }
        }
        if self.routes.is_empty() {
            return Err(PluginError::invalid_config(
                "set at least one route, e.g. route.eu=<output topic>",
            ));
        }
        self.default = config
            .get("default")
            .map(|topic| output("default", topic))
            .transpose()?;
        Ok(())
    }

    fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
        let routed = self
            .source
            .select(record)
            .and_then(|value| self.routes.get(value.as_ref()).copied());
        if let Some(target) = routed.or(self.default) {
            out.forward(target, record);
        }
        Ok(())
    }
}

register_transform!(Split);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::{TestRecord, TransformHarness};

    const OUTPUTS: &[&str] = &["orders.eu", "orders.us", "orders.other"];

    #[test]
    fn routes_by_header_with_a_default() {
        let h = TransformHarness::<Split>::with_topics(
            "orders",
            OUTPUTS,
            &[
                ("header", "region"),
                ("route.eu", "orders.eu"),
                ("route.us", "orders.us"),
                ("default", "orders.other"),
            ],
        )
        .unwrap();
        let result = h
            .run([
                TestRecord::new()
                    .key("a")
                    .value("1")
                    .header("region", "us")
                    .timestamp(3),
                TestRecord::new().key("b").value("2").header("region", "eu"),
                TestRecord::new()
                    .key("c")
                    .value("3")
                    .header("region", "apac"),
                TestRecord::new().key("d").value("4"),
                TestRecord::new().key("e").null_header("region"),
            ])
            .unwrap();
        assert!(result.failed.is_none());
        assert_eq!(result.targets(), [1, 0, 2, 2, 2]);
        assert_eq!(result.source_offsets(), [0, 1, 2, 3, 4]);
        let first = &result.records[0];
        assert_eq!((first.partition, first.timestamp), (-1, 3));
        assert_eq!(
            (first.key.as_deref(), first.value_str()),
            (Some(&b"a"[..]), Some("1"))
        );
        assert_eq!(
            first.headers,
            [("region".to_string(), Some(b"us".to_vec()))]
        );
    }

    #[test]
    fn routes_by_json_field_and_drops_unrouted_without_a_default() {
        let h = TransformHarness::<Split>::with_topics(
            "orders",
            OUTPUTS,
            &[
                ("field", "ship.country"),
                ("route.7", "orders.us"),
                ("route.de", "orders.eu"),
            ],
        )
        .unwrap();
        let result = h
            .run([
                TestRecord::new().value(r#"{"ship":{"country":7}}"#),
                TestRecord::new().value(r#"{"ship":{"country":"7x"}}"#),
                TestRecord::new().value(r#"{"ship":{"country":"de"}}"#),
                TestRecord::new().value(r#"{"ship":"de"}"#),
                TestRecord::new().value("not json"),
            ])
            .unwrap();
        assert_eq!(result.source_offsets(), [0, 2]);
        assert_eq!(result.targets(), [1, 0]);
    }

    #[test]
    fn a_repeated_route_takes_the_last_topic() {
        let h = TransformHarness::<Split>::with_topics(
            "orders",
            OUTPUTS,
            &[
                ("header", "r"),
                ("route.x", "orders.eu"),
                ("route.x", "orders.us"),
            ],
        )
        .unwrap();
        let result = h.run([TestRecord::new().header("r", "x")]).unwrap();
        assert_eq!(result.targets(), [1]);
    }

    #[test]
    fn named_topics_must_be_outputs() {
        let err = |pairs: &[(&str, &str)]| {
            TransformHarness::<Split>::with_topics("orders", OUTPUTS, pairs)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&[("header", "region"), ("route.eu", "orders.asia")]),
            "invalid config: config key `route.eu` has invalid value \"orders.asia\": \
             not one of the transform's outputs (orders.eu, orders.us, orders.other)"
        );
        assert!(err(&[
            ("header", "region"),
            ("route.eu", "orders.eu"),
            ("default", "orders.rest")
        ])
        .contains("`default` has invalid value \"orders.rest\""));
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |pairs: &[(&str, &str)]| {
            TransformHarness::<Split>::with_topics("orders", OUTPUTS, pairs)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("route.eu", "orders.eu")]).contains("exactly one of `header`"));
        assert!(err(&[("field", "a."), ("route.eu", "orders.eu")]).contains("`field`"));
        assert!(err(&[("header", "region")]).contains("at least one route"));
        assert!(err(&[("header", "region"), ("route.", "orders.eu")]).contains("`route.`"));
        assert_eq!(
            err(&[
                ("header", "region"),
                ("route.eu", "orders.eu"),
                ("defualt", "x")
            ]),
            "invalid config: unknown config key `defualt` \
             (known keys: header, field, route.<value>, default)"
        );
    }
}

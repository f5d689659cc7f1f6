//! `split`: route each record to one of the transform's outputs by a header value or a
//! JSON field of its value.
//!
//! Configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `header` | route by the value of this header, or |
//! | `field` | route by this dotted path into the value's JSON object (exactly one of the two) |
//! | `route.<value>` | the output topic for records whose header or field is `<value>`, e.g. `route.eu=orders.eu` |
//! | `default` | the output topic for records with no route (default: such records are dropped) |
//!
//! Every named topic must be one of the transform's outputs (`--output`); the deploy is
//! refused otherwise. A JSON string routes by its text, a number or boolean by its JSON
//! text. Records keep their key, value, headers and timestamp; each output topic's
//! partitioner places them.

use std::collections::HashMap;

use quiver_plugin_sdk::prelude::*;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Header(String),
    Field(Vec<String>),
}

/// The transform and its parsed configuration.
#[derive(Debug)]
pub struct Split {
    source: Source,
    routes: HashMap<String, u32>,
    default: Option<u32>,
}

impl Default for Split {
    fn default() -> Self {
        Split {
            source: Source::Header(String::new()),
            routes: HashMap::new(),
            default: None,
        }
    }
}

fn select(record: &Record<'_>, source: &Source) -> Option<String> {
    match source {
        Source::Header(name) => record
            .header(name)
            .flatten()
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        Source::Field(path) => {
            let value: Value = serde_json::from_slice(record.value()?).ok()?;
            let mut current = &value;
            for part in path {
                current = current.as_object()?.get(part)?;
            }
            match current {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }
        }
    }
}

impl Transform for Split {
    fn init(&mut self, config: &Config) -> Result<()> {
        let output = |key: &str, topic: &str| -> Result<u32> {
            config.output_index(topic).ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    topic,
                    format!(
                        "not one of the transform's outputs ({})",
                        config.outputs().join(", ")
                    ),
                )
                .into()
            })
        };
        self.source =
            match (config.get("header"), config.get("field")) {
                (Some(h), None) if !h.is_empty() => Source::Header(h.to_owned()),
                (None, Some(f)) if !f.is_empty() => {
                    Source::Field(f.split('.').map(str::to_owned).collect())
                }
                _ => return Err(PluginError::invalid_config(
                    "set exactly one of `header` (a header name) or `field` (a dotted JSON path)",
                )),
            };
        self.routes.clear();
        for (key, topic) in config.iter() {
            if let Some(value) = key.strip_prefix("route.") {
                self.routes.insert(value.to_owned(), output(key, topic)?);
            } else if !matches!(key, "header" | "field" | "default") && !key.starts_with("quiver.")
            {
                return Err(ConfigError::invalid(
                    key,
                    topic,
                    "unknown key; expected header, field, route.<value> or default",
                )
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
            .map(|t| output("default", t))
            .transpose()?;
        Ok(())
    }

    fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
        let target = select(record, &self.source)
            .and_then(|v| self.routes.get(&v).copied())
            .or(self.default);
        if let Some(target) = target {
            out.forward(target, record);
        }
        Ok(())
    }
}

register_transform!(Split);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::TransformHarness;

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
        let (records, _) = h
            .transform_records(&[
                (Some(b"a"), Some(b"1"), &[("region", Some(b"us"))]),
                (Some(b"b"), Some(b"2"), &[("region", Some(b"eu"))]),
                (Some(b"c"), Some(b"3"), &[("region", Some(b"apac"))]),
                (Some(b"d"), Some(b"4"), &[]),
            ])
            .unwrap();
        let targets: Vec<u32> = records.iter().map(|r| r.target).collect();
        assert_eq!(targets, [1, 0, 2, 2]);
        assert_eq!(
            records[0].headers,
            [("region".to_string(), Some(b"us".to_vec()))]
        );
    }

    #[test]
    fn routes_by_json_field_and_drops_unrouted() {
        let h = TransformHarness::<Split>::with_topics(
            "orders",
            OUTPUTS,
            &[("field", "ship.country"), ("route.7", "orders.us")],
        )
        .unwrap();
        let (records, _) = h
            .transform_records(&[
                (None, Some(br#"{"ship":{"country":7}}"#), &[]),
                (None, Some(br#"{"ship":{"country":"7x"}}"#), &[]),
            ])
            .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].target, records[0].source_offset), (1, 0));
    }

    #[test]
    fn routes_must_name_outputs() {
        let e = TransformHarness::<Split>::with_topics(
            "orders",
            OUTPUTS,
            &[("header", "region"), ("route.eu", "orders.asia")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("orders.asia"), "{e}");
        assert!(
            e.to_string().contains("orders.eu, orders.us, orders.other"),
            "{e}"
        );
    }
}

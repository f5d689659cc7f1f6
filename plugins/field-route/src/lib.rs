//! `field-route`: route records to configured partition sets by a header value or a
//! JSON field of the value.
//!
//! Configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `route.header` | route by the value of this header, or |
//! | `route.json-field` | route by this top-level field of the record value, parsed as a JSON object (exactly one of the two) |
//! | `route.map` | `name:set;name:set…`, e.g. `gold:0-3;silver:4-5`; a set is a comma list of partitions and inclusive ranges (`0-3,7`) |
//! | `route.default` | the set for records whose field is missing, null or unmapped (default: every partition) |
//!
//! Within the chosen set, a keyed record goes to `set[murmur2(key) % len(set)]` (the Java
//! client's hash), so a key stays on one partition of its set; a null-keyed record goes
//! round-robin over the set. A JSON string field routes by its text; a number or
//! boolean by its JSON text (`7`, `true`). Values that are not a JSON object (bad JSON,
//! tombstones, arrays) route to the default set: a routing plugin should not fail a
//! produce over a malformed payload. Sets are checked against the topic at call time: a
//! set naming a partition the topic lacks fails the call, naming the set.

use quiver_plugin_sdk::hash::murmur2_partition;
use quiver_plugin_sdk::partitioner::{Cursor, RoundRobin};
use quiver_plugin_sdk::prelude::*;
use std::borrow::Cow;

/// Where the routing value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Header(String),
    JsonField(String),
}

/// A named set of partitions.
#[derive(Debug, Clone)]
struct Route {
    name: String,
    partitions: Vec<u32>,
}

/// The partitioner and its parsed configuration.
#[derive(Debug)]
pub struct FieldRoute {
    source: Source,
    routes: Vec<Route>,
    /// `None`: every partition of the topic.
    default: Option<Vec<u32>>,
    /// One round-robin cursor per route (index `routes.len()` is the default set).
    unkeyed: Vec<RoundRobin>,
}

impl Default for FieldRoute {
    fn default() -> Self {
        FieldRoute {
            source: Source::Header(String::new()),
            routes: Vec::new(),
            default: None,
            unkeyed: Vec::new(),
        }
    }
}

const KEYS: [&str; 4] = [
    "route.header",
    "route.json-field",
    "route.map",
    "route.default",
];

/// Parses `0-3,7` into `[0, 1, 2, 3, 7]`.
fn parse_set(key: &str, text: &str) -> std::result::Result<Vec<u32>, ConfigError> {
    let invalid = |reason: &str| ConfigError::invalid(key, text, reason);
    let mut set = Vec::new();
    for item in text.split(',').map(str::trim) {
        let (low, high) = match item.split_once('-') {
            Some((low, high)) => (low.trim(), high.trim()),
            None => (item, item),
        };
        let low: u32 = low
            .parse()
            .map_err(|_| invalid(&format!("`{item}` is not a partition or a range like 0-3")))?;
        let high: u32 = high
            .parse()
            .map_err(|_| invalid(&format!("`{item}` is not a partition or a range like 0-3")))?;
        if low > high {
            return Err(invalid(&format!("range `{item}` is empty")));
        }
        if high - low >= 1 << 16 {
            return Err(invalid(&format!("range `{item}` is larger than any topic")));
        }
        set.extend(low..=high);
    }
    set.sort_unstable();
    set.dedup();
    Ok(set)
}

impl FieldRoute {
    /// The routing value of a record, if it has one.
    fn value<'a>(&self, record: &Record<'a>) -> Option<Cow<'a, [u8]>> {
        match &self.source {
            Source::Header(name) => record.header(name).flatten().map(Cow::Borrowed),
            Source::JsonField(field) => {
                let value = record.value()?;
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(value).ok()?;
                match object.get(field)? {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(Cow::Owned(s.clone().into_bytes())),
                    other => Some(Cow::Owned(other.to_string().into_bytes())),
                }
            }
        }
    }

    /// Index of the record's route; `routes.len()` for the default set.
    fn route_of(&self, record: &Record<'_>) -> usize {
        let value = self.value(record);
        value
            .and_then(|v| self.routes.iter().position(|r| r.name.as_bytes() == &*v))
            .unwrap_or(self.routes.len())
    }
}

fn pick(set: &[u32], key: Option<&[u8]>, cursor: &mut Cursor) -> u32 {
    let len = set.len() as u32;
    let index = match key {
        Some(key) => murmur2_partition(key, len),
        None => cursor.next(len),
    };
    set[index as usize]
}

impl Partitioner for FieldRoute {
    fn init(&mut self, config: &Config) -> Result<()> {
        config.check_known(&KEYS)?;
        self.source = match (config.get("route.header"), config.get("route.json-field")) {
            (Some(h), None) if !h.is_empty() => Source::Header(h.to_owned()),
            (None, Some(f)) if !f.is_empty() => Source::JsonField(f.to_owned()),
            (Some(_), Some(_)) => {
                return Err(PluginError::invalid_config(
                    "set only one of `route.header` and `route.json-field`",
                ))
            }
            _ => {
                return Err(PluginError::invalid_config(
                    "set `route.header` or `route.json-field` to a non-empty name",
                ))
            }
        };
        let map = config.require("route.map")?;
        self.routes.clear();
        for entry in map.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, set) = entry.split_once(':').ok_or_else(|| {
                ConfigError::invalid(
                    "route.map",
                    map,
                    format!("`{entry}` is not `name:partitions`"),
                )
            })?;
            let name = name.trim();
            if self.routes.iter().any(|r| r.name == name) {
                return Err(ConfigError::invalid(
                    "route.map",
                    map,
                    format!("`{name}` is mapped twice"),
                )
                .into());
            }
            self.routes.push(Route {
                name: name.to_owned(),
                partitions: parse_set("route.map", set)?,
            });
        }
        if self.routes.is_empty() {
            return Err(ConfigError::invalid("route.map", map, "no routes").into());
        }
        self.default = config
            .get("route.default")
            .map(|d| parse_set("route.default", d))
            .transpose()?;
        self.unkeyed = vec![RoundRobin::default(); self.routes.len() + 1];
        Ok(())
    }

    fn partition_batch(
        &mut self,
        batch: &Batch,
        partitions: u32,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        for route in &self.routes {
            if let Some(&max) = route.partitions.last().filter(|&&max| max >= partitions) {
                return Err(PluginError::invalid_input(format!(
                    "route `{}` names partition {max} but topic `{}` has {partitions} partitions",
                    route.name,
                    batch.topic()
                )));
            }
        }
        if let Some(&max) = self
            .default
            .as_ref()
            .and_then(|d| d.last())
            .filter(|&&max| max >= partitions)
        {
            return Err(PluginError::invalid_input(format!(
                "route.default names partition {max} but topic `{}` has {partitions} partitions",
                batch.topic()
            )));
        }
        let every: Vec<u32>;
        let default: &[u32] = match &self.default {
            Some(set) => set,
            None => {
                every = (0..partitions).collect();
                &every
            }
        };
        for record in batch {
            let index = self.route_of(&record);
            let set = self.routes.get(index).map_or(default, |r| &r.partitions);
            let cursor = self.unkeyed[index].cursor(batch.topic());
            out.push(pick(set, record.key(), cursor));
        }
        Ok(())
    }
}

register_partitioner!(FieldRoute);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::PartitionerHarness;

    fn route(pairs: &[(&str, &str)]) -> PartitionerHarness<FieldRoute> {
        PartitionerHarness::init(pairs).unwrap()
    }

    /// A test record: key, value and headers as text.
    type TextRecord<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        &'a [(&'a str, Option<&'a str>)],
    );

    fn batch(records: &[TextRecord<'_>]) -> Columns {
        let mut b = ColumnsBuilder::new("orders", -1);
        for (key, value, headers) in records {
            let headers: Vec<(&str, Option<&[u8]>)> = headers
                .iter()
                .map(|(k, v)| (*k, v.map(str::as_bytes)))
                .collect();
            b.push(
                key.map(str::as_bytes),
                value.map(str::as_bytes),
                &headers,
                0,
                -1,
            );
        }
        b.build()
    }

    fn in_set(set: &[u32], key: &str) -> u32 {
        set[murmur2_partition(key.as_bytes(), set.len() as u32) as usize]
    }

    #[test]
    fn routes_by_header() {
        let h = route(&[
            ("route.header", "tier"),
            ("route.map", "gold:0-3;silver:4-5"),
            ("route.default", "6-7"),
        ]);
        let input = batch(&[
            (Some("a"), None, &[("tier", Some("gold"))]),
            (Some("b"), None, &[("tier", Some("silver"))]),
            (Some("c"), None, &[("tier", Some("bronze"))]),
            (Some("d"), None, &[("tier", None)]),
            (Some("e"), None, &[]),
        ]);
        let chosen = h.partition(&input, 8).unwrap();
        assert_eq!(
            chosen,
            [
                in_set(&[0, 1, 2, 3], "a"),
                in_set(&[4, 5], "b"),
                in_set(&[6, 7], "c"),
                in_set(&[6, 7], "d"),
                in_set(&[6, 7], "e")
            ]
        );
    }

    #[test]
    fn routes_by_json_field_and_defaults_on_bad_json() {
        let h = route(&[
            ("route.json-field", "tier"),
            ("route.map", "gold:0;7:1;true:2"),
            ("route.default", "3"),
        ]);
        let input = batch(&[
            (
                Some("a"),
                Some(r#"{"tier":"gold","n":{"tier":"silver"}}"#),
                &[],
            ),
            (Some("b"), Some(r#"{"tier":7}"#), &[]),
            (Some("c"), Some(r#"{"tier":true}"#), &[]),
            (Some("d"), Some(r#"{"tier":null}"#), &[]),
            (Some("e"), Some("not json"), &[]),
            (Some("f"), None, &[]),
            (Some("g"), Some(r#"["gold"]"#), &[]),
            (Some("h"), Some(r#"{"n":{"tier":"gold"}}"#), &[]),
        ]);
        assert_eq!(h.partition(&input, 4).unwrap(), [0, 1, 2, 3, 3, 3, 3, 3]);
    }

    #[test]
    fn null_keys_rotate_within_their_set_and_default_is_every_partition() {
        let h = route(&[("route.header", "t"), ("route.map", "x:2-3")]);
        let input = batch(&[
            (None, None, &[("t", Some("x"))]),
            (None, None, &[("t", Some("x"))]),
            (None, None, &[("t", Some("x"))]),
            (None, None, &[]),
            (None, None, &[]),
        ]);
        assert_eq!(h.partition(&input, 4).unwrap(), [2, 3, 2, 0, 1]);
    }

    #[test]
    fn sets_beyond_the_topic_fail_naming_the_set() {
        let h = route(&[
            ("route.header", "t"),
            ("route.map", "gold:0-3;silver:4-5"),
            ("route.default", "6-7"),
        ]);
        let err = h
            .partition(&batch(&[(Some("a"), None, &[])]), 5)
            .unwrap_err();
        assert_eq!(
            err,
            PluginError::InvalidInput(
                "route `silver` names partition 5 but topic `orders` has 5 partitions".into()
            )
        );
        let err = h
            .partition(&batch(&[(Some("a"), None, &[])]), 6)
            .unwrap_err();
        assert!(
            err.message().starts_with("route.default names partition 7"),
            "{err}"
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |pairs: &[(&str, &str)]| {
            PartitionerHarness::<FieldRoute>::init(pairs)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("route.map", "a:1")]).contains("`route.header` or `route.json-field`"));
        assert!(err(&[
            ("route.header", "h"),
            ("route.json-field", "f"),
            ("route.map", "a:1")
        ])
        .contains("only one"));
        assert!(err(&[("route.header", "h")]).contains("missing required config key `route.map`"));
        assert!(err(&[("route.header", "h"), ("route.map", "gold")])
            .contains("`gold` is not `name:partitions`"));
        assert!(
            err(&[("route.header", "h"), ("route.map", "a:3-1")]).contains("range `3-1` is empty")
        );
        assert!(
            err(&[("route.header", "h"), ("route.map", "a:x")]).contains("`x` is not a partition")
        );
        assert!(
            err(&[("route.header", "h"), ("route.map", "a:1;a:2")]).contains("`a` is mapped twice")
        );
        assert!(err(&[
            ("route.header", "h"),
            ("route.map", "a:1"),
            ("route.default", "z")
        ])
        .contains("`route.default`"));
    }

    #[test]
    fn sets_parse_lists_and_ranges() {
        assert_eq!(parse_set("k", "0-3, 7,2").unwrap(), [0, 1, 2, 3, 7]);
    }
}

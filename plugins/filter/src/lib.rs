//! `filter`: keep the records whose header or JSON field matches a condition.
//!
//! Configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `header` | test the value of this header, or |
//! | `field` | test this dotted path into the value's JSON object, e.g. `order.region` (exactly one of the two) |
//! | `equals` | keep when the tested value is exactly this text, or |
//! | `prefix` | keep when it starts with this text, or |
//! | `exists` | `true`: keep when the header or field is present and not null (exactly one of the three) |
//! | `invert` | `true`: keep the records that do *not* match (default `false`) |
//!
//! A JSON string is tested by its text, any other JSON value by its compact JSON text
//! (`7`, `true`, `{"a":1}`); a header by its bytes. A header without a value, a value
//! that is not a JSON object, and a missing or null field do not match. Kept records go
//! to output 0 unchanged, for the output topic's partitioner to place.

use quiver_plugin_sdk::prelude::*;
use quiver_plugin_sdk::select::Selector;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    Equals(Vec<u8>),
    Prefix(Vec<u8>),
    Exists,
}

/// The transform and its parsed configuration.
#[derive(Debug)]
pub struct Filter {
    source: Selector,
    test: Test,
    invert: bool,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            source: Selector::Header(String::new()),
            test: Test::Exists,
            invert: false,
        }
    }
}

impl Transform for Filter {
    fn init(&mut self, config: &Config) -> Result<()> {
        config.check_known(&["header", "field", "equals", "prefix", "exists", "invert"])?;
        self.source = Selector::from_config(config)?;
        self.test = match (
            config.get("equals"),
            config.get("prefix"),
            config.get("exists"),
        ) {
            (Some(v), None, None) => Test::Equals(v.as_bytes().to_vec()),
            (None, Some(p), None) => Test::Prefix(p.as_bytes().to_vec()),
            (None, None, Some("true")) => Test::Exists,
            (None, None, Some(other)) => {
                return Err(ConfigError::invalid(
                    "exists",
                    other,
                    "only `true` is meaningful (use invert=true to keep records without it)",
                )
                .into())
            }
            _ => {
                return Err(PluginError::invalid_config(
                    "set exactly one of `equals`, `prefix` or `exists=true`",
                ))
            }
        };
        self.invert = config.parse_or("invert", false)?;
        Ok(())
    }

    fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
        let matches = match (&self.test, self.source.select(record)) {
            (_, None) => false,
            (Test::Exists, Some(_)) => true,
            (Test::Equals(want), Some(v)) => *v == **want,
            (Test::Prefix(prefix), Some(v)) => v.starts_with(prefix),
        };
        if matches != self.invert {
            out.forward(0, record);
        }
        Ok(())
    }
}

register_transform!(Filter);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::{TestRecord, TransformHarness};

    /// The offsets of the records `config` keeps out of a fixed set of four.
    fn kept(config: &[(&str, &str)]) -> Vec<i64> {
        let h = TransformHarness::<Filter>::with_topics("in", &["out"], config).unwrap();
        let result = h
            .run([
                TestRecord::new()
                    .value(r#"{"region":"eu","n":1,"ship":{"to":"de"}}"#)
                    .header("tier", "gold"),
                TestRecord::new()
                    .value(r#"{"region":"us","n":2,"ship":"none"}"#)
                    .header("tier", "silver"),
                TestRecord::new().value("not json").null_header("tier"),
                TestRecord::new().value(r#"{"region":null,"n":4}"#),
            ])
            .unwrap();
        assert!(result.failed.is_none());
        assert!(result.targets().iter().all(|&t| t == 0));
        result.source_offsets()
    }

    #[test]
    fn keeps_what_matches_a_header() {
        assert_eq!(kept(&[("header", "tier"), ("equals", "gold")]), [0]);
        assert_eq!(kept(&[("header", "tier"), ("prefix", "s")]), [1]);
        assert_eq!(kept(&[("header", "tier"), ("exists", "true")]), [0, 1]);
        assert_eq!(
            kept(&[("header", "nope"), ("exists", "true")]),
            [] as [i64; 0]
        );
    }

    #[test]
    fn keeps_what_matches_a_field() {
        assert_eq!(kept(&[("field", "region"), ("equals", "us")]), [1]);
        assert_eq!(kept(&[("field", "n"), ("equals", "4")]), [3]);
        assert_eq!(kept(&[("field", "region"), ("exists", "true")]), [0, 1]);
        assert_eq!(kept(&[("field", "ship.to"), ("prefix", "d")]), [0]);
        assert_eq!(
            kept(&[("field", "ship"), ("equals", r#"{"to":"de"}"#)]),
            [0]
        );
    }

    #[test]
    fn invert_keeps_the_rest() {
        assert_eq!(
            kept(&[("field", "region"), ("exists", "true"), ("invert", "true")]),
            [2, 3]
        );
        assert_eq!(
            kept(&[("header", "tier"), ("equals", "gold"), ("invert", "true")]),
            [1, 2, 3]
        );
    }

    #[test]
    fn kept_records_are_unchanged() {
        let h = TransformHarness::<Filter>::with_topics(
            "in",
            &["out"],
            &[("header", "keep"), ("exists", "true")],
        )
        .unwrap();
        let result = h
            .run([TestRecord::new()
                .key("k")
                .value("v")
                .header("keep", "1")
                .timestamp(9)])
            .unwrap();
        let r = &result.records[0];
        assert_eq!((r.partition, r.timestamp), (-1, 9));
        assert_eq!(
            (r.key.as_deref(), r.value_str()),
            (Some(&b"k"[..]), Some("v"))
        );
        assert_eq!(r.headers, [("keep".to_string(), Some(b"1".to_vec()))]);
    }

    #[test]
    fn bad_config_says_what_to_set() {
        let err = |pairs: &[(&str, &str)]| {
            TransformHarness::<Filter>::init(pairs)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("equals", "x")]).contains("`header`"));
        assert!(err(&[("header", "h"), ("field", "f"), ("equals", "x")]).contains("exactly one"));
        assert!(err(&[("header", ""), ("equals", "x")]).contains("`header`"));
        assert!(err(&[("field", "a..b"), ("equals", "x")])
            .contains("`field` has invalid value \"a..b\""));
        assert!(err(&[("header", "h")]).contains("`equals`"));
        assert!(err(&[("header", "h"), ("equals", "x"), ("prefix", "y")]).contains("exactly one"));
        assert!(err(&[("header", "h"), ("exists", "false")]).contains("`exists`"));
        assert!(err(&[("header", "h"), ("equals", "x"), ("invert", "maybe")]).contains("`invert`"));
        assert!(err(&[("header", "h"), ("equals", "x"), ("equal", "y")]).contains("`equal`"));
    }
}

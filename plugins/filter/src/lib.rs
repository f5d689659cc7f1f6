//! `filter`: keep the records whose header or JSON field matches a condition.
//!
//! Configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `header` | test the value of this header, or |
//! | `field` | test this dotted path into the value's JSON object (exactly one of the two) |
//! | `equals` | keep when the tested value is exactly this text, or |
//! | `prefix` | keep when it starts with this text, or |
//! | `exists` | `true`: keep when the header or field is present and not null (exactly one of the three) |
//! | `invert` | `true`: keep the records that do *not* match |
//!
//! A JSON string is tested by its text, a number or boolean by its JSON text (`7`,
//! `true`). A value that is not JSON, or lacks the field, does not match. Kept records
//! go to output 0 unchanged.

use quiver_plugin_sdk::prelude::*;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Header(String),
    Field(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    Equals(String),
    Prefix(String),
    Exists,
}

/// The transform and its parsed configuration.
#[derive(Debug)]
pub struct Filter {
    source: Source,
    test: Test,
    invert: bool,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            source: Source::Header(String::new()),
            test: Test::Exists,
            invert: false,
        }
    }
}

/// The text of a header or JSON field of `record`, if present and not null.
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

impl Transform for Filter {
    fn init(&mut self, config: &Config) -> Result<()> {
        config.check_known(&["header", "field", "equals", "prefix", "exists", "invert"])?;
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
        self.test = match (
            config.get("equals"),
            config.get("prefix"),
            config.get("exists"),
        ) {
            (Some(v), None, None) => Test::Equals(v.to_owned()),
            (None, Some(p), None) => Test::Prefix(p.to_owned()),
            (None, None, Some("true")) => Test::Exists,
            (None, None, Some(other)) => {
                return Err(
                    ConfigError::invalid("exists", other, "only `true` is meaningful").into(),
                )
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
        let selected = select(record, &self.source);
        let matches = match (&self.test, selected) {
            (_, None) => false,
            (Test::Exists, Some(_)) => true,
            (Test::Equals(want), Some(v)) => v == *want,
            (Test::Prefix(prefix), Some(v)) => v.starts_with(prefix.as_str()),
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
    use quiver_plugin_sdk::testing::TransformHarness;

    fn kept(config: &[(&str, &str)]) -> Vec<i64> {
        let h = TransformHarness::<Filter>::with_topics("in", &["out"], config).unwrap();
        let (records, failed) = h
            .transform_records(&[
                (
                    None,
                    Some(br#"{"region":"eu","n":1}"#),
                    &[("tier", Some(b"gold"))],
                ),
                (
                    None,
                    Some(br#"{"region":"us","n":2}"#),
                    &[("tier", Some(b"silver"))],
                ),
                (None, Some(b"not json"), &[("tier", None)]),
                (None, Some(br#"{"region":null,"n":4}"#), &[]),
            ])
            .unwrap();
        assert!(failed.is_none());
        records.iter().map(|r| r.source_offset).collect()
    }

    #[test]
    fn keeps_what_matches() {
        assert_eq!(kept(&[("header", "tier"), ("equals", "gold")]), [0]);
        assert_eq!(kept(&[("header", "tier"), ("prefix", "s")]), [1]);
        assert_eq!(kept(&[("header", "tier"), ("exists", "true")]), [0, 1]);
        assert_eq!(kept(&[("field", "region"), ("equals", "us")]), [1]);
        assert_eq!(kept(&[("field", "n"), ("equals", "4")]), [3]);
        assert_eq!(kept(&[("field", "region"), ("exists", "true")]), [0, 1]);
        assert_eq!(
            kept(&[("field", "region"), ("exists", "true"), ("invert", "true")]),
            [2, 3]
        );
    }

    #[test]
    fn bad_config_says_what_to_set() {
        let e = TransformHarness::<Filter>::init(&[("equals", "x")]).unwrap_err();
        assert!(e.to_string().contains("`header`"), "{e}");
        let e = TransformHarness::<Filter>::init(&[("header", "h")]).unwrap_err();
        assert!(e.to_string().contains("`equals`"), "{e}");
        let e = TransformHarness::<Filter>::init(&[
            ("header", "h"),
            ("equals", "x"),
            ("invert", "maybe"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("invert"), "{e}");
    }
}

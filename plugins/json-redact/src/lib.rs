//! `json-redact`: mask or drop fields of JSON record values, e.g. personal data before
//! a topic is shared.
//!
//! Configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `paths` | comma-separated dotted paths into the value's JSON object, e.g. `user.email,card.number` (required) |
//! | `mode` | `mask` (default): replace the field's value with the `mask` string; `drop`: remove the field |
//! | `mask` | the replacement in `mask` mode (default `***`) |
//! | `on-invalid` | a value that is not a JSON object: `fail` (default; the record goes to the transform's error policy) or `pass` (written unchanged) |
//!
//! Every record goes to output 0 with its key, headers and timestamp; the output topic's
//! partitioner places it. Paths go through nested objects only (not into arrays); a
//! path missing from a value leaves the value as it is. Every value is rewritten as
//! compact UTF-8 JSON with its fields in their original order, whether a path matched
//! or not, so all output has one form and the same input always gives the same bytes
//! (the transform is deterministic). Numbers are re-serialised by `serde_json`, which
//! keeps their value but not always their text (`1e3` becomes `1000.0`). A tombstone
//! (null value) is forwarded as it is: it has nothing to redact, and a compacted output
//! topic needs it to delete the key.

use quiver_plugin_sdk::prelude::*;
use serde_json::{Map, Value};

/// What happens to a field found at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Its value becomes this string.
    Mask(String),
    /// It is removed from its object.
    Drop,
}

/// The transform and its parsed configuration.
#[derive(Debug)]
pub struct JsonRedact {
    /// Each path split at its dots; never empty, no empty segment.
    paths: Vec<Vec<String>>,
    mode: Mode,
    pass_invalid: bool,
    /// The serialised value being written, kept so each record reuses its allocation
    /// (`Outputs` copies the bytes).
    buffer: Vec<u8>,
}

const DEFAULT_MASK: &str = "***";

impl Default for JsonRedact {
    fn default() -> Self {
        JsonRedact {
            paths: Vec::new(),
            mode: Mode::Mask(DEFAULT_MASK.to_owned()),
            pass_invalid: false,
            buffer: Vec::new(),
        }
    }
}

impl Transform for JsonRedact {
    fn init(&mut self, config: &Config) -> Result<()> {
        config.check_known(&["paths", "mode", "mask", "on-invalid"])?;
        let paths = config.list("paths");
        if paths.is_empty() {
            return Err(PluginError::invalid_config(
                "set `paths` to the comma-separated JSON paths to redact, e.g. paths=customer.email",
            ));
        }
        let listed = config.get("paths").unwrap_or_default();
        self.paths = paths
            .iter()
            .map(|path| {
                let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
                if segments.iter().any(String::is_empty) {
                    return Err(ConfigError::invalid(
                        "paths",
                        listed,
                        format!("path `{path}` has an empty segment"),
                    ));
                }
                Ok(segments)
            })
            .collect::<std::result::Result<_, _>>()?;
        self.mode = match config.get("mode").unwrap_or("mask") {
            "mask" => Mode::Mask(config.get("mask").unwrap_or(DEFAULT_MASK).to_owned()),
            "drop" => {
                // A mask that is silently ignored would suggest the fields are masked.
                if let Some(mask) = config.get("mask") {
                    return Err(
                        ConfigError::invalid("mask", mask, "only applies with mode=mask").into(),
                    );
                }
                Mode::Drop
            }
            other => {
                return Err(ConfigError::invalid("mode", other, "expected mask or drop").into())
            }
        };
        self.pass_invalid = match config.get("on-invalid").unwrap_or("fail") {
            "fail" => false,
            "pass" => true,
            other => {
                return Err(
                    ConfigError::invalid("on-invalid", other, "expected fail or pass").into(),
                )
            }
        };
        Ok(())
    }

    fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
        let Some(bytes) = record.value() else {
            out.forward(0, record);
            return Ok(());
        };
        let mut object = match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(object)) => object,
            _ if self.pass_invalid => {
                out.forward(0, record);
                return Ok(());
            }
            // The record's offset travels with the failure (and into a dead letter's
            // headers), so the message only says what is wrong with it.
            _ => {
                return Err(PluginError::invalid_input(
                    "the value is not a JSON object (on-invalid=fail)",
                ))
            }
        };
        for path in &self.paths {
            redact(&mut object, path, &self.mode);
        }
        self.buffer.clear();
        serde_json::to_writer(&mut self.buffer, &object)
            .map_err(|e| PluginError::failed(format!("serialising the redacted value: {e}")))?;
        out.write(
            0,
            record.key(),
            Some(&self.buffer),
            record.headers(),
            record.timestamp(),
        );
        Ok(())
    }
}

/// Masks or removes the field at `path` in `object`, if it is there.
fn redact(object: &mut Map<String, Value>, path: &[String], mode: &Mode) {
    let (last, parents) = path.split_last().expect("paths are never empty");
    let mut current = object;
    for segment in parents {
        match current.get_mut(segment) {
            Some(Value::Object(inner)) => current = inner,
            _ => return,
        }
    }
    match mode {
        Mode::Mask(mask) => {
            if let Some(field) = current.get_mut(last) {
                *field = Value::String(mask.clone());
            }
        }
        // `shift_remove`, not `remove`: with `preserve_order` the map is an IndexMap,
        // and only a shifting removal keeps the remaining fields in their order.
        Mode::Drop => {
            current.shift_remove(last);
        }
    }
}

register_transform!(JsonRedact);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::{TestRecord, TransformHarness};

    /// Redacts one record (key `k`, header `h=1`, timestamp 5) and returns its output
    /// value, after checking everything else passed through.
    fn run(config: &[(&str, &str)], value: &str) -> Result<String> {
        let h = TransformHarness::<JsonRedact>::with_topics("in", &["out"], config)?;
        let result = h.run([TestRecord::new()
            .key("k")
            .value(value)
            .header("h", "1")
            .timestamp(5)])?;
        if let Some((_, e)) = result.failed {
            return Err(e);
        }
        let [record] = &result.records[..] else {
            panic!("one output record expected: {result:?}");
        };
        assert_eq!((record.target, record.partition), (0, -1));
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.headers, [("h".to_string(), Some(b"1".to_vec()))]);
        assert_eq!(record.timestamp, 5);
        Ok(record.value_str().unwrap().to_owned())
    }

    #[test]
    fn masks_nested_fields_and_keeps_field_order() {
        let out = run(
            &[("paths", "user.email, card")],
            r#"{"id":7,"user":{"name":"a","email":"a@x"},"card":{"n":"4111"},"z":true}"#,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"id":7,"user":{"name":"a","email":"***"},"card":"***","z":true}"#
        );
        let out = run(&[("paths", "pin"), ("mask", "")], r#"{"pin":1234}"#).unwrap();
        assert_eq!(out, r#"{"pin":""}"#);
    }

    #[test]
    fn drops_fields_and_keeps_the_rest_in_order() {
        let out = run(
            &[("paths", "user.email,nope.x"), ("mode", "drop")],
            r#"{"a":1,"user":{"email":"a@x","id":1,"b":2},"c":3}"#,
        )
        .unwrap();
        assert_eq!(out, r#"{"a":1,"user":{"id":1,"b":2},"c":3}"#);
    }

    #[test]
    fn every_value_comes_out_compact_and_utf8() {
        // No path matches here: the value is still rewritten, so all output is alike.
        // `\u00e9` is a JSON escape, `è` raw UTF-8: both come out as UTF-8.
        let value = "{ \"id\": 1e3,\n  \"user\": \"\\u00e9lève\", \"n\": [1, -2, 1.5] }";
        assert_eq!(
            run(&[("paths", "user.email")], value).unwrap(),
            r#"{"id":1000.0,"user":"élève","n":[1,-2,1.5]}"#
        );
    }

    #[test]
    fn output_is_deterministic() {
        let value = r#"{"b":{"y":2,"x":1},"a":[3,{"k":"v"}],"secret":"s"}"#;
        let first = run(&[("paths", "secret")], value).unwrap();
        assert_eq!(
            first,
            r#"{"b":{"y":2,"x":1},"a":[3,{"k":"v"}],"secret":"***"}"#
        );
        for _ in 0..3 {
            assert_eq!(run(&[("paths", "secret")], value).unwrap(), first);
        }
    }

    #[test]
    fn values_that_are_not_objects_fail_the_record_or_pass() {
        let h =
            TransformHarness::<JsonRedact>::with_topics("in", &["out"], &[("paths", "a")]).unwrap();
        let result = h
            .run([
                TestRecord::new().value(r#"{"a":1}"#),
                TestRecord::new().value("[1]"),
                TestRecord::new().value(r#"{"a":3}"#),
            ])
            .unwrap();
        assert_eq!(result.source_offsets(), [0], "stops at the failing record");
        let (offset, error) = result.failed.unwrap();
        assert_eq!(offset, 1);
        assert_eq!(
            error,
            PluginError::invalid_input("the value is not a JSON object (on-invalid=fail)")
        );
        let e = run(&[("paths", "a")], "not json").unwrap_err();
        assert_eq!(
            e.message(),
            "the value is not a JSON object (on-invalid=fail)"
        );

        assert_eq!(
            run(&[("paths", "a"), ("on-invalid", "pass")], "[1]").unwrap(),
            "[1]"
        );
        assert_eq!(
            run(&[("paths", "a"), ("on-invalid", "pass")], "not json").unwrap(),
            "not json"
        );
    }

    #[test]
    fn tombstones_pass_through() {
        let h =
            TransformHarness::<JsonRedact>::with_topics("in", &["out"], &[("paths", "a")]).unwrap();
        let result = h.run([TestRecord::new().key("k")]).unwrap();
        assert!(result.failed.is_none());
        assert_eq!(result.records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(result.records[0].value, None);
    }

    #[test]
    fn bad_config_names_the_key_and_value() {
        let err = |pairs: &[(&str, &str)]| {
            TransformHarness::<JsonRedact>::init(pairs)
                .unwrap_err()
                .to_string()
        };
        let missing = "invalid config: set `paths` to the comma-separated JSON paths to redact, \
                       e.g. paths=customer.email";
        assert_eq!(err(&[]), missing);
        assert_eq!(err(&[("paths", " , ")]), missing);
        assert_eq!(
            err(&[("paths", "a,b..c")]),
            "invalid config: config key `paths` has invalid value \"a,b..c\": \
             path `b..c` has an empty segment"
        );
        assert!(
            err(&[("paths", "a"), ("mode", "hide")]).contains("`mode` has invalid value \"hide\"")
        );
        assert!(err(&[("paths", "a"), ("mode", "drop"), ("mask", "x")]).contains("`mask`"));
        assert!(err(&[("paths", "a"), ("on-invalid", "skip")]).contains("`on-invalid`"));
        assert!(err(&[("paths", "a"), ("pahts", "b")]).contains("unknown config key `pahts`"));
    }
}

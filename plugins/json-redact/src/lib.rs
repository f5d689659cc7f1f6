//! `json-redact`: mask or drop fields of JSON record values, e.g. personal data before
//! a topic is shared.
//!
//! Configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `paths` | comma-separated dotted paths into the value's JSON object, e.g. `customer.email,card.number` (required) |
//! | `mode` | `mask` (default): replace the field's value with the `mask` string; `drop`: remove the field |
//! | `mask` | the replacement for `mask` mode (default `***`) |
//! | `on-invalid` | a value that is not a JSON object: `fail` (default; the record goes to the transform's error policy) or `pass` (written unchanged) |
//!
//! Every record goes to output 0 with its key, headers and timestamp; the output topic's
//! partitioner places it. A path that is missing from a record leaves the record as it
//! is. Field order is kept, and the output is compact JSON, so the same input always
//! gives the same bytes (the transform is deterministic).

use quiver_plugin_sdk::prelude::*;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Mode {
    #[default]
    Mask,
    Drop,
}

/// The transform and its parsed configuration.
#[derive(Debug, Default)]
pub struct JsonRedact {
    paths: Vec<Vec<String>>,
    mode: Mode,
    mask: String,
    pass_invalid: bool,
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
        self.paths = Vec::with_capacity(paths.len());
        for path in paths {
            let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
            if parts.iter().any(String::is_empty) {
                return Err(
                    ConfigError::invalid("paths", path, "a path has an empty segment").into(),
                );
            }
            self.paths.push(parts);
        }
        self.mode = match config.get("mode").unwrap_or("mask") {
            "mask" => Mode::Mask,
            "drop" => Mode::Drop,
            other => {
                return Err(ConfigError::invalid("mode", other, "expected mask or drop").into())
            }
        };
        self.mask = config.get("mask").unwrap_or("***").to_owned();
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
        let parsed = record
            .value()
            .map(serde_json::from_slice::<Value>)
            .and_then(|v| v.ok())
            .filter(Value::is_object);
        let Some(mut value) = parsed else {
            if self.pass_invalid {
                out.forward(0, record);
                return Ok(());
            }
            return Err(PluginError::invalid_input(
                "the value is not a JSON object (on-invalid=fail)",
            ));
        };
        let object = value.as_object_mut().expect("filtered to objects");
        for path in &self.paths {
            redact(object, path, self.mode, &self.mask);
        }
        let bytes = serde_json::to_vec(&value)
            .map_err(|e| PluginError::failed(format!("serialising the redacted value: {e}")))?;
        out.write(
            0,
            record.key(),
            Some(&bytes),
            record.headers(),
            record.timestamp(),
        );
        Ok(())
    }
}

/// Masks or removes the field at `path` in `object`, if it is there.
fn redact(object: &mut Map<String, Value>, path: &[String], mode: Mode, mask: &str) {
    let (last, parents) = path.split_last().expect("paths are never empty");
    let mut current = object;
    for part in parents {
        match current.get_mut(part) {
            Some(Value::Object(inner)) => current = inner,
            _ => return,
        }
    }
    match mode {
        Mode::Mask => {
            if let Some(field) = current.get_mut(last) {
                *field = Value::String(mask.to_owned());
            }
        }
        Mode::Drop => {
            current.shift_remove(last);
        }
    }
}

register_transform!(JsonRedact);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::TransformHarness;

    fn run(config: &[(&str, &str)], value: &str) -> Result<Option<String>> {
        let h = TransformHarness::<JsonRedact>::with_topics("in", &["out"], config)?;
        let (records, failed) =
            h.transform_records(&[(Some(b"k"), Some(value.as_bytes()), &[("h", Some(b"1"))])])?;
        if let Some((_, e)) = failed {
            return Err(e);
        }
        assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(records[0].headers, [("h".to_string(), Some(b"1".to_vec()))]);
        assert_eq!(records[0].target, 0);
        Ok(records[0]
            .value
            .clone()
            .map(|v| String::from_utf8(v).unwrap()))
    }

    #[test]
    fn masks_nested_fields_and_keeps_order() {
        let out = run(
            &[("paths", "user.email,card")],
            r#"{"id":7,"user":{"name":"a","email":"a@x"},"card":"4111","z":true}"#,
        )
        .unwrap();
        assert_eq!(
            out.as_deref(),
            Some(r#"{"id":7,"user":{"name":"a","email":"***"},"card":"***","z":true}"#)
        );
    }

    #[test]
    fn drops_fields_and_ignores_missing_paths() {
        let out = run(
            &[("paths", "user.email,nope.x"), ("mode", "drop")],
            r#"{"user":{"email":"a@x","id":1}}"#,
        )
        .unwrap();
        assert_eq!(out.as_deref(), Some(r#"{"user":{"id":1}}"#));
    }

    #[test]
    fn invalid_values_fail_or_pass() {
        let e = run(&[("paths", "a")], "not json").unwrap_err();
        assert!(e.to_string().contains("not a JSON object"), "{e}");
        let out = run(&[("paths", "a"), ("on-invalid", "pass")], "[1]").unwrap();
        assert_eq!(out.as_deref(), Some("[1]"));
    }

    #[test]
    fn bad_config_names_the_key() {
        let e = TransformHarness::<JsonRedact>::init(&[]).unwrap_err();
        assert!(e.to_string().contains("set `paths`"), "{e}");
        let e =
            TransformHarness::<JsonRedact>::init(&[("paths", "a"), ("mode", "hide")]).unwrap_err();
        assert!(e.to_string().contains("mode"), "{e}");
        let e = TransformHarness::<JsonRedact>::init(&[("paths", "a..b")]).unwrap_err();
        assert!(e.to_string().contains("empty segment"), "{e}");
        let e =
            TransformHarness::<JsonRedact>::init(&[("paths", "a"), ("pahts", "b")]).unwrap_err();
        assert!(e.to_string().contains("pahts"), "{e}");
    }
}

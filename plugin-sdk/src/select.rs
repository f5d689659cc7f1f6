//! Reading one value out of a record, the way `filter` and `split` (and any plugin
//! configured with `header=NAME` or `field=DOTTED.PATH`) agree to: a header's value, or
//! the text of a field of the record's JSON value. Behind the `json` feature, which
//! brings serde_json (with `preserve_order`) into the plugin.

use std::borrow::Cow;

use serde_json::Value;

use crate::columns::Record;
use crate::config::{Config, ConfigError};
use crate::error::{PluginError, Result};

/// Where a value is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The value of this header (the last one, if the name repeats).
    Header(String),
    /// This dotted path into the record's JSON value, split at its dots.
    Field(Vec<String>),
}

impl Selector {
    /// The selector named by exactly one of the config keys `header` or `field`.
    pub fn from_config(config: &Config) -> Result<Selector> {
        match (config.get("header"), config.get("field")) {
            (Some(_), Some(_)) | (None, None) => Err(PluginError::invalid_config(
                "set exactly one of `header` (a header name) or `field` (a dotted JSON path)",
            )),
            (Some(""), None) => Err(ConfigError::invalid("header", "", "is empty").into()),
            (Some(name), None) => Ok(Selector::Header(name.to_owned())),
            (None, Some(path)) => {
                let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
                if segments.iter().any(String::is_empty) {
                    return Err(ConfigError::invalid(
                        "field",
                        path,
                        "the path has an empty segment",
                    )
                    .into());
                }
                Ok(Selector::Field(segments))
            }
        }
    }

    /// The record's header value or field text, if present and not null: a JSON string
    /// by its text, any other value by its JSON text (`7`, `true`). A header is
    /// borrowed; a field is parsed out of the value, so it is owned.
    pub fn select<'a>(&self, record: &Record<'a>) -> Option<Cow<'a, [u8]>> {
        match self {
            Selector::Header(name) => record.header(name).flatten().map(Cow::Borrowed),
            Selector::Field(path) => {
                let mut value: Value = serde_json::from_slice(record.value()?).ok()?;
                for segment in path {
                    value = match value {
                        Value::Object(mut object) => object.swap_remove(segment)?,
                        _ => return None,
                    };
                }
                match value {
                    Value::Null => None,
                    Value::String(s) => Some(Cow::Owned(s.into_bytes())),
                    other => Some(Cow::Owned(other.to_string().into_bytes())),
                }
            }
        }
    }
}

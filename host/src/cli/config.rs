//! `quiver config reference|show`: the broker's settings as documentation, and as a
//! given broker would run with them.
//!
//! The reference is generated from the [`Config`] type itself: its JSON schema (derived
//! with schemars, so each field's doc comment is its description) gives the keys,
//! types and descriptions, and `Config::default()` gives the defaults. The checked-in
//! `docs/configuration.md` is this command's output, and a unit test fails when the two
//! differ, so the documentation cannot drift from the code.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use serde_json::Value;

use super::{OutputArgs, ServeArgs};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print every setting: section, key, type, default, environment variable and
    /// description (Markdown; `--output json` for a document scripts can read).
    #[command(after_help = "\
Examples:
  quiver config reference > docs/configuration.md
  quiver config reference --output json | jq '.settings[] | select(.section == \"log\")'")]
    Reference {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Print the configuration `quiver serve` would run with, after the file, the
    /// QUIVER_* environment and --set (TOML; `--output json` for JSON). It is validated
    /// the same way, so this also checks a configuration before a restart.
    #[command(after_help = "\
Examples:
  quiver config show
  quiver config show --config /etc/quiver/quiver.toml --set log.retention_ms=3600000
  QUIVER_KAFKA__LISTEN=0.0.0.0:9092 quiver config show --output json | jq .kafka")]
    Show {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        out: OutputArgs,
    },
}

pub(crate) fn run(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Reference { out } => {
            let settings = settings();
            if out.json() {
                super::output::print_json(&serde_json::json!({ "settings": settings }));
            } else {
                print!("{}", markdown());
            }
        }
        ConfigCommand::Show { serve, out } => {
            let config = Config::load(serve.config.as_deref(), &serve.overrides())
                .context("invalid configuration")?;
            if out.json() {
                super::output::print_json(&config);
            } else {
                print!(
                    "{}",
                    toml::to_string(&config).context("writing the configuration as TOML")?
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One setting of the reference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Setting {
    /// The table it lives in, e.g. `security.tls`.
    section: String,
    /// The dotted key `--set` takes, e.g. `security.tls.cert_file`.
    key: String,
    /// What values it takes, in words.
    #[serde(rename = "type")]
    ty: String,
    /// Its value in `Config::default()`; null when unset or required.
    default: Value,
    /// Whether a value must be given (only inside tables the operator adds).
    required: bool,
    /// The environment variable that sets it.
    env: String,
    /// The field's doc comment.
    description: String,
}

/// A section of the reference: its table name and what it is for.
#[derive(Debug, Clone, PartialEq)]
struct Section {
    name: String,
    description: String,
}

/// Every setting, in the order the `Config` type declares them.
pub(crate) fn settings() -> Vec<Setting> {
    let (_, settings) = walk();
    settings
}

fn walk() -> (Vec<Section>, Vec<Setting>) {
    let schema = schemars::schema_for!(Config);
    let root = schema.as_value();
    let defaults = serde_json::to_value(Config::default()).expect("the config serialises");
    let mut sections = Vec::new();
    let mut settings = Vec::new();
    walk_struct(
        root,
        root,
        &[],
        Some(&defaults),
        &mut sections,
        &mut settings,
    );
    (sections, settings)
}

/// Follows a `$ref` (possibly inside a nullable `anyOf`) to the schema it names.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        return &root["$defs"][name];
    }
    if let Some(options) = schema["anyOf"].as_array() {
        if let Some(inner) = options.iter().find(|o| o["type"] != "null") {
            return resolve(root, inner);
        }
    }
    schema
}

fn walk_struct(
    root: &Value,
    schema: &Value,
    path: &[String],
    defaults: Option<&Value>,
    sections: &mut Vec<Section>,
    settings: &mut Vec<Setting>,
) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for (name, property) in properties {
        let target = resolve(root, property);
        let mut key_path = path.to_vec();
        key_path.push(name.clone());
        let description = text(
            property["description"]
                .as_str()
                .unwrap_or_else(|| target["description"].as_str().unwrap_or_default()),
        );
        let default = defaults.map(|d| &d[name]);
        if target["properties"].is_object() {
            sections.push(Section {
                name: key_path.join("."),
                description,
            });
            walk_struct(root, target, &key_path, default, sections, settings);
            continue;
        }
        let entry = resolve(root, &target["additionalProperties"]);
        if entry["properties"].is_object() {
            // A table of named tables (`[kafka.listeners.<name>]`): documented once,
            // with the name as a placeholder, and without defaults (there are none).
            key_path.push("<name>".into());
            sections.push(Section {
                name: key_path.join("."),
                description,
            });
            walk_struct(root, entry, &key_path, None, sections, settings);
            continue;
        }
        let mut description = description;
        if let Some(values) = variant_docs(target) {
            description.push_str(&format!(" Values: {values}."));
        }
        settings.push(Setting {
            section: path.join("."),
            key: key_path.join("."),
            ty: type_name(root, property),
            // Inside a named table there is no `Config::default()` to read; the
            // field's own serde default, which the schema carries, is the default.
            default: default
                .cloned()
                .or_else(|| property.get("default").cloned())
                .unwrap_or(Value::Null),
            required: defaults.is_none() && required.contains(&name.as_str()),
            env: format!(
                "QUIVER_{}",
                key_path
                    .iter()
                    .map(|k| k.to_uppercase())
                    .collect::<Vec<_>>()
                    .join("__")
            ),
            description,
        });
    }
}

/// A doc comment as one paragraph.
fn text(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The values of an enum of strings, when it has any.
fn enum_values(schema: &Value) -> Option<Vec<String>> {
    if let Some(values) = schema["enum"].as_array() {
        return Some(
            values
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        );
    }
    let variants = schema["oneOf"].as_array()?;
    variants
        .iter()
        .map(|v| {
            v["const"]
                .as_str()
                .or_else(|| v["enum"][0].as_str())
                .map(String::from)
        })
        .collect()
}

/// `` `A`: what A means; `B`: … `` for an enum whose variants have doc comments.
fn variant_docs(schema: &Value) -> Option<String> {
    let variants = schema["oneOf"].as_array()?;
    let docs: Vec<String> = variants
        .iter()
        .filter_map(|v| {
            let name = v["const"].as_str().or_else(|| v["enum"][0].as_str())?;
            let doc = v["description"].as_str()?;
            Some(format!("`{name}`: {}", text(doc).trim_end_matches('.')))
        })
        .collect();
    (!docs.is_empty()).then(|| docs.join("; "))
}

/// What values a setting takes, in words.
fn type_name(root: &Value, schema: &Value) -> String {
    let target = resolve(root, schema);
    let nullable = schema["anyOf"]
        .as_array()
        .is_some_and(|o| o.iter().any(|v| v["type"] == "null"))
        || target["type"]
            .as_array()
            .is_some_and(|t| t.iter().any(|v| v == "null"));
    let base = if let Some(values) = enum_values(target) {
        let quoted: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        format!("one of {}", quoted.join(", "))
    } else {
        let ty = match &target["type"] {
            Value::String(t) => t.clone(),
            Value::Array(types) => types
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or("value")
                .to_string(),
            _ => "value".into(),
        };
        match ty.as_str() {
            "integer" if target["minimum"].as_f64() == Some(0.0) => "integer (>= 0)".into(),
            "array" => format!("list of {}s", type_name(root, &target["items"])),
            "object" => "table".into(),
            other => other.to_string(),
        }
    };
    if nullable {
        format!("{base}, optional")
    } else {
        base
    }
}

/// A default as it would be written in `quiver.toml`.
fn toml_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) if m.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

/// The Markdown reference: a table per section.
pub(crate) fn markdown() -> String {
    let (sections, settings) = walk();
    let mut out = String::from(
        "<!-- Generated by `quiver config reference`; do not edit by hand. Regenerate with:\n     \
         cargo run -p quiver -- config reference > docs/configuration.md -->\n\n\
         # Configuration reference\n\n\
         Every broker setting, generated from the broker's configuration type so it cannot\n\
         drift from the code. A broker reads its settings in layers, each overriding the one\n\
         before:\n\n\
         1. the defaults below (`quiver serve` with nothing else is a single-node cluster);\n\
         2. the TOML file given with `--config`, or `./quiver.toml` if it exists;\n\
         3. environment variables `QUIVER_<SECTION>__<KEY>` (two underscores between the\n   \
         parts of a key; nested tables add more, e.g. `QUIVER_SECURITY__TLS__CERT_FILE`);\n\
         4. `--set section.key=value` (and `--data-dir`, `--kafka-listen`, `--admin-listen`).\n\n\
         Lists may also be written as one comma-separated string (the form an environment\n\
         variable or `--set` gives) where the description says so. Everything is validated\n\
         before the broker opens a port: a bad value stops startup with a message naming the\n\
         key. `quiver config show` prints the configuration a broker would run with, after\n\
         all four layers.\n\n\
         Topic-level settings (`retention.ms`, `cleanup.policy`, …) are Kafka topic configs\n\
         set with `quiver topic create|alter --config`; their broker-wide defaults are the\n\
         `[log]` section.\n",
    );
    for section in &sections {
        let rows: Vec<&Setting> = settings
            .iter()
            .filter(|s| s.section == section.name)
            .collect();
        out.push_str(&format!("\n## `[{}]`\n\n", section.name));
        if !section.description.is_empty() {
            out.push_str(&section.description);
            out.push_str("\n\n");
        }
        out.push_str("| Key | Type | Default | Environment variable | Description |\n");
        out.push_str("|---|---|---|---|---|\n");
        for s in rows {
            let default = match &s.default {
                _ if s.required => "required".to_string(),
                Value::Null => "unset".to_string(),
                v => format!("`{}`", toml_value(v)),
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | `{}` | {} |\n",
                s.key,
                s.ty,
                default,
                s.env,
                s.description.replace('|', "\\|")
            ));
        }
    }
    out
}

#[cfg(test)]
// figment's Jail hands back figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    fn find(key: &str) -> Setting {
        settings()
            .into_iter()
            .find(|s| s.key == key)
            .unwrap_or_else(|| panic!("no setting {key}"))
    }

    #[test]
    fn docs_configuration_md_is_the_generated_reference() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let written = std::fs::read_to_string(path).unwrap_or_default();
        let generated = markdown();
        assert!(
            written == generated,
            "docs/configuration.md is not what `quiver config reference` prints; a config \
             field or its doc comment changed. Regenerate it with:\n    \
             cargo run -p quiver -- config reference > docs/configuration.md"
        );
    }

    #[test]
    fn every_setting_has_a_type_a_description_and_an_env_override() {
        let settings = settings();
        assert!(settings.len() > 60, "{} settings", settings.len());
        for s in &settings {
            assert!(!s.description.is_empty(), "{} has no doc comment", s.key);
            assert!(s.description.len() > 12, "{}: {:?}", s.key, s.description);
            assert!(!s.ty.contains("value"), "{}: type {}", s.key, s.ty);
            assert!(s.env.starts_with("QUIVER_"), "{}", s.key);
        }
    }

    #[test]
    fn settings_carry_key_type_default_and_env() {
        assert_eq!(
            find("log.retention_ms"),
            Setting {
                section: "log".into(),
                key: "log.retention_ms".into(),
                ty: "integer".into(),
                default: serde_json::json!(604_800_000),
                required: false,
                env: "QUIVER_LOG__RETENTION_MS".into(),
                description:
                    "Delete segments whose newest record is older than this (ms); -1 keeps forever."
                        .into(),
            }
        );
        let cert = find("security.tls.cert_file");
        assert_eq!(cert.section, "security.tls");
        assert_eq!(cert.ty, "string, optional");
        assert_eq!(cert.default, Value::Null);
        assert_eq!(cert.env, "QUIVER_SECURITY__TLS__CERT_FILE");
        let protocol = find("kafka.security_protocol");
        assert!(
            protocol.ty.starts_with("one of `PLAINTEXT`, `SSL`"),
            "{}",
            protocol.ty
        );
        assert!(protocol.description.contains("`SASL_SSL`: SASL inside TLS"));
        let listen = find("kafka.listeners.<name>.listen");
        assert!(listen.required);
        assert_eq!(find("cluster.seeds").ty, "list of strings");
        assert_eq!(find("broker.node_id").default, serde_json::json!(0));
    }

    #[test]
    fn every_default_loads_back_through_its_env_variable() {
        // The documented names are the ones the loader reads: setting each scalar
        // default through its environment variable yields the default config.
        figment::Jail::expect_with(|jail| {
            for s in settings().into_iter().filter(|s| !s.key.contains("<name>")) {
                match &s.default {
                    Value::Number(n) => jail.set_env(&s.env, n),
                    Value::Bool(b) => jail.set_env(&s.env, b),
                    Value::String(v) => jail.set_env(&s.env, v),
                    _ => {}
                }
            }
            let loaded = Config::load(None, &[]).map_err(|e| e.to_string())?;
            assert_eq!(loaded, Config::default());
            Ok(())
        });
    }

    #[test]
    fn show_prints_toml_that_loads_back() {
        use figment::providers::{Format as _, Toml};
        let mut config = Config::default();
        config.log.retention_ms = 5000;
        config.security.tls.cert_file = Some("certs/server.pem".into());
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("retention_ms = 5000"), "{text}");
        assert!(text.contains("[security.tls]"), "{text}");
        let loaded: Config = figment::Figment::from(Toml::string(&text))
            .extract()
            .unwrap();
        assert_eq!(loaded, config);
    }
}

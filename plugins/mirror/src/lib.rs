//! `mirror`: the policy of a mirror connector, MirrorMaker 2's defaults and more.
//!
//! Configuration (the broker adds `topics` and `groups` from `quiver mirror create`):
//!
//! | key | meaning |
//! |---|---|
//! | `topics` | regular expression a source topic must match in full to be mirrored (default `.*`) |
//! | `topics.exclude` | regular expression of source topics never mirrored (default: none); internal topics (`__` prefix) never are |
//! | `groups` | regular expression a consumer group must match in full for its offsets to be translated (default `.*`) |
//! | `groups.exclude` | regular expression of groups left out (default: none) |
//! | `naming` | `prefix` (default): the target topic is `<source-alias><separator><topic>`, as MirrorMaker 2's default replication policy; `identity`: the same name as at the source (active/active needs the provenance the broker adds to stay loop-free) |
//! | `separator` | between alias and topic with `prefix` naming (default `.`) |
//! | `drop-header` | a header name: records carrying it are not mirrored (default: none) |
//!
//! With `prefix` naming a topic that already carries an alias prefix is mirrored again
//! under a second prefix (`us-east.eu-west.orders`), which is what lets a chain of
//! regions tell where data came from; records never return to a cluster they passed
//! through either way (the broker's provenance header).

use quiver_plugin_sdk::prelude::*;
use regex_lite::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    Prefix,
    Identity,
}

/// The policy and its parsed configuration.
#[derive(Debug)]
pub struct Mirror {
    topics: Regex,
    topics_exclude: Option<Regex>,
    groups: Regex,
    groups_exclude: Option<Regex>,
    naming: Naming,
    separator: String,
    drop_header: Option<String>,
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror {
            topics: whole(".*").expect("valid"),
            topics_exclude: None,
            groups: whole(".*").expect("valid"),
            groups_exclude: None,
            naming: Naming::Prefix,
            separator: ".".into(),
            drop_header: None,
        }
    }
}

/// `pattern` anchored at both ends: a pattern names whole topic and group names, as
/// MirrorMaker 2's `topics` and `groups` lists do.
fn whole(pattern: &str) -> std::result::Result<Regex, regex_lite::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

fn pattern(config: &Config, key: &str) -> Result<Option<Regex>> {
    match config.get(key) {
        None => Ok(None),
        Some(p) => whole(p).map(Some).map_err(|e| {
            ConfigError::invalid(key, p, format!("not a regular expression: {e}")).into()
        }),
    }
}

impl Connector for Mirror {
    fn init(&mut self, config: &Config) -> Result<()> {
        config.check_known(&[
            "topics",
            "topics.exclude",
            "groups",
            "groups.exclude",
            "naming",
            "separator",
            "drop-header",
        ])?;
        if let Some(topics) = pattern(config, "topics")? {
            self.topics = topics;
        }
        self.topics_exclude = pattern(config, "topics.exclude")?;
        if let Some(groups) = pattern(config, "groups")? {
            self.groups = groups;
        }
        self.groups_exclude = pattern(config, "groups.exclude")?;
        self.naming = match config.get("naming").unwrap_or("prefix") {
            "prefix" => Naming::Prefix,
            "identity" => Naming::Identity,
            other => {
                return Err(
                    ConfigError::invalid("naming", other, "expected prefix or identity").into(),
                )
            }
        };
        if let Some(separator) = config.get("separator") {
            if separator.is_empty() || separator.contains('/') {
                return Err(ConfigError::invalid(
                    "separator",
                    separator,
                    "must be non-empty and may not contain '/'",
                )
                .into());
            }
            self.separator = separator.to_string();
        }
        self.drop_header = config.get("drop-header").map(str::to_string);
        Ok(())
    }

    fn target_topic(&mut self, source_cluster: &str, topic: &str) -> Option<String> {
        if topic.is_empty() || topic.starts_with("__") || !self.topics.is_match(topic) {
            return None;
        }
        if self
            .topics_exclude
            .as_ref()
            .is_some_and(|x| x.is_match(topic))
        {
            return None;
        }
        Some(match self.naming {
            Naming::Prefix => format!("{source_cluster}{}{topic}", self.separator),
            Naming::Identity => topic.to_string(),
        })
    }

    fn mirror_group(&mut self, _source_cluster: &str, group: &str) -> bool {
        !group.starts_with("__")
            && self.groups.is_match(group)
            && !self
                .groups_exclude
                .as_ref()
                .is_some_and(|x| x.is_match(group))
    }

    fn map_records(&mut self, _source_cluster: &str, batch: &Batch<'_>) -> Result<Columns> {
        let Some(drop) = &self.drop_header else {
            return Ok(batch.to_columns());
        };
        let mut out = ColumnsBuilder::new(batch.topic(), batch.partition());
        for record in batch.iter() {
            if record.header(drop).is_some() {
                continue;
            }
            out.push_record(&record);
        }
        Ok(out.build())
    }
}

register_connector!(Mirror);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::ConnectorHarness;

    #[test]
    fn prefix_naming_is_the_default() {
        let m = ConnectorHarness::<Mirror>::init(&[("topics", "orders.*")]).unwrap();
        assert_eq!(
            m.target_topic("us-east", "orders.eu").as_deref(),
            Some("us-east.orders.eu")
        );
        assert_eq!(m.target_topic("us-east", "payments"), None);
        // Anchored: a name that merely contains the pattern is not selected.
        assert_eq!(m.target_topic("us-east", "old-orders"), None);
        assert_eq!(m.target_topic("us-east", "__consumer_offsets"), None);
    }

    #[test]
    fn identity_naming_and_exclusions() {
        let m = ConnectorHarness::<Mirror>::init(&[
            ("naming", "identity"),
            ("topics.exclude", "tmp\\..*"),
            ("groups", "billing|audit"),
        ])
        .unwrap();
        assert_eq!(m.target_topic("eu", "orders").as_deref(), Some("orders"));
        assert_eq!(m.target_topic("eu", "tmp.scratch"), None);
        assert!(m.mirror_group("eu", "billing"));
        assert!(!m.mirror_group("eu", "billing-2"));
    }

    #[test]
    fn bad_config_names_the_key() {
        let e = ConnectorHarness::<Mirror>::init(&[("topics", "(")]).unwrap_err();
        assert!(e.to_string().contains("topics"), "{e}");
        let e = ConnectorHarness::<Mirror>::init(&[("naming", "mirror")]).unwrap_err();
        assert!(e.to_string().contains("prefix or identity"), "{e}");
        let e = ConnectorHarness::<Mirror>::init(&[("topic", "x")]).unwrap_err();
        assert!(e.to_string().contains("topic"), "{e}");
    }

    #[test]
    fn drop_header_filters_records() {
        let m = ConnectorHarness::<Mirror>::init(&[("drop-header", "local-only")]).unwrap();
        let mut b = ColumnsBuilder::new("orders", 0);
        b.push::<&str>(Some(b"a"), Some(b"1"), &[], 10, 5);
        b.push(Some(b"b"), Some(b"2"), &[("local-only", None)], 11, 6);
        b.push(Some(b"c"), Some(b"3"), &[("x", Some(b"y"))], 12, 7);
        let columns = b.build();
        let out = m.map_records("eu", &columns).unwrap();
        assert_eq!(out.offsets, vec![5, 7]);
    }
}

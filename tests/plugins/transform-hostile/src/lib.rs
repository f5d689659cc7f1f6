//! Hostile test plugin: a transform that misbehaves as its `behaviour` config says, so
//! the end-to-end tests can check that the host contains each case.
//!
//! | `behaviour` | what it does |
//! |---|---|
//! | `pass` | forwards every record to output 0 |
//! | `trap-every` | panics (a trap) on every input record whose `(offset + 1) % every == 0`, forwards the others |
//! | `error-every` | the same records fail with an error instead of a panic |
//! | `loop` | never returns (the call deadline must stop it) |
//! | `memory-bomb` | allocates until the memory cap stops it |
//! | `amplify` | writes `factor` copies (default 1000) of every record to output 0 |
//!
//! `behaviour` defaults to `pass`, `every` to 1000. Records are chosen by offset, so
//! `every` picks the same records on every retry, as a deterministic plugin's failures
//! would.

use quiver_plugin_sdk::prelude::*;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    #[default]
    Pass,
    TrapEvery,
    ErrorEvery,
    Loop,
    MemoryBomb,
    Amplify,
}

/// The transform.
#[derive(Debug, Default)]
pub struct Hostile {
    behaviour: Behaviour,
    every: i64,
    factor: u32,
}

impl Transform for Hostile {
    fn init(&mut self, config: &Config) -> Result<()> {
        config.check_known(&["behaviour", "every", "factor"])?;
        self.behaviour = match config.get("behaviour").unwrap_or("pass") {
            "pass" => Behaviour::Pass,
            "trap-every" => Behaviour::TrapEvery,
            "error-every" => Behaviour::ErrorEvery,
            "loop" => Behaviour::Loop,
            "memory-bomb" => Behaviour::MemoryBomb,
            "amplify" => Behaviour::Amplify,
            other => {
                return Err(ConfigError::invalid(
                    "behaviour",
                    other,
                    "expected pass, trap-every, error-every, loop, memory-bomb or amplify",
                )
                .into())
            }
        };
        self.every = config.parse_or("every", 1000)?;
        if self.every < 1 {
            let given = config.get("every").unwrap_or_default();
            return Err(ConfigError::invalid("every", given, "must be at least 1").into());
        }
        self.factor = config.parse_or("factor", 1000)?;
        Ok(())
    }

    fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
        let chosen = (record.offset() + 1) % self.every == 0;
        match self.behaviour {
            Behaviour::TrapEvery if chosen => panic!("trap-every: offset {}", record.offset()),
            Behaviour::ErrorEvery if chosen => Err(PluginError::invalid_input(format!(
                "error-every: offset {}",
                record.offset()
            ))),
            Behaviour::Pass | Behaviour::TrapEvery | Behaviour::ErrorEvery => {
                out.forward(0, record);
                Ok(())
            }
            Behaviour::Loop => loop {
                std::hint::black_box(record.offset());
            },
            Behaviour::MemoryBomb => {
                // Touch every page (a non-zero fill), so the memory is really committed
                // rather than left to a lazily zeroed mapping.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0xa5; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Behaviour::Amplify => {
                for _ in 0..self.factor {
                    out.forward(0, record);
                }
                Ok(())
            }
        }
    }
}

register_transform!(Hostile);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::{TestRecord, TransformHarness};

    fn records(n: usize) -> Vec<TestRecord> {
        (0..n)
            .map(|i| TestRecord::new().value(i.to_string()))
            .collect()
    }

    #[test]
    fn error_every_fails_the_chosen_record() {
        let h = TransformHarness::<Hostile>::with_topics(
            "in",
            &["out"],
            &[("behaviour", "error-every"), ("every", "3")],
        )
        .unwrap();
        let result = h.run(records(5)).unwrap();
        assert_eq!(result.source_offsets(), [0, 1]);
        assert_eq!(
            result.failed,
            Some((2, PluginError::invalid_input("error-every: offset 2")))
        );
    }

    #[test]
    fn amplify_writes_factor_copies() {
        let h = TransformHarness::<Hostile>::with_topics(
            "in",
            &["out"],
            &[("behaviour", "amplify"), ("factor", "3")],
        )
        .unwrap();
        assert_eq!(
            h.run(records(2)).unwrap().source_offsets(),
            [0, 0, 0, 1, 1, 1]
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |pairs: &[(&str, &str)]| {
            TransformHarness::<Hostile>::init(pairs)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("behaviour", "explode")]).contains("`behaviour`"));
        assert!(err(&[("every", "0")]).contains("`every` has invalid value \"0\""));
    }
}

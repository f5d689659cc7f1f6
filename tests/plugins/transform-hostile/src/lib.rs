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
//! | `amplify` | writes `factor` copies (default 1000) of every record |
//!
//! `every` defaults to 1000.

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
                return Err(ConfigError::invalid("behaviour", other, "unknown behaviour").into())
            }
        };
        self.every = config.parse_or("every", 1000)?;
        if self.every < 1 {
            return Err(ConfigError::invalid(
                "every",
                &self.every.to_string(),
                "must be at least 1",
            )
            .into());
        }
        self.factor = config.parse_or("factor", 1000)?;
        Ok(())
    }

    fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
        let chosen = (record.offset() + 1) % self.every == 0;
        match self.behaviour {
            Behaviour::Pass => {}
            Behaviour::TrapEvery if chosen => panic!("trap-every: offset {}", record.offset()),
            Behaviour::ErrorEvery if chosen => {
                return Err(PluginError::invalid_input(format!(
                    "error-every: offset {}",
                    record.offset()
                )))
            }
            Behaviour::TrapEvery | Behaviour::ErrorEvery => {}
            Behaviour::Loop => loop {
                std::hint::black_box(record.offset());
            },
            Behaviour::MemoryBomb => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0xa5; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Behaviour::Amplify => {
                for _ in 1..self.factor {
                    out.forward(0, record);
                }
            }
        }
        out.forward(0, record);
        Ok(())
    }
}

register_transform!(Hostile);

//! Writing metric families read at scrape time (states, and counters kept outside a
//! registry) through a collector's encoder, with labels built per sample.

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;

/// A sample's labels.
pub type Labels = Vec<(&'static str, String)>;

/// A counter read off a report: its name, its help, and how to read it.
pub type CounterOf<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Labels from `(name, value)` pairs.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Writes metric families through a collector's encoder.
#[derive(Debug)]
pub struct Families<'a>(pub DescriptorEncoder<'a>);

impl Families<'_> {
    /// A family of `kind` with one sample per `(labels, value)`, each written by `write`.
    pub fn family<V>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (Labels, V)>,
        mut write: impl FnMut(&mut MetricEncoder<'_>, &V) -> std::fmt::Result,
    ) -> std::fmt::Result {
        // Help ends with a full stop, as the registry writes its own.
        let help = if help.ends_with('.') {
            help.to_string()
        } else {
            format!("{help}.")
        };
        let mut family = self.0.encode_descriptor(name, &help, None, kind)?;
        for (labels, value) in samples {
            let mut metric = family.encode_family(&labels)?;
            write(&mut metric, &value)?;
        }
        Ok(())
    }

    /// A gauge family.
    pub fn gauge<V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, V)>,
    ) -> std::fmt::Result {
        self.family(name, help, MetricType::Gauge, samples, |m, v| {
            m.encode_gauge(v)
        })
    }

    /// A counter family (the encoder adds `_total`).
    pub fn counter<V: EncodeCounterValue>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, V)>,
    ) -> std::fmt::Result {
        self.family(name, help, MetricType::Counter, samples, |m, v| {
            m.encode_counter::<NoLabelSet, V, u64>(v, None)
        })
    }

    /// One counter family per definition, with a sample per row.
    pub fn counters<'r, T: 'r>(
        &mut self,
        definitions: &[CounterOf<T>],
        rows: impl Iterator<Item = (Labels, &'r T)> + Clone,
    ) -> std::fmt::Result {
        for (name, help, read) in definitions {
            self.counter(name, help, rows.clone().map(|(l, r)| (l, read(r))))?;
        }
        Ok(())
    }
}

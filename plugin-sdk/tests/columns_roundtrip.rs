//! Property tests of the columnar batch: whatever records go into a `ColumnsBuilder`
//! come back, field for field, from the borrowed views, through both the owned columns
//! and the native ABI description; and validation accepts exactly what the builder
//! makes.

use proptest::prelude::*;
use quiver_plugin_sdk::abi::QuiverBatch;
use quiver_plugin_sdk::columns::{Columns, ColumnsBuilder};

type Header = (Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, Clone)]
struct Owned {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<Header>,
    timestamp: i64,
    offset: i64,
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..24)
}

fn record() -> impl Strategy<Value = Owned> {
    (
        prop::option::of(bytes()),
        prop::option::of(bytes()),
        prop::collection::vec((bytes(), prop::option::of(bytes())), 0..4),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(|(key, value, headers, timestamp, offset)| Owned {
            key,
            value,
            headers,
            timestamp,
            offset,
        })
}

fn build(topic: &str, records: &[Owned]) -> Columns {
    let mut builder = ColumnsBuilder::new(topic, -1);
    for r in records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        builder.push(
            r.key.as_deref(),
            r.value.as_deref(),
            &headers,
            r.timestamp,
            r.offset,
        );
    }
    builder.build()
}

fn assert_views_match(batch: &quiver_plugin_sdk::Batch<'_>, records: &[Owned]) {
    assert_eq!(batch.len(), records.len());
    assert_eq!(batch.iter().len(), records.len());
    for (view, want) in batch.iter().zip(records) {
        assert_eq!(view.key(), want.key.as_deref());
        assert_eq!(view.value(), want.value.as_deref());
        assert_eq!(view.timestamp(), want.timestamp);
        assert_eq!(view.offset(), want.offset);
        let headers: Vec<(&[u8], Option<&[u8]>)> = view.headers().collect();
        let expected: Vec<(&[u8], Option<&[u8]>)> = want
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        assert_eq!(headers, expected);
        for (name, _) in &want.headers {
            let last = want
                .headers
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_deref());
            assert_eq!(view.header(name), last);
        }
    }
}

proptest! {
    #[test]
    fn builder_columns_and_views_round_trip(topic in "[a-z.]{1,12}", records in prop::collection::vec(record(), 0..40)) {
        let columns = build(&topic, &records);
        prop_assert!(columns.validate().is_ok());
        let batch = columns.batch().unwrap();
        prop_assert_eq!(batch.topic(), topic.as_str());
        assert_views_match(&batch, &records);
        prop_assert_eq!(&batch.to_columns(), &columns);

        let raw = QuiverBatch::from_columns(&columns);
        // SAFETY: `raw` describes `columns`, which outlives the view.
        let native = unsafe { raw.as_batch() };
        prop_assert!(native.validate().is_ok());
        assert_views_match(&native, &records);
    }

    #[test]
    fn corrupting_any_length_is_caught(records in prop::collection::vec(record(), 1..20), which in 0usize..6, delta in prop_oneof![Just(-2i32), Just(1), Just(7)]) {
        let mut columns = build("t", &records);
        let header_total = columns.header_key_lengths.len();
        let changed = match which {
            0 => { columns.key_lengths[0] = columns.key_lengths[0].max(0) + delta.max(1); true }
            1 => { columns.value_lengths[0] = if delta < 0 { -2 } else { columns.value_lengths[0].max(0) + delta }; true }
            2 => { columns.header_counts[0] += 1; true }
            3 if header_total > 0 => { columns.header_key_lengths[0] += delta.unsigned_abs(); true }
            4 => { columns.timestamps.push(0); true }
            5 => { columns.keys.push(0); true }
            _ => false,
        };
        if changed {
            prop_assert!(columns.validate().is_err(), "{columns:?}");
            // Iterating a corrupted view must still be memory-safe and panic-free.
            let raw = QuiverBatch::from_columns(&columns);
            // SAFETY: `raw` describes `columns`; the view is not trusted.
            let view = unsafe { raw.as_batch() };
            for record in view.iter() {
                let _ = (record.key(), record.value(), record.headers().count());
            }
        }
    }
}

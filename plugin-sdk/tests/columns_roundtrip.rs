//! Property tests of the columnar batch: whatever records go into a `ColumnsBuilder`
//! come back, field for field, from the borrowed views, through both the owned columns
//! and the native ABI description; and validation accepts exactly what the builder
//! makes.

use proptest::prelude::*;
use quiver_plugin_sdk::abi::QuiverBatch;
use quiver_plugin_sdk::columns::{Columns, ColumnsBuilder, NULL};

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

    /// Validation checks well-formedness, not content: moving a boundary between two
    /// fields of one record reads different bytes but is still a batch. Every corruption
    /// here leaves the columns ill-formed, and each must be caught.
    #[test]
    fn malformed_columns_are_caught(records in prop::collection::vec(record(), 1..20), which in 0usize..8, delta in 1u32..8) {
        let mut columns = build("t", &records);
        let data = columns.data.len() as u32;
        let last = columns.ends.len() - 1;
        let first = &records[0];
        let changed = match which {
            // A field running past the end of `data`.
            0 => { columns.ends[0] = data + delta; true }
            // A value ending before its key does.
            1 if first.key.as_ref().is_some_and(|k| !k.is_empty()) && first.value.is_some() => {
                columns.ends[1] = columns.ends[0] - 1;
                true
            }
            // More headers claimed than `header_ends` holds.
            2 => { columns.ends[last] += delta; true }
            // A null header key.
            3 if !columns.header_ends.is_empty() => { columns.header_ends[0] = NULL; true }
            4 => { columns.timestamps.push(0); true }
            5 => { columns.data.push(0); true }
            6 => { columns.ends.pop(); true }
            7 => { columns.header_ends.push(data); true }
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

    /// Arbitrary columns never make validation or iteration panic.
    #[test]
    fn arbitrary_columns_never_panic(
        offsets in prop::collection::vec(any::<i64>(), 0..8),
        ends in prop::collection::vec(prop_oneof![0u32..40, Just(NULL)], 0..30),
        header_ends in prop::collection::vec(prop_oneof![0u32..40, Just(NULL)], 0..12),
        data in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let columns = Columns {
            topic: "t".into(),
            partition: -1,
            timestamps: offsets.clone(),
            offsets,
            ends,
            header_ends,
            data,
        };
        let _ = columns.validate();
        let raw = QuiverBatch::from_columns(&columns);
        // SAFETY: `raw` describes `columns`, which outlives the view.
        let view = unsafe { raw.as_batch() };
        for record in view.iter() {
            let _ = (record.key(), record.value(), record.headers().count(), record.header("a"));
        }
    }
}

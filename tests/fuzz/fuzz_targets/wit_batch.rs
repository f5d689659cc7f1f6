//! The columnar record batch of the plugin SDK ([`quiver_plugin_sdk::columns`]): the
//! flat buffers a WIT `record-batch` (or a native plugin's `QuiverBatch`) carries, and
//! the views a plugin reads records and headers through.
//!
//! The input is the columns themselves: the partition, how many records, the lengths of
//! `timestamps`, `ends` and `header_ends` (which may disagree with the record count), the
//! ends (one byte each, `0xff` for null, or four bytes each, as the first byte says) and
//! the data. Validation must answer without panicking; a batch it accepts must read back
//! field by field as a contiguous walk of `data` and rebuild into identical columns; and
//! an unvalidated view (what a native plugin is handed) must iterate without panicking
//! or reading outside its buffers, whatever the columns say.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_plugin_sdk::abi::QuiverBatch;
use quiver_plugin_sdk::columns::{Batch, Columns, ColumnsBuilder, NULL};
use quiver_plugin_sdk::config::Config;
use quiver_plugin_sdk::select::Selector;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn end(&mut self, wide: bool) -> u32 {
        if wide {
            u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
        } else {
            match self.byte() {
                0xff => NULL,
                b => u32::from(b),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.byte();
    let wide = flags & 1 != 0;
    let partition = i32::from(input.byte() as i8);
    let records = usize::from(input.byte() % 32);
    // Column lengths default to what the record count implies; flags make them free.
    let timestamps = if flags & 2 != 0 {
        usize::from(input.byte() % 32)
    } else {
        records
    };
    let ends = if flags & 4 != 0 {
        usize::from(input.byte() % 100)
    } else {
        records * 3
    };
    let ends: Vec<u32> = (0..ends).map(|_| input.end(wide)).collect();
    let header_ends = if flags & 8 != 0 {
        usize::from(input.byte() % 64)
    } else {
        ends.last().map_or(0, |&n| (n as usize).min(32) * 2)
    };
    let header_ends: Vec<u32> = (0..header_ends).map(|_| input.end(wide)).collect();
    let columns = Columns {
        topic: "orders".into(),
        partition,
        offsets: (0..records as i64).collect(),
        timestamps: (0..timestamps as i64)
            .map(|t| 1_700_000_000_000 + t)
            .collect(),
        ends,
        header_ends,
        data: input.0.to_vec(),
    };

    let valid = columns.validate();
    assert_eq!(valid.is_ok(), columns.batch().is_ok());

    // What a native plugin gets: the columns, unvalidated.
    let raw = QuiverBatch::from_columns(&columns);
    // SAFETY: `raw` describes `columns`, which outlives the view.
    let view = unsafe { raw.as_batch() };
    assert_eq!(view.validate(), valid, "the native view validates the same");
    read_everything(&view);

    if valid.is_ok() {
        let batch = columns.batch().unwrap();
        check_contiguous(&batch, &columns.data);
        let mut rebuilt = ColumnsBuilder::new(batch.topic(), batch.partition());
        for record in &batch {
            let headers: Vec<(&[u8], Option<&[u8]>)> = record.headers().collect();
            rebuilt.push(
                record.key(),
                record.value(),
                &headers,
                record.timestamp(),
                record.offset(),
            );
        }
        assert_eq!(rebuilt.build(), columns, "a valid batch rebuilds as it was");
        assert_eq!(batch.to_columns(), columns);
    }
});

/// Everything a plugin can ask of a batch.
fn read_everything(batch: &Batch<'_>) {
    let selectors = [
        Selector::from_config(&Config::from_pairs([("header", "h")])).unwrap(),
        Selector::from_config(&Config::from_pairs([("field", "a.b")])).unwrap(),
    ];
    let _ = (
        batch.topic(),
        batch.partition(),
        batch.len(),
        batch.header_total(),
    );
    let mut seen = 0;
    for record in batch.iter() {
        seen += 1;
        let _ = (
            record.key(),
            record.value(),
            record.timestamp(),
            record.offset(),
        );
        assert_eq!(record.headers().count(), record.header_count());
        let _ = record.header("h");
        let _ = format!("{record:?}");
        for selector in &selectors {
            let _ = selector.select(&record);
        }
    }
    assert_eq!(seen, batch.len());
}

/// In a valid batch, keys, values and headers are consecutive slices of `data` that
/// cover it exactly.
fn check_contiguous(batch: &Batch<'_>, data: &[u8]) {
    let base = data.as_ptr() as usize;
    let mut cursor = 0usize;
    let mut follow = |field: Option<&[u8]>| {
        if let Some(field) = field {
            let start = field.as_ptr() as usize - base;
            // An empty field may point anywhere; a non-empty one starts at the cursor.
            if !field.is_empty() {
                assert_eq!(start, cursor, "a field does not start where the last ended");
            }
            cursor += field.len();
            assert!(cursor <= data.len());
        }
    };
    for record in batch.iter() {
        follow(record.key());
        follow(record.value());
        for (key, value) in record.headers() {
            follow(Some(key));
            follow(value);
        }
    }
    assert_eq!(cursor, data.len(), "the fields cover data exactly");
}

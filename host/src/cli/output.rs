//! How the CLI prints: every command that prints takes `--output table|json`, and this
//! room is the one place that decides what each looks like.
//!
//! Tables are for people: a header row, then aligned columns, numbers right-aligned,
//! an absent value shown as `-` so every row splits into the same number of words.
//! JSON is for scripts: exactly one document (an object, or for `consume` one object
//! per record per line) on stdout, with field names that stay put; nothing else goes
//! to stdout in that mode, and progress bars stay off so stderr stays clean too.
//!
//! `--json` is the older spelling of `--output json` and keeps working for the scripts
//! that use it.

use std::io::IsTerminal as _;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// The two ways a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned columns with a header, for reading.
    #[default]
    Table,
    /// One JSON document with stable field names, for scripts.
    Json,
}

/// `--output table|json` (and the older `--json`), flattened into every command that
/// prints.
#[derive(Debug, Clone, Copy, Default, Args)]
pub(crate) struct OutputArgs {
    /// How to print the result: `table` (aligned columns) or `json` (one JSON document
    /// with stable field names).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, value_name = "FORMAT")]
    output: OutputFormat,
    /// Same as `--output json`.
    #[arg(long, hide = true)]
    json: bool,
}

impl OutputArgs {
    /// The format asked for.
    pub(crate) fn format(&self) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else {
            self.output
        }
    }

    /// Whether scripts are reading.
    pub(crate) fn json(&self) -> bool {
        self.format() == OutputFormat::Json
    }

    /// For the one command whose `--output` means something else (`transform deploy`
    /// names its output topics with it): only `--json` selects JSON there.
    pub(crate) fn from_json_flag(json: bool) -> Self {
        OutputArgs {
            output: OutputFormat::Table,
            json,
        }
    }

    /// Prints `value` as pretty JSON in json mode, or runs `table` to print it for
    /// people.
    pub(crate) fn print<T: Serialize + ?Sized>(&self, value: &T, table: impl FnOnce(&T)) {
        if self.json() {
            print_json(value);
        } else {
            table(value);
        }
    }

    /// A progress bar for `len` steps that draws on stderr only when stderr is a
    /// terminal and the output is a table: piped runs and scripts reading JSON get no
    /// escape codes.
    pub(crate) fn progress(&self, len: Steps, message: &str) -> ProgressBar {
        let visible = !self.json() && std::io::stderr().is_terminal();
        let (len, template) = match len {
            Steps::Bytes(len) => (
                len,
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
            ),
            Steps::Count(len) => (len, "{msg} [{bar:30}] {human_pos}/{human_len} ({elapsed})"),
        };
        let bar = ProgressBar::with_draw_target(
            Some(len),
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        )
        .with_style(
            ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(message.to_string());
        bar
    }
}

/// What a progress bar counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Steps {
    /// Bytes, shown with units and a rate.
    Bytes(u64),
    /// Things (records, topics).
    Count(u64),
}

/// Prints one JSON document on stdout.
pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("CLI views serialise")
    );
}

/// A table: a header row and aligned columns, one space apart (the layout the
/// commands had before they shared this renderer, which scripts may parse). A column whose cells are all numbers (or
/// `-`) is right-aligned. An empty cell prints as `-`, so every row splits into the
/// same words, except in the last column, which is free text (a reason, a host) and
/// is neither filled nor padded.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new<I, S>(headers: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra ones are dropped.
    pub(crate) fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        let mut row: Vec<String> = cells.into_iter().map(|c| c.to_string()).collect();
        row.resize(self.headers.len(), String::new());
        let last = row.len().saturating_sub(1);
        for cell in &mut row[..last] {
            if cell.is_empty() {
                *cell = "-".into();
            }
        }
        self.rows.push(row);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub(crate) fn render(&self) -> String {
        let columns = self.headers.len();
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let numeric: Vec<bool> = (0..columns)
            .map(|i| {
                !self.rows.is_empty()
                    && self.rows.iter().all(|r| {
                        let c = r[i].as_str();
                        c.is_empty() || c == "-" || c.parse::<f64>().is_ok()
                    })
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push(' ');
                }
                let pad = widths[i] - cell.chars().count();
                if numeric[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < columns {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub(crate) fn print(&self) {
        print!("{}", self.render());
    }
}

/// A JSON value as a table cell: strings without quotes, null as `-`.
pub(crate) fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let mut t = Table::new(["TOPIC", "PARTITIONS", "ID"]);
        t.row(["orders", "12", "abc"]);
        t.row(["a-much-longer-name", "", "def"]);
        assert_eq!(
            t.render(),
            "TOPIC              PARTITIONS ID\n\
             orders                     12 abc\n\
             a-much-longer-name          - def\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let t = Table::new(["GROUP", "STATE"]);
        assert_eq!(t.render(), "GROUP STATE\n");
    }

    #[test]
    fn rows_take_the_header_width() {
        let mut t = Table::new(["A", "B", "C"]);
        t.row(["x"]);
        t.row(["y", "1", "2", "dropped"]);
        // The last column is free text: an empty one stays empty.
        assert_eq!(t.render(), "A B C\nx -\ny 1 2\n");
    }

    #[test]
    fn json_is_chosen_by_either_flag() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct T {
            #[command(flatten)]
            out: OutputArgs,
        }
        let parse = |args: &[&str]| T::try_parse_from(args).unwrap().out.format();
        assert_eq!(parse(&["t"]), OutputFormat::Table);
        assert_eq!(parse(&["t", "--output", "json"]), OutputFormat::Json);
        assert_eq!(parse(&["t", "--output", "table"]), OutputFormat::Table);
        assert_eq!(parse(&["t", "--json"]), OutputFormat::Json);
        assert!(T::try_parse_from(["t", "--output", "yaml"]).is_err());
    }
}

//! The one output layer of the client commands: the server's JSON as it is (`--json`), or
//! text for a person. Commands render text into a [`Text`] and never print themselves, so
//! the choice between the two, and where each line goes, is made here only.

use serde::Serialize;
use serde_json::Value;
use std::io::Write;

/// How a command prints, chosen once from `--json`.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    json: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out { json }
    }

    /// A whole answer: `value` as pretty JSON, or the text `human` renders from it.
    pub fn show<T: Serialize + ?Sized>(self, value: &T, human: impl FnOnce(&T, &mut Text)) {
        if self.json {
            self.text(|t| t.line(serde_json::to_string_pretty(value).unwrap_or_default()));
        } else {
            self.text(|t| human(value, t));
        }
    }

    /// An answer that is a list: the table of its `data` rows under `cols`.
    pub fn table(self, value: &Value, cols: &[&str]) {
        self.show(value, |v, t| t.table(rows(v), cols));
    }

    /// One item of a sequence printed as it arrives (a streamed event, a run of `logs -f`):
    /// one line of compact JSON, so that a script can read the items one by one, or text.
    /// Fails when standard output is gone, so that a follower stops with its reader.
    pub fn item(self, value: &Value, human: impl FnOnce(&Value, &mut Text)) -> std::io::Result<()> {
        let mut t = Text::default();
        if self.json {
            t.line(value.to_string());
        } else {
            human(value, &mut t);
        }
        t.write()
    }

    /// Text for a person only; nothing under `--json` (whose items said it already).
    pub fn human(self, render: impl FnOnce(&mut Text)) {
        if !self.json {
            self.text(render);
        }
    }

    /// Text in either mode: what a flag asked for instead of JSON (`invoice --csv`), and
    /// progress (`deploy`'s upload).
    pub fn text(self, render: impl FnOnce(&mut Text)) {
        let mut t = Text::default();
        render(&mut t);
        // Like `print!`, except that a closed pipe ends the output, not the process.
        let _ = t.write();
    }
}

/// Text rendered for a person: lines for standard output (the answer a script may want),
/// and notes for standard error (ids, costs, hints). Written answer first, notes after, the
/// order every command printed them in.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
    err: String,
}

impl Text {
    /// A line of the answer.
    pub fn line(&mut self, line: impl AsRef<str>) {
        self.out.push_str(line.as_ref());
        self.out.push('\n');
    }

    /// Answer text as it is, without a line end (a piece of a streamed answer).
    pub fn raw(&mut self, text: &str) {
        self.out.push_str(text);
    }

    /// A line on standard error.
    pub fn note(&mut self, line: impl AsRef<str>) {
        self.err.push_str(line.as_ref());
        self.err.push('\n');
    }

    /// `rows` as columns under upper-case headings, each as wide as its widest cell.
    pub fn table(&mut self, rows: &[Value], cols: &[&str]) {
        let mut widths: Vec<usize> = cols.iter().map(|c| c.len()).collect();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| cols.iter().map(|c| text_of(r, c)).collect())
            .collect();
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        self.line(line(cols.iter().map(|c| c.to_uppercase()).collect()));
        for row in cells {
            self.line(line(row));
        }
    }

    /// Flushed at once: a streamed answer's piece has no line end to flush it.
    fn write(self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(self.out.as_bytes())?;
            stdout.flush()?;
        }
        if !self.err.is_empty() {
            eprint!("{}", self.err);
        }
        Ok(())
    }
}

/// The `data` rows of a list answer (none if it has no such array).
pub fn rows(v: &Value) -> &[Value] {
    v["data"].as_array().map_or(&[], Vec::as_slice)
}

/// A field as text: strings as they are, `-` when absent, other values as JSON.
pub fn text_of(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `$0.000012`: a `cost_usd` number with its trailing zeros dropped (at least cents).
pub fn usd(v: &Value) -> String {
    let Some(x) = v.as_f64() else {
        return "-".to_owned();
    };
    // Costs are reported rounded to 9 decimals, so this loses nothing.
    let mut s = format!("{x:.9}");
    while s.ends_with('0') && s.split_once('.').is_some_and(|(_, d)| d.len() > 2) {
        s.pop();
    }
    format!("${s}")
}

/// `rows` with a `cost_usd` column in dollars, from the number `cost` finds in each row.
pub fn with_cost(rows: &[Value], cost: impl Fn(&Value) -> &Value) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            let mut shown = r.clone();
            shown["cost_usd"] = Value::String(usd(cost(r)));
            shown
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn costs_keep_their_digits_without_trailing_zeros() {
        assert_eq!(usd(&json!(0.000012)), "$0.000012");
        assert_eq!(usd(&json!(1.5)), "$1.50");
        assert_eq!(usd(&json!(0)), "$0.00");
        assert_eq!(usd(&json!(0.000000001)), "$0.000000001");
        assert_eq!(usd(&Value::Null), "-");
    }

    #[test]
    fn tables_align_columns_and_show_missing_fields_as_dashes() {
        let mut t = Text::default();
        t.table(
            &[json!({"id": "a", "n": 10}), json!({"id": "long-id"})],
            &["id", "n"],
        );
        assert_eq!(t.out, "ID       N\na        10\nlong-id  -\n");
        assert!(t.err.is_empty());
    }
}

//! Output formats: JSON (the default when stdout is not a terminal) or a table for people.

use serde::Serialize;
use serde_json::Value;
use std::io::{IsTerminal, Write};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Json,
    Table,
}

impl Format {
    /// The explicit choice, or json when stdout is not a terminal.
    pub(crate) fn resolve(choice: Option<Format>) -> Format {
        choice.unwrap_or(if std::io::stdout().is_terminal() { Format::Table } else { Format::Json })
    }
}

/// Prints one object.
pub(crate) fn one<T: Serialize>(format: Format, item: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(item)?)?,
        Format::Table => {
            let value = serde_json::to_value(item)?;
            let mut rows = Vec::new();
            flatten("", &value, &mut rows);
            let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in rows {
                writeln!(out, "{k:width$}  {v}")?;
            }
        }
    }
    Ok(())
}

/// Prints a list: a JSON array, or a table with `columns` (dotted paths into each item).
pub(crate) fn list<T: Serialize>(format: Format, items: &[T], columns: &[&str]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(items)?)?,
        Format::Table => {
            let values: Vec<Value> = items.iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
            let cells: Vec<Vec<String>> = values
                .iter()
                .map(|v| columns.iter().map(|c| shorten(cell(lookup(v, c)), MAX_CELL)).collect())
                .collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| cells.iter().map(|r| r[i].len()).chain([c.len()]).max().unwrap_or(0))
                .collect();
            let line = |row: Vec<String>| -> String {
                row.iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            writeln!(out, "{}", line(columns.iter().map(|c| c.to_string()).collect()))?;
            for row in cells {
                writeln!(out, "{}", line(row))?;
            }
        }
    }
    Ok(())
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// The widest a table cell gets (the JSON output has everything).
const MAX_CELL: usize = 200;

/// A value as a table shows it: control characters (escape sequences, newlines) from messages
/// or tasks are shown as `\u{..}` escapes, never sent to the terminal.
fn cell(v: Option<&Value>) -> String {
    let text = match v {
        None | Some(Value::Null) => return String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if text.chars().any(char::is_control) {
        text.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
    } else {
        text
    }
}

/// `text` cut to `max` characters, an ellipsis marking the cut.
fn shorten(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

fn flatten(prefix: &str, v: &Value, rows: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, rows);
            }
        }
        other => rows.push((prefix.to_string(), cell(Some(other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_hold_no_control_characters_and_stay_narrow() {
        let v = Value::String("\u{1b}[31mRED\nnext".into());
        assert_eq!(cell(Some(&v)), "\\u{1b}[31mRED\\u{a}next");
        let long = shorten("é".repeat(70_000), MAX_CELL);
        assert_eq!(long.chars().count(), MAX_CELL + 1);
        assert!(long.ends_with('…'));
        assert_eq!(shorten("short".into(), MAX_CELL), "short");
    }
}

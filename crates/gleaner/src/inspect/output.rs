//! Printing an answer as kubectl does: aligned columns for people, the whole answer as JSON or
//! YAML for tooling. Colour goes through `anstream` (already in the tree through clap), which
//! strips it unless stdout is a terminal and honours `NO_COLOR` / `CLICOLOR_FORCE`.

use std::io::Write;

use serde::Serialize;

use crate::{Error, Result, cli::Output};

/// Columns aligned on the widest cell, three spaces apart; the first cell of a row may carry a
/// style (the padding stays outside it, so widths count what is seen).
pub struct Table {
    header: Vec<String>,
    rows: Vec<(Vec<String>, anstyle::Style)>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|cell| (*cell).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>, first: anstyle::Style) {
        self.rows.push((cells, first));
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self
            .header
            .iter()
            .map(|cell| cell.chars().count())
            .collect();
        for (cells, _) in &self.rows {
            for (index, cell) in cells.iter().enumerate() {
                if let Some(width) = widths.get_mut(index) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String], first: anstyle::Style| {
            let mut text = String::new();
            for (index, cell) in cells.iter().enumerate() {
                let padding = widths[index].saturating_sub(cell.chars().count());
                if index == 0 {
                    text.push_str(&format!("{first}{cell}{first:#}"));
                } else {
                    text.push_str(cell);
                }
                if index + 1 < cells.len() {
                    text.push_str(&" ".repeat(padding + 3));
                }
            }
            text.push('\n');
            text
        };
        let mut out = line(&self.header, anstyle::Style::new());
        for (cells, first) in &self.rows {
            out.push_str(&line(cells, *first));
        }
        out
    }
}

/// Prints `value` as `output` asks: `table(wide)` for people, the value itself otherwise.
pub fn print<T: Serialize>(
    output: Output,
    value: &T,
    table: impl FnOnce(bool) -> String,
) -> Result<()> {
    let text = match output {
        Output::Table => table(false),
        Output::Wide => table(true),
        Output::Json => {
            let mut json = serde_json::to_string_pretty(value).map_err(|error| {
                Error::Unanswerable(format!("cannot write the answer as JSON: {error}"))
            })?;
            json.push('\n');
            json
        }
        Output::Yaml => serde_norway::to_string(value).map_err(|error| {
            Error::Unanswerable(format!("cannot write the answer as YAML: {error}"))
        })?,
    };
    let mut stdout = anstream::stdout();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|error| Error::Unanswerable(format!("cannot write to stdout: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_what_is_seen_not_on_the_colour_codes() {
        let mut table = Table::new(&["ACTION", "NAME"]);
        let red = anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Red.into()));
        table.row(vec!["delete".into(), "a".into()], red);
        table.row(vec!["keep".into(), "bb".into()], anstyle::Style::new());
        let plain: String = anstream::adapter::strip_str(&table.render()).to_string();
        assert_eq!(plain, "ACTION   NAME\ndelete   a\nkeep     bb\n");
    }
}

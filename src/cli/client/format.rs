//! How answers are laid out for people: a field as text, rows as a table.

use serde_json::Value;

/// A JSON string field as text ("-" when absent).
pub(super) fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// Rows as columns padded to their widest cell, two spaces apart (the last column unpadded).
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row.get(column).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_pads_every_column_but_the_last() {
        let rows = vec![
            vec!["".to_owned(), "ID".to_owned(), "NAMES".to_owned()],
            vec!["*".to_owned(), "abc".to_owned(), "a.test,b.test".to_owned()],
        ];
        assert_eq!(table(&rows), "   ID   NAMES\n*  abc  a.test,b.test\n");
    }
}

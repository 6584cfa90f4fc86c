//! `-o table|json|yaml`, as kubectl's read commands have it: people read the table, scripts
//! parse the JSON or YAML of the same rows.

use serde::Serialize;

/// The form of a read command's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns for people (a document, for `report`).
    #[default]
    Table,
    Json,
    Yaml,
}

/// Why the rows could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("writing YAML: {0}")]
    Yaml(#[from] serde_norway::Error),
}

/// `value` in `format`; `table` is called only for [`Format::Table`].
pub fn render<T: Serialize>(
    value: &T,
    format: Format,
    table: impl FnOnce() -> String,
) -> Result<String, OutputError> {
    Ok(match format {
        Format::Table => table(),
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        Format::Yaml => serde_norway::to_string(value)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_carries_the_same_rows() {
        let rows = vec![serde_json::json!({"policy": "shop", "asset": "db"})];
        let json = render(&rows, Format::Json, || unreachable!()).unwrap();
        let yaml = render(&rows, Format::Yaml, || unreachable!()).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap()[0]["asset"],
            "db"
        );
        assert_eq!(
            serde_norway::from_str::<serde_json::Value>(&yaml).unwrap(),
            serde_json::Value::Array(rows.clone())
        );
        assert_eq!(render(&rows, Format::Table, || "T".into()).unwrap(), "T");
    }
}

//! A table of typed columns held in memory, and its writing as one Parquet file, atomically:
//! into a hidden temporary file of the same directory, synced, renamed into place, and the
//! directory synced, so that a reader (or a restart) sees a whole file or none.
//!
//! Written with the `parquet` crate's column writers alone: the tables are flat, so Arrow's
//! arrays would only be a copy on the way (and a much longer build).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as Physical, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A signed 64-bit integer.
    Int,
    /// A moment, UTC, in microseconds since the epoch (Parquet `TIMESTAMP(MICROS, true)`).
    Timestamp,
    /// UTF-8 text.
    Text,
}

/// One column of a table: its name and kind. Every column may be null except where said.
#[derive(Debug, Clone, Copy)]
pub struct ColumnSpec {
    /// The column's name, as analysts query it.
    pub name: &'static str,
    /// What it holds.
    pub kind: Kind,
    /// Whether every row has a value.
    pub required: bool,
}

/// A column that may be null.
pub const fn optional(name: &'static str, kind: Kind) -> ColumnSpec {
    ColumnSpec {
        name,
        kind,
        required: false,
    }
}

/// A column every row fills.
pub const fn required(name: &'static str, kind: Kind) -> ColumnSpec {
    ColumnSpec {
        name,
        kind,
        required: true,
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// For `Int` and `Timestamp` (microseconds) columns.
    Int(i64),
    /// For `Text` columns.
    Text(String),
}

/// The values of one column, with a definition level per row (1 defined, 0 null).
enum Values {
    Int(Vec<i64>),
    Text(Vec<ByteArray>),
}

/// Rows of a fixed set of columns, kept column by column until written.
pub struct Table {
    specs: &'static [ColumnSpec],
    values: Vec<Values>,
    defined: Vec<Vec<i16>>,
    rows: usize,
    bytes: usize,
}

/// A row that does not fit its table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A required column was left empty.
    #[error("column {0} is required")]
    Missing(&'static str),
    /// A value of the wrong kind.
    #[error("column {0} does not take that kind of value")]
    WrongKind(&'static str),
    /// Writing the file failed.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Table {
    /// An empty table of these columns.
    pub fn new(specs: &'static [ColumnSpec]) -> Self {
        Self {
            specs,
            values: specs
                .iter()
                .map(|spec| match spec.kind {
                    Kind::Int | Kind::Timestamp => Values::Int(Vec::new()),
                    Kind::Text => Values::Text(Vec::new()),
                })
                .collect(),
            defined: specs.iter().map(|_| Vec::new()).collect(),
            rows: 0,
            bytes: 0,
        }
    }

    /// The columns.
    pub fn specs(&self) -> &'static [ColumnSpec] {
        self.specs
    }

    /// How many rows it holds.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether it holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// About how many bytes its values take (what a file is rolled by).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends a row: one cell per column, in the columns' order. A row that does not fit is
    /// refused whole, leaving the table as it was.
    pub fn push(&mut self, row: Vec<Option<Cell>>) -> Result<(), TableError> {
        for (spec, cell) in self.specs.iter().zip(&row) {
            match (spec.kind, cell) {
                (_, None) if spec.required => return Err(TableError::Missing(spec.name)),
                (Kind::Int | Kind::Timestamp, Some(Cell::Text(_)))
                | (Kind::Text, Some(Cell::Int(_))) => return Err(TableError::WrongKind(spec.name)),
                _ => {}
            }
        }
        for ((values, defined), cell) in self.values.iter_mut().zip(&mut self.defined).zip(row) {
            defined.push(i16::from(cell.is_some()));
            match (values, cell) {
                (Values::Int(values), Some(Cell::Int(value))) => {
                    self.bytes += 8;
                    values.push(value);
                }
                (Values::Text(values), Some(Cell::Text(text))) => {
                    self.bytes += text.len();
                    values.push(ByteArray::from(text.into_bytes()));
                }
                _ => {}
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// The Parquet schema of the columns.
    fn schema(&self) -> parquet::errors::Result<Type> {
        let fields = self
            .specs
            .iter()
            .map(|spec| {
                let (physical, logical) = match spec.kind {
                    Kind::Int => (Physical::INT64, None),
                    Kind::Timestamp => (
                        Physical::INT64,
                        Some(LogicalType::Timestamp {
                            is_adjusted_to_u_t_c: true,
                            unit: TimeUnit::MICROS,
                        }),
                    ),
                    Kind::Text => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
                };
                let repetition = if spec.required {
                    Repetition::REQUIRED
                } else {
                    Repetition::OPTIONAL
                };
                Type::primitive_type_builder(spec.name, physical)
                    .with_repetition(repetition)
                    .with_logical_type(logical)
                    .build()
                    .map(Arc::new)
            })
            .collect::<parquet::errors::Result<Vec<_>>>()?;
        Type::group_type_builder("event")
            .with_fields(fields)
            .build()
    }

    /// Writes the table as `dir/name`, atomically, with `metadata` as the file's key-value
    /// metadata, and empties it.
    pub fn write_atomically(
        &mut self,
        dir: &Path,
        name: &str,
        metadata: &[(&str, String)],
    ) -> Result<(), TableError> {
        let path = dir.join(name);
        let temporary = dir.join(temporary_name(name));
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| TableError::Write {
            path: path.display().to_string(),
            source,
        };
        let written = self.write_to(&temporary, metadata).map_err(failed);
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
            return written;
        }
        std::fs::rename(&temporary, &path).map_err(|error| failed(error.into()))?;
        // The rename is durable only once the directory's entry is.
        File::open(dir)
            .and_then(|directory| directory.sync_all())
            .map_err(|error| failed(error.into()))?;
        *self = Self::new(self.specs);
        Ok(())
    }

    fn write_to(
        &self,
        temporary: &Path,
        metadata: &[(&str, String)],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_max_row_group_size(self.rows.max(1))
            .set_key_value_metadata(Some(
                metadata
                    .iter()
                    .map(|(key, value)| KeyValue::new((*key).to_owned(), value.clone()))
                    .collect(),
            ))
            .build();
        let file = File::create(temporary)?;
        let mut writer = SerializedFileWriter::new(
            BufWriter::new(file),
            Arc::new(self.schema()?),
            Arc::new(properties),
        )?;
        let mut group = writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut column) = group.next_column()? {
            let defined = &self.defined[index];
            let levels = (!self.specs[index].required).then_some(defined.as_slice());
            match &self.values[index] {
                Values::Int(values) => {
                    column
                        .typed::<Int64Type>()
                        .write_batch(values, levels, None)?;
                }
                Values::Text(values) => {
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(values, levels, None)?;
                }
            }
            column.close()?;
            index += 1;
        }
        group.close()?;
        let file = writer.into_inner()?.into_inner()?;
        file.sync_all()?;
        Ok(())
    }
}

/// The hidden name a file is written under before it is renamed into place (no reader's
/// `*.parquet` pattern matches it).
pub fn temporary_name(name: &str) -> String {
    format!(".{name}.tmp")
}

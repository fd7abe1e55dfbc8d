//! The CSV of enti (pure): a header row naming the columns, then one ente per row, each
//! with the line it starts on so that refusals can point at it.
//!
//! Owns the column names and how a cell becomes a field of an [`Ente`]; it checks only
//! the shape of the file. Whether the values are acceptable is [`super::tenant`]'s job.

use super::ente::Ente;

/// The columns, in the order the documentation and the example use.
pub const COLUMNS: [&str; 8] = [
    "name",
    "displayName",
    "entityType",
    "istatCode",
    "ipaCode",
    "tier",
    "adminGroups",
    "adminUsers",
];

/// Columns the header row must have; the others may be left out.
pub const REQUIRED_COLUMNS: [&str; 3] = ["name", "displayName", "entityType"];

/// Separates several admin groups or users in one cell. Not `,`, which separates cells.
pub const LIST_SEPARATOR: char = ';';

/// A problem with the file as a whole: nothing in it can be trusted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the CSV")]
    Read(#[source] csv::Error),
    #[error(
        "the header row is one column {0:?}: the file seems to use ';' between columns; \
         save it as comma-separated CSV (in LibreOffice: field delimiter ',')"
    )]
    SemicolonDelimited(String),
    #[error(
        "the header row has no column {:?}: the first row must name the columns, at least {}",
        .0,
        REQUIRED_COLUMNS.join(", ")
    )]
    MissingColumn(&'static str),
    #[error("the header row has an unknown column {:?}: the columns are {}", .0, COLUMNS.join(", "))]
    UnknownColumn(String),
    #[error("the header row names the column {0:?} twice")]
    DuplicateColumn(String),
}

/// A row whose shape is wrong, so that its values cannot be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RowError {
    #[error(
        "the row has {found} cells where the header row has {expected}: quote values that \
         contain a comma, e.g. \"Unione dei Comuni Garfagnana, Lucca\""
    )]
    CellCount { found: u64, expected: u64 },
    #[error("the row is not valid UTF-8: save the file as UTF-8 CSV")]
    Utf8,
}

/// One ente and the line its row starts on (the header row is line 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub line: u64,
    pub ente: Ente,
}

/// A row that cannot be read: its line and why.
pub type BadLine = (u64, RowError);

/// Every row of `input`: the ente, or why its row cannot be read. Blank rows and rows of
/// empty cells are skipped. Fails as a whole only when the file cannot be read or its
/// header row is wrong.
pub fn read(input: &[u8]) -> Result<Vec<Result<Row, BadLine>>, Error> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = reader.headers().map_err(Error::Read)?.clone();
    let columns = columns(&header)?;
    let mut rows = Vec::new();
    for record in reader.records() {
        match record {
            // Spreadsheets export rows they once formatted as ",,,,": not an ente.
            Ok(record) if record.iter().all(str::is_empty) => {}
            Ok(record) => {
                let line = start_line(input, record.position());
                let cell = |column: &str| {
                    columns
                        .iter()
                        .position(|name| *name == column)
                        .and_then(|index| record.get(index))
                        .unwrap_or_default()
                };
                let optional = |column: &str| Some(cell(column).to_string());
                let list = |column: &str| {
                    cell(column)
                        .split(LIST_SEPARATOR)
                        .map(str::to_string)
                        .collect()
                };
                rows.push(Ok(Row {
                    line,
                    ente: Ente {
                        name: cell("name").to_string(),
                        display_name: cell("displayName").to_string(),
                        entity_type: cell("entityType").to_string(),
                        istat_code: optional("istatCode"),
                        ipa_code: optional("ipaCode"),
                        tier: optional("tier"),
                        admin_groups: list("adminGroups"),
                        admin_users: list("adminUsers"),
                    },
                }));
            }
            Err(error) => {
                let line = start_line(input, error.position());
                let problem = match error.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => RowError::CellCount {
                        found: *len,
                        expected: *expected_len,
                    },
                    csv::ErrorKind::Utf8 { .. } => RowError::Utf8,
                    // An I/O error: the rest of the file is out of reach.
                    _ => return Err(Error::Read(error)),
                };
                rows.push(Err((line, problem)));
            }
        }
    }
    Ok(rows)
}

/// The line a record starts on. csv's position is where the previous record ended, so
/// the blank lines it skipped before this record, and the `\n` of a `\r\n` that ended
/// the previous one, are not counted in it yet.
fn start_line(input: &[u8], position: Option<&csv::Position>) -> u64 {
    let Some(position) = position else { return 0 };
    let skipped = input
        .get(usize::try_from(position.byte()).unwrap_or(usize::MAX)..)
        .unwrap_or_default()
        .iter()
        .take_while(|byte| matches!(byte, b'\r' | b'\n'))
        .filter(|byte| **byte == b'\n')
        .count();
    position.line() + skipped as u64
}

/// The header's column names, checked against [`COLUMNS`].
fn columns(header: &csv::StringRecord) -> Result<Vec<&'static str>, Error> {
    if header.len() == 1 && header[0].contains(';') {
        return Err(Error::SemicolonDelimited(header[0].to_string()));
    }
    let mut found: Vec<&'static str> = Vec::new();
    for name in header {
        let column = COLUMNS
            .into_iter()
            .find(|column| *column == name)
            .ok_or_else(|| Error::UnknownColumn(name.to_string()))?;
        if found.contains(&column) {
            return Err(Error::DuplicateColumn(name.to_string()));
        }
        found.push(column);
    }
    match REQUIRED_COLUMNS
        .into_iter()
        .find(|required| !found.contains(required))
    {
        Some(missing) => Err(Error::MissingColumn(missing)),
        None => Ok(found),
    }
}

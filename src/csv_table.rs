//! Every CSV file the project reads or writes (`metrics.csv`, `ablation.csv`, `crops.csv`,
//! `write_csv`, COCO stats) goes through the `csv` crate: RFC 4180 quoting, so a field with a
//! comma, quote or newline reads back as it was written. Errors name the file and the line.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A CSV file read back: the header and every record as text.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvTable {
    pub header: Vec<String>,
    /// `(line number, fields)` of each record (1-based, as editors show them).
    pub records: Vec<(u64, Vec<String>)>,
}

impl CsvTable {
    /// The index of a column.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|c| c == name)
    }
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map(|p| format!("line {}: ", p.line()));
    Error::format(path.display(), format!("{}{e}", line.unwrap_or_default()))
}

/// The text of a CSV file: a header row and rows of fields.
pub fn csv_string<S: AsRef<str>>(header: &[S], rows: &[Vec<String>]) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| Error::Msg(format!("csv: {e}"));
    w.write_record(header.iter().map(|h| h.as_ref()))
        .map_err(err)?;
    for r in rows {
        w.write_record(r).map_err(err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Msg(format!("csv: {e}")))?;
    String::from_utf8(bytes).map_err(|e| Error::Msg(format!("csv: {e}")))
}

/// Parse CSV text with a header row (`source` names it in errors). Every record must have the
/// header's number of fields.
pub fn parse_csv(text: &str, source: &Path) -> Result<CsvTable> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(source, e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.iter().all(|h| h.is_empty()) {
        return Err(Error::format(
            source.display(),
            "empty file: expected a header row",
        ));
    }
    let mut records = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(source, e))?;
        let line = record.position().map_or(0, |p| p.line());
        records.push((line, record.iter().map(str::to_string).collect()));
    }
    Ok(CsvTable { header, records })
}

/// Read a CSV file with a header row.
pub fn read_csv(path: &Path) -> Result<CsvTable> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_csv(&text, path)
}

/// The text of a file grown by [`CsvAppender`] split into its complete lines and what follows
/// the last newline: a row a killed writer left unfinished (None when the text ends with a
/// newline, as every complete row does).
pub fn split_unterminated(text: &str) -> (&str, Option<&str>) {
    if text.is_empty() || text.ends_with('\n') {
        return (text, None);
    }
    match text.rfind('\n') {
        Some(i) => (&text[..=i], Some(&text[i + 1..])),
        None => ("", Some(text)),
    }
}

/// A CSV file that grows by one flushed row at a time. A killed process loses at most the row
/// being written: a new file gets its header atomically, and opening a file whose last row was
/// cut short removes that unfinished row (with a warning) so the next row starts on a line of
/// its own.
#[derive(Debug)]
pub struct CsvAppender {
    path: PathBuf,
    writer: csv::Writer<File>,
    columns: usize,
}

impl CsvAppender {
    /// Append to `path`, whose header (already written, or written now when the file is new)
    /// has `columns` fields.
    pub fn open<S: AsRef<str>>(path: &Path, header: &[S]) -> Result<Self> {
        if path.exists() {
            drop_unterminated_row(path)?;
        } else {
            let text = csv_string(header, &[])?;
            crate::atomic_file::write_atomic(path, text.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(CsvAppender {
            path: path.to_path_buf(),
            writer: csv::Writer::from_writer(file),
            columns: header.len(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write one row and flush it.
    pub fn append(&mut self, fields: &[String]) -> Result<()> {
        if fields.len() != self.columns {
            return Err(Error::InvalidArgument(format!(
                "{}: a row of {} fields for {} columns",
                self.path.display(),
                fields.len(),
                self.columns
            )));
        }
        self.writer
            .write_record(fields)
            .map_err(|e| csv_error(&self.path, e))?;
        self.writer.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Cut an unfinished last row (see [`split_unterminated`]) off `path`, saying so on stderr.
fn drop_unterminated_row(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let (complete, Some(partial)) = split_unterminated(&text) else {
        return Ok(());
    };
    if complete.is_empty() {
        return Err(Error::format(
            path.display(),
            "holds no complete header row (a writer stopped while creating it?): remove the file",
        ));
    }
    eprintln!(
        "warning: {}: removing an unfinished last row `{partial}` (a writer stopped mid-row)",
        path.display()
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.set_len(complete.len() as u64)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

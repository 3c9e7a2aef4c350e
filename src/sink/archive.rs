//! The local Parquet archive: everything that would go to InfluxDB (raw
//! readings, windows, AQI, alerts, quarantine), as Parquet files analysts
//! open directly (polars, pandas, DuckDB):
//!
//! ```text
//! <dir>/<measurement>/date=<YYYY-MM-DD>/<unix ms>-<pid>-<seq>.parquet
//! <dir>/<measurement>/date=<YYYY-MM-DD>/<YYYY-MM-DD>.parquet   (compacted)
//! ```
//!
//! Columns: `time` (datetime, ms, UTC), one string column per tag, one
//! column per field (float, integer, boolean or string). Files are
//! Hive-partitioned by **local** date (`windows.timezone`, Beijing's by
//! default: the days reports and daily windows use), e.g. in Python
//! `pl.scan_parquet("archive/air/**/*.parquet")`.
//!
//! It takes the rows every stage hands to the sinks (`row::Row`) and builds
//! its columns from them; each batch becomes new files, synced (tmp +
//! fsync + rename) before the call returns: the spool counts a batch
//! delivered only once it is on disk. Once a day is over, [`Archive::compact`]
//! merges its files into one, sorted by time; a late reading for that day
//! adds a file the next pass merges again. A compaction is journalled, so a
//! crash at any step neither loses nor doubles rows, and readers skip the
//! files a finished merge already holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use polars::prelude::*;

use crate::calendar::Calendar;
use crate::row::{Row, Value};

/// One column being built.
enum Col {
    F(Vec<Option<f64>>),
    I(Vec<Option<i64>>),
    B(Vec<Option<bool>>),
    S(Vec<Option<String>>),
}

impl Col {
    fn len(&self) -> usize {
        match self {
            Col::F(v) => v.len(),
            Col::I(v) => v.len(),
            Col::B(v) => v.len(),
            Col::S(v) => v.len(),
        }
    }

    /// Nulls up to `n` values (never shorter).
    fn pad(&mut self, n: usize) {
        let n = n.max(self.len());
        match self {
            Col::F(v) => v.resize(n, None),
            Col::I(v) => v.resize(n, None),
            Col::B(v) => v.resize(n, None),
            Col::S(v) => v.resize(n, None),
        }
    }

    fn to_strings(&self) -> Vec<Option<String>> {
        match self {
            Col::F(v) => v.iter().map(|x| x.map(|x| x.to_string())).collect(),
            Col::I(v) => v.iter().map(|x| x.map(|x| x.to_string())).collect(),
            Col::B(v) => v.iter().map(|x| x.map(|x| x.to_string())).collect(),
            Col::S(v) => v.clone(),
        }
    }

    /// Appends a value, widening the column where the types differ
    /// (integer → float, anything → string).
    fn push(&mut self, v: Value) {
        match (&mut *self, v) {
            (Col::F(c), Value::F(x)) => c.push(Some(x)),
            (Col::F(c), Value::I(x)) => c.push(Some(x as f64)),
            (Col::I(c), Value::I(x)) => c.push(Some(x)),
            (Col::I(c), Value::F(x)) => {
                let mut f: Vec<Option<f64>> = c.iter().map(|x| x.map(|x| x as f64)).collect();
                f.push(Some(x));
                *self = Col::F(f);
            }
            (Col::B(c), Value::B(x)) => c.push(Some(x)),
            (Col::S(c), v) => c.push(Some(text(&v))),
            (_, v) => {
                let mut s = self.to_strings();
                s.push(Some(text(&v)));
                *self = Col::S(s);
            }
        }
    }

    /// The column, padded with nulls to `n` rows.
    fn series(&self, name: &str, n: usize) -> Column {
        let name = PlSmallStr::from(name);
        let column = match self {
            Col::F(v) => Column::new(name, v),
            Col::I(v) => Column::new(name, v),
            Col::B(v) => Column::new(name, v),
            Col::S(v) => Column::new(name, v),
        };
        let missing = n.saturating_sub(self.len());
        if missing == 0 {
            return column;
        }
        let dtype = column.dtype().clone();
        let nulls = Column::full_null(column.name().clone(), missing, &dtype);
        let mut column = column;
        // Same name and type: appending cannot fail.
        let _ = column.append(&nulls);
        column
    }
}

/// A value's text, where a column of mixed types becomes a string.
fn text(v: &Value) -> String {
    match v {
        Value::F(x) => x.to_string(),
        Value::I(x) => x.to_string(),
        Value::B(x) => x.to_string(),
        Value::S(x) => x.clone(),
    }
}

/// Rows of one measurement and date.
#[derive(Default)]
struct Table {
    time_ms: Vec<i64>,
    cols: BTreeMap<String, Col>,
}

impl Table {
    fn push<'r>(&mut self, time_ms: i64, values: impl Iterator<Item = (&'r str, Value)>) {
        let row = self.time_ms.len();
        self.time_ms.push(time_ms);
        for (name, v) in values {
            if name.is_empty() || matches!(v, Value::F(f) if !f.is_finite()) {
                continue; // as InfluxDB gets it
            }
            let col = match self.cols.get_mut(name) {
                Some(c) => c,
                None => self.cols.entry(name.to_owned()).or_insert(match v {
                    Value::F(_) => Col::F(Vec::new()),
                    Value::I(_) => Col::I(Vec::new()),
                    Value::B(_) => Col::B(Vec::new()),
                    Value::S(_) => Col::S(Vec::new()),
                }),
            };
            col.pad(row);
            if col.len() > row {
                continue; // a second value of one name in a row: the first (a tag) stays
            }
            col.push(v);
        }
    }

    /// One row's tags (empty values left out, as InfluxDB gets them) and
    /// fields.
    fn push_row(&mut self, time_ms: i64, row: &Row) {
        fn tags(t: &[(String, String)]) -> impl Iterator<Item = (&str, Value)> {
            t.iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.as_str(), Value::S(v.clone())))
        }
        match row {
            Row::Reading(p) => {
                let fields = p.fields.iter().map(|(k, v)| (k.as_str(), Value::F(*v)));
                self.push(time_ms, tags(&p.tags).chain(fields));
            }
            Row::Derived(d) => {
                let fields = d.fields.iter().map(|(k, v)| (k.as_str(), v.clone()));
                self.push(time_ms, tags(&d.tags).chain(fields));
            }
            Row::Quarantined(q) => {
                let values = [
                    ("reason", Value::S(q.reason.as_str().into())),
                    ("topic", Value::S(q.topic.clone())),
                    ("detail", Value::S(q.detail.clone())),
                    (
                        "payload",
                        Value::S(String::from_utf8_lossy(&q.sample).into_owned()),
                    ),
                    ("payload_bytes", Value::I(q.payload_bytes as i64)),
                ];
                self.push(time_ms, values.into_iter());
            }
        }
    }

    fn frame(&self) -> PolarsResult<DataFrame> {
        let n = self.time_ms.len();
        let mut cols =
            vec![
                Column::new("time".into(), &self.time_ms).cast(&DataType::Datetime(
                    TimeUnit::Milliseconds,
                    Some(TimeZone::UTC),
                ))?,
            ];
        for (name, c) in &self.cols {
            if name == "time" {
                continue; // reserved (line protocol cannot carry it either)
            }
            cols.push(c.series(name, n));
        }
        DataFrame::new(n, cols)
    }
}

pub struct Archive {
    dir: PathBuf,
    /// Partitions are this calendar's dates.
    cal: Calendar,
    seq: AtomicU64,
}

/// A compaction in progress: the merged file before it takes its name.
const MERGING: &str = "compacting.partial";
/// A compaction's journal: the merged file's name, then its inputs, one per
/// line. Present from before the merged file is renamed into place until
/// every input is deleted.
const JOURNAL: &str = "compaction.journal";

use crate::units::safe_name as safe;

/// The archive's date partitions: (date, directory), in no order.
fn partitions(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for m in std::fs::read_dir(dir)?.flatten() {
        let Ok(days) = std::fs::read_dir(m.path()) else {
            continue;
        };
        for d in days.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if let Some(date) = name.strip_prefix("date=") {
                out.push((date.to_owned(), d.path()));
            }
        }
    }
    Ok(out)
}

impl Archive {
    /// The archive in `dir` (created), partitioned by dates in `tz`.
    pub fn open(dir: &Path, tz: chrono_tz::Tz) -> std::io::Result<Archive> {
        std::fs::create_dir_all(dir)?;
        Ok(Archive {
            dir: dir.to_owned(),
            cal: Calendar { tz },
            seq: AtomicU64::new(0),
        })
    }

    /// Rows at their times (nanoseconds, as the sinks stamped them),
    /// arranged as this archive's tables: one per measurement and local
    /// date.
    pub fn batch<'r>(&self, rows: impl Iterator<Item = (&'r Row, i64)>) -> Batch {
        let mut batch = Batch::default();
        for (row, time_ns) in rows {
            let ms = time_ns.div_euclid(1_000_000);
            batch
                .tables
                .entry((row.measurement().to_owned(), self.cal.date(ms)))
                .or_default()
                .push_row(ms, row);
        }
        batch
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a batch as Parquet files, synced. Returns the rows written.
    pub fn write(&self, batch: &Batch) -> Result<usize, WriteError> {
        let mut rows = 0;
        for ((measurement, date), table) in &batch.tables {
            rows += table.time_ms.len();
            let dir = self
                .dir
                .join(safe(measurement))
                .join(format!("date={date}"));
            let failed = |e: &dyn std::fmt::Display| WriteError(format!("{}: {e}", dir.display()));
            std::fs::create_dir_all(&dir).map_err(|e| failed(&e))?;
            let name = format!(
                "{}-{}-{}.parquet",
                chrono::Utc::now().timestamp_millis(),
                std::process::id(),
                self.seq.fetch_add(1, Relaxed)
            );
            let mut df = table.frame().map_err(|e| failed(&e))?;
            let mut buf = Vec::new();
            ParquetWriter::new(&mut buf)
                .with_compression(ParquetCompression::Snappy)
                .finish(&mut df)
                .map_err(|e| failed(&e))?;
            crate::durable::write_atomically(&dir.join(name), &buf).map_err(|e| failed(&e))?;
        }
        Ok(rows)
    }
}

/// What a retention pass removed, and what is left.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Date partitions deleted.
    pub partitions: usize,
    pub freed_bytes: u64,
    pub bytes: u64,
}

impl Archive {
    /// Retention: deletes the date partitions older than `max_age_ms`
    /// before `now_ms` (None: no age bound), then the oldest dates (every
    /// measurement's) until the archive holds at most `max_bytes` (None: no
    /// bound). The newest date is never deleted for size.
    pub fn prune(
        &self,
        now_ms: i64,
        max_age_ms: Option<i64>,
        max_bytes: Option<u64>,
    ) -> std::io::Result<Pruned> {
        // (date, partition dir, bytes), oldest first.
        let mut parts: Vec<(String, PathBuf, u64)> = Vec::new();
        for (date, dir) in partitions(&self.dir)? {
            let bytes = std::fs::read_dir(&dir)
                .map(|fs| {
                    fs.flatten()
                        .filter_map(|f| f.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0);
            parts.push((date, dir, bytes));
        }
        parts.sort();
        let mut out = Pruned {
            bytes: parts.iter().map(|p| p.2).sum(),
            ..Pruned::default()
        };
        let cutoff = max_age_ms.map(|age| self.cal.date(now_ms.saturating_sub(age)));
        let newest = parts.last().map(|p| p.0.clone());
        for (date, dir, bytes) in &parts {
            let too_old = cutoff.as_ref().is_some_and(|c| date < c);
            let too_big =
                max_bytes.is_some_and(|max| out.bytes > max) && Some(date) != newest.as_ref();
            if !(too_old || too_big) {
                continue;
            }
            std::fs::remove_dir_all(dir)?;
            out.partitions += 1;
            out.freed_bytes += bytes;
            out.bytes -= bytes;
        }
        Ok(out)
    }
}

/// What a compaction pass merged.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Date partitions now one file.
    pub partitions: usize,
    /// Files merged into them.
    pub files: usize,
}

impl Archive {
    /// Merges the files of every day before today (local) into one file
    /// per partition, `<date>.parquet`, rows sorted by time. Steps, each
    /// durable before the next: the merged file is written as
    /// `compacting.partial`; a journal names it and its inputs; it is
    /// renamed to `<date>.parquet` (replacing an earlier merge, itself an
    /// input); the other inputs are deleted; the journal goes. A crash
    /// between any two steps is finished (or undone, before the journal)
    /// by the next pass, and readers ([`read_measurement_between`]) skip
    /// the inputs of a journalled merge whose file is in place.
    pub fn compact(&self, now_ms: i64) -> Result<Compacted, WriteError> {
        let today = self.cal.date(now_ms);
        let mut out = Compacted::default();
        let failed =
            |p: &Path, e: &dyn std::fmt::Display| WriteError(format!("{}: {e}", p.display()));
        for (date, dir) in partitions(&self.dir).map_err(|e| failed(&self.dir, &e))? {
            finish_compaction(&dir).map_err(|e| failed(&dir, &e))?;
            if date >= today {
                continue;
            }
            let files = parquet_files(&dir).map_err(|e| failed(&dir, &e))?;
            if files.len() < 2 {
                continue;
            }
            prepare_merge(&dir, &date, &files).map_err(|e| failed(&dir, &e))?;
            finish_compaction(&dir).map_err(|e| failed(&dir, &e))?;
            out.partitions += 1;
            out.files += files.len();
        }
        Ok(out)
    }
}

/// The Parquet files of one partition, by name.
fn parquet_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    Ok(files)
}

/// The first steps of merging `files` (all in `dir`) into
/// `<date>.parquet`: the merged file as `compacting.partial`, then the
/// journal ([`finish_compaction`] does the rest).
fn prepare_merge(dir: &Path, date: &str, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut frames = Vec::with_capacity(files.len());
    for f in files {
        frames.push(ParquetReader::new(std::fs::File::open(f)?).finish()?);
    }
    // A batch the spool replayed after a crash is in the archive twice
    // (InfluxDB overwrote its points; files only add): identical rows
    // are one.
    let mut df = diagonal(frames)?
        .sort(
            ["time"],
            SortMultipleOptions::default().with_maintain_order(true),
        )?
        .unique_stable(None, UniqueKeepStrategy::First, None)?;
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .with_compression(ParquetCompression::Snappy)
        .finish(&mut df)?;
    crate::durable::write_atomically(&dir.join(MERGING), &buf)?;
    let output = format!("{date}.parquet");
    let mut journal = output.clone();
    for f in files {
        journal.push('\n');
        journal.push_str(&f.file_name().unwrap_or_default().to_string_lossy());
    }
    crate::durable::write_atomically(&dir.join(JOURNAL), journal.as_bytes())?;
    Ok(())
}

/// A journalled compaction in `dir`, finished: the merged file put in
/// place, its other inputs deleted, the journal removed. Without a
/// journal, a merged file left by a crash is deleted (its inputs are all
/// still there).
fn finish_compaction(dir: &Path) -> std::io::Result<()> {
    let merging = dir.join(MERGING);
    let Some((output, inputs)) = journal(dir)? else {
        if merging.exists() {
            std::fs::remove_file(&merging)?;
        }
        return Ok(());
    };
    if merging.exists() {
        std::fs::rename(&merging, dir.join(&output))?;
        crate::durable::sync_dir(dir);
    }
    for input in inputs.iter().filter(|i| **i != output) {
        match std::fs::remove_file(dir.join(input)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    crate::durable::sync_dir(dir);
    std::fs::remove_file(dir.join(JOURNAL))?;
    crate::durable::sync_dir(dir);
    Ok(())
}

/// A partition's compaction journal: the merged file's name and its inputs.
fn journal(dir: &Path) -> std::io::Result<Option<(String, Vec<String>)>> {
    let text = match std::fs::read_to_string(dir.join(JOURNAL)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines = text.lines().map(str::to_owned);
    let output = lines.next().unwrap_or_default();
    Ok(Some((output, lines.collect())))
}

/// The files of a partition a reader takes: every Parquet file, less the
/// inputs of a finished merge whose deletion is still to come.
fn readable_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = parquet_files(dir)?;
    if let Some((output, inputs)) = journal(dir)?
        && !dir.join(MERGING).exists()
    {
        files.retain(|f| {
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            name == output.as_str() || !inputs.iter().any(|i| *i == name)
        });
    }
    Ok(files)
}

/// Rows arranged as the archive's tables: one per measurement and local
/// date ([`Archive::batch`]).
#[derive(Default)]
pub struct Batch {
    tables: BTreeMap<(String, String), Table>,
}

/// The files could not be written (a full disk, say): worth a retry.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WriteError(String);

/// Reads every Parquet file of a measurement (all dates) into one frame
/// (columns missing in some files are null there).
pub fn read_measurement(dir: &Path, measurement: &str) -> PolarsResult<Option<DataFrame>> {
    read_measurement_between(dir, measurement, i64::MIN, i64::MAX)
}

/// [`read_measurement`], reading only the date partitions that can hold
/// times in [from_ms, to_ms) (rows are not filtered here). Partitions are
/// local dates in a zone this reader need not know: it takes one day more
/// on each side (no zone is a day away from UTC).
pub fn read_measurement_between(
    dir: &Path,
    measurement: &str,
    from_ms: i64,
    to_ms: i64,
) -> PolarsResult<Option<DataFrame>> {
    const DAY: i64 = 86_400_000;
    let date = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("date=%Y-%m-%d").to_string())
    };
    let first = date(from_ms.saturating_sub(DAY));
    let last = date(to_ms.saturating_sub(1).saturating_add(DAY));
    let root = dir.join(safe(measurement));
    let Ok(days) = std::fs::read_dir(&root) else {
        return Ok(None);
    };
    let mut frames = Vec::new();
    let mut days: Vec<_> = days.flatten().map(|d| d.path()).collect();
    days.sort();
    for day in days {
        let name = day.file_name().unwrap_or_default().to_string_lossy();
        // `date=YYYY-MM-DD` sorts as text in date order.
        if first.as_ref().is_some_and(|f| *name < **f) || last.as_ref().is_some_and(|l| *name > **l)
        {
            continue;
        }
        frames.extend(read_partition(&day)?);
    }
    if frames.is_empty() {
        return Ok(None);
    }
    Ok(Some(diagonal(frames)?))
}

/// One partition's frames. A compaction running meanwhile (in this or
/// another process) can delete a listed file: the partition is then read
/// again, from its new listing.
fn read_partition(dir: &Path) -> PolarsResult<Vec<DataFrame>> {
    let mut attempt = 0;
    'again: loop {
        attempt += 1;
        let Ok(files) = readable_files(dir) else {
            return Ok(Vec::new());
        };
        let mut frames = Vec::with_capacity(files.len());
        for f in files {
            match std::fs::File::open(&f) {
                Ok(file) => frames.push(ParquetReader::new(file).finish()?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 10 => {
                    continue 'again;
                }
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(frames);
    }
}

/// Stacks frames whose columns differ: the union of columns, nulls where a
/// frame lacks one.
pub fn diagonal(frames: Vec<DataFrame>) -> PolarsResult<DataFrame> {
    let mut names: Vec<(PlSmallStr, DataType)> = Vec::new();
    for f in &frames {
        for c in f.columns() {
            match names.iter_mut().find(|(n, _)| n == c.name()) {
                None => names.push((c.name().clone(), c.dtype().clone())),
                Some((_, t)) if t != c.dtype() => {
                    // Mixed types across files: widen to float or string.
                    let numeric = t.is_primitive_numeric() && c.dtype().is_primitive_numeric();
                    *t = if numeric {
                        DataType::Float64
                    } else {
                        DataType::String
                    };
                }
                Some(_) => {}
            }
        }
    }
    let mut out: Option<DataFrame> = None;
    for f in frames {
        let h = f.height();
        let cols: Vec<Column> = names
            .iter()
            .map(|(n, t)| match f.column(n.as_str()) {
                Ok(c) => c.cast(t),
                Err(_) => Ok(Column::full_null(n.clone(), h, t)),
            })
            .collect::<PolarsResult<_>>()?;
        let df = DataFrame::new(h, cols)?;
        match &mut out {
            None => out = Some(df),
            Some(o) => {
                o.vstack_mut(&df)?;
            }
        }
    }
    Ok(out.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{Derived, Value as V};

    fn row(m: &str, tags: &[(&str, &str)], fields: Vec<(&str, V)>, time_ms: i64) -> Row {
        let fields = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        Row::Derived(Derived::new(m, tags.iter().copied(), fields, time_ms))
    }

    fn write(a: &Archive, rows: &[Row]) -> Result<usize, WriteError> {
        let at = |r: &Row| match r {
            Row::Derived(d) => d.time_ms * 1_000_000,
            _ => unreachable!(),
        };
        a.write(&a.batch(rows.iter().map(|r| (r, at(r)))))
    }

    #[test]
    fn rows_become_parquet_with_tags_fields_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open(dir.path(), chrono_tz::Asia::Shanghai).unwrap();
        let t0 = 1_767_542_400_000; // 2026-01-04T16:00Z
        let rows = [
            row(
                "air",
                &[("sensor", "a1"), ("site", "dongsi")],
                vec![("pm25", V::F(35.5)), ("pm10", V::F(80.0))],
                t0,
            ),
            row(
                "air",
                &[("sensor", "a2"), ("site", "tiantan")],
                vec![("pm25", V::I(40)), ("ok", V::B(true))],
                t0 + 60_000,
            ),
            row(
                "aqi",
                &[("site", "dongsi")],
                vec![("aqi", V::I(51)), ("category", V::S("good".into()))],
                t0,
            ),
        ];
        assert_eq!(write(&a, &rows), Ok(3));
        let air = read_measurement(dir.path(), "air").unwrap().unwrap();
        assert_eq!(air.height(), 2);
        let pm25 = air.column("pm25").unwrap().f64().unwrap();
        assert_eq!(pm25.get(0), Some(35.5));
        assert_eq!(pm25.get(1), Some(40.0), "integer widened to float");
        assert_eq!(air.column("pm10").unwrap().f64().unwrap().get(1), None);
        let site = air.column("site").unwrap();
        assert_eq!(site.str().unwrap().get(1), Some("tiantan"));
        let time = air.column("time").unwrap();
        assert_eq!(
            time.dtype(),
            &DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC))
        );
        assert_eq!(
            time.cast(&DataType::Int64).unwrap().i64().unwrap().get(1),
            Some(t0 + 60_000)
        );
        // A second batch with another column stacks under the first.
        let more = row("air", &[("sensor", "a3")], vec![("no2", V::F(20.0))], t0);
        write(&a, &[more]).unwrap();
        let air = read_measurement(dir.path(), "air").unwrap().unwrap();
        assert_eq!(air.height(), 3);
        // What InfluxDB would not get is not archived either: empty tag
        // values and non-finite numbers.
        let odd = row(
            "dust",
            &[("site", "s1"), ("sensor", "")],
            vec![("pm10", V::F(80.0)), ("tsp", V::F(f64::NAN))],
            t0,
        );
        assert_eq!(write(&a, &[odd]), Ok(1));
        let dust = read_measurement(dir.path(), "dust").unwrap().unwrap();
        let names: Vec<&str> = dust.get_column_names().iter().map(|n| n.as_str()).collect();
        assert_eq!(names, ["time", "pm10", "site"]);
        assert_eq!(air.column("no2").unwrap().f64().unwrap().get(2), Some(20.0));
        // Only the partitions that can hold the range are read (a day more
        // on each side: partitions are local dates).
        let day = 86_400_000;
        assert!(
            read_measurement_between(dir.path(), "air", t0 + 3 * day, t0 + 4 * day)
                .unwrap()
                .is_none()
        );
        let same_day = read_measurement_between(dir.path(), "air", t0 - 3_600_000, t0 + 1)
            .unwrap()
            .unwrap();
        assert_eq!(same_day.height(), 3);
        let aqi = read_measurement(dir.path(), "aqi").unwrap().unwrap();
        assert_eq!(
            aqi.column("category").unwrap().str().unwrap().get(0),
            Some("good")
        );
        // 16:00 UTC is midnight in Beijing: the partition is the local date.
        assert!(
            dir.path()
                .join("air/date=2026-01-05")
                .read_dir()
                .unwrap()
                .count()
                >= 2
        );
    }

    /// Retention deletes whole date partitions: first those older than the
    /// age bound, then the oldest until the size bound holds, never the
    /// newest date.
    #[test]
    fn retention_deletes_the_oldest_dates_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open(dir.path(), chrono_tz::Asia::Shanghai).unwrap();
        let day = 86_400_000;
        let t0 = 1_767_542_400_000; // 2026-01-04T16:00Z
        for d in 0..5 {
            for m in ["air", "aqi"] {
                let r = row(
                    m,
                    &[("site", "dongsi")],
                    vec![("v", V::F(1.0))],
                    t0 + d * day,
                );
                write(&a, &[r]).unwrap();
            }
        }
        let dates = |m: &str| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(dir.path().join(m))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let now = t0 + 4 * day;
        // Nothing to do within the bounds.
        let p = a.prune(now, Some(10 * day), Some(u64::MAX)).unwrap();
        assert_eq!(p.partitions, 0);
        let total = p.bytes;
        // Age: older than 2 days before 2026-01-09 (local) goes (01-05,
        // 01-06).
        let p = a.prune(now, Some(2 * day), None).unwrap();
        assert_eq!(p.partitions, 4, "{p:?}");
        assert_eq!(
            dates("air"),
            ["date=2026-01-07", "date=2026-01-08", "date=2026-01-09"]
        );
        assert_eq!(p.bytes + p.freed_bytes, total);
        // Size: down to about one date's worth, the newest kept.
        let p = a.prune(now, None, Some(p.bytes / 3)).unwrap();
        assert_eq!(dates("aqi"), ["date=2026-01-09"]);
        assert_eq!(dates("air"), ["date=2026-01-09"]);
        assert!(p.bytes > 0);
        // Even a bound below the newest date keeps it.
        let p = a.prune(now, None, Some(1)).unwrap();
        assert_eq!((p.partitions, dates("air").len()), (0, 1));
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn times(dir: &Path) -> Vec<i64> {
        let air = read_measurement(dir, "air").unwrap().unwrap();
        let t = air.column("time").unwrap().cast(&DataType::Int64).unwrap();
        t.i64().unwrap().into_no_null_iter().collect()
    }

    /// A day that is over becomes one file, sorted by time; today's files
    /// stay; a late reading for a compacted day is merged by the next pass.
    #[test]
    fn past_days_are_compacted_into_one_sorted_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open(dir.path(), chrono_tz::Asia::Shanghai).unwrap();
        let (t0, hour) = (1_767_542_400_000, 3_600_000); // 2026-01-05 00:00 in Beijing
        for h in [5, 1, 3] {
            let r = row(
                "air",
                &[("site", "dongsi")],
                vec![("pm25", V::F(h as f64))],
                t0 + h * hour,
            );
            write(&a, &[r]).unwrap();
        }
        let today = t0 + 24 * hour;
        for h in [2, 1] {
            let r = row(
                "air",
                &[("site", "dongsi")],
                vec![("pm25", V::F(1.0))],
                today + h * hour,
            );
            write(&a, &[r]).unwrap();
        }
        let (past, now) = (
            dir.path().join("air/date=2026-01-05"),
            dir.path().join("air/date=2026-01-06"),
        );
        assert_eq!(files(&past).len(), 3);
        let c = a.compact(today + 3 * hour).unwrap();
        assert_eq!(
            c,
            Compacted {
                partitions: 1,
                files: 3
            }
        );
        assert_eq!(files(&past), ["2026-01-05.parquet"]);
        assert_eq!(files(&now).len(), 2, "today is not compacted");
        let merged =
            ParquetReader::new(std::fs::File::open(past.join("2026-01-05.parquet")).unwrap())
                .finish()
                .unwrap();
        let t = merged
            .column("time")
            .unwrap()
            .cast(&DataType::Int64)
            .unwrap();
        let t: Vec<i64> = t.i64().unwrap().into_no_null_iter().collect();
        assert_eq!(t, [t0 + hour, t0 + 3 * hour, t0 + 5 * hour]);
        // Nothing more to do.
        assert_eq!(a.compact(today + 3 * hour).unwrap(), Compacted::default());
        // A batch written twice (the spool replays what it delivered in
        // the last second before a crash) is merged into one row each.
        let replayed = row(
            "air",
            &[("site", "dongsi")],
            vec![("pm25", V::F(3.0))],
            t0 + 3 * hour,
        );
        write(&a, std::slice::from_ref(&replayed)).unwrap();
        assert_eq!(a.compact(today + 3 * hour).unwrap().files, 2);
        // 3 rows of the 5th and 2 of the 6th: the replayed row not doubled.
        assert_eq!(times(dir.path()).len(), 5);
        // A late reading for the 5th, then the next pass.
        let late = row(
            "air",
            &[("site", "dongsi")],
            vec![("pm25", V::F(9.0))],
            t0 + 2 * hour,
        );
        write(&a, &[late]).unwrap();
        assert_eq!(files(&past).len(), 2);
        assert_eq!(a.compact(today + 3 * hour).unwrap().files, 2);
        assert_eq!(files(&past), ["2026-01-05.parquet"]);
        let mut all = times(dir.path());
        all.sort();
        assert_eq!(all, [1, 2, 3, 5, 25, 26].map(|h| t0 + h * hour));
    }

    /// A crash between any two steps of a compaction neither loses nor
    /// doubles a row, for readers meanwhile or after the next pass.
    #[test]
    fn a_compaction_cut_short_at_any_step_is_finished_by_the_next_pass() {
        let (t0, hour) = (1_767_542_400_000i64, 3_600_000);
        let now = t0 + 30 * hour;
        let expected: Vec<i64> = (0..3).map(|h| t0 + h * hour).collect();
        for step in [
            "merged file written",
            "journal written",
            "renamed",
            "one input deleted",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let a = Archive::open(dir.path(), chrono_tz::Asia::Shanghai).unwrap();
            for h in 0..3 {
                let r = row(
                    "air",
                    &[("site", "dongsi")],
                    vec![("pm25", V::F(1.0))],
                    t0 + h * hour,
                );
                write(&a, &[r]).unwrap();
            }
            let day = dir.path().join("air/date=2026-01-05");
            let inputs: Vec<PathBuf> = parquet_files(&day).unwrap();
            prepare_merge(&day, "2026-01-05", &inputs).unwrap();
            match step {
                "merged file written" => std::fs::remove_file(day.join(JOURNAL)).unwrap(),
                "journal written" => {}
                "renamed" | "one input deleted" => {
                    std::fs::rename(day.join(MERGING), day.join("2026-01-05.parquet")).unwrap();
                    if step == "one input deleted" {
                        std::fs::remove_file(&inputs[0]).unwrap();
                    }
                }
                _ => unreachable!(),
            }
            assert_eq!(
                times(dir.path()),
                expected,
                "a reader after the crash at: {step}"
            );
            a.compact(now).unwrap();
            assert_eq!(files(&day), ["2026-01-05.parquet"], "after: {step}");
            assert_eq!(
                times(dir.path()),
                expected,
                "after the next pass, crash at: {step}"
            );
        }
    }

    /// One name twice in a row (a tag and a field) keeps the tag and does
    /// not break the file (a column one value longer than the others would
    /// fail every write, and the writer would retry it for ever).
    #[test]
    fn a_field_named_like_a_tag_does_not_break_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open(dir.path(), chrono_tz::Asia::Shanghai).unwrap();
        let t0 = 1_767_542_400_000;
        let clash = row(
            "air",
            &[("site", "dongsi")],
            vec![("site", V::F(1.0)), ("pm25", V::F(30.0))],
            t0,
        );
        assert_eq!(write(&a, &[clash]), Ok(1));
        let air = read_measurement(dir.path(), "air").unwrap().unwrap();
        assert_eq!(
            air.column("site").unwrap().str().unwrap().get(0),
            Some("dongsi")
        );
    }
}

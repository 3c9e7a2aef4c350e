//! The local Parquet archive: everything that would go to InfluxDB (raw
//! readings, windows, AQI, alerts, quarantine), as Parquet files analysts
//! open directly (polars, pandas, DuckDB):
//!
//! ```text
//! <dir>/<measurement>/date=<YYYY-MM-DD>/<unix ms>-<pid>-<seq>.parquet
//! ```
//!
//! Columns: `time` (datetime, ms, UTC), one string column per tag, one
//! column per field (float, integer, boolean or string). Files are
//! Hive-partitioned by UTC date, e.g. in Python
//! `pl.scan_parquet("archive/air/**/*.parquet")`.
//!
//! It takes line protocol (the same bytes InfluxDB gets, so both sinks
//! store the same thing) and writes each batch as new files, synced
//! (tmp + fsync + rename) before the call returns: the spool counts a
//! batch delivered only once it is on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use influxdb_line_protocol::{FieldValue, parse_lines};
use polars::prelude::*;

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

    fn pad(&mut self, n: usize) {
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
            (Col::S(c), v) => c.push(Some(v.text())),
            (_, v) => {
                let mut s = self.to_strings();
                s.push(Some(v.text()));
                *self = Col::S(s);
            }
        }
    }

    fn series(self, name: &str) -> Column {
        let name = PlSmallStr::from(name);
        match self {
            Col::F(v) => Column::new(name, v),
            Col::I(v) => Column::new(name, v),
            Col::B(v) => Column::new(name, v),
            Col::S(v) => Column::new(name, v),
        }
    }
}

enum Value {
    F(f64),
    I(i64),
    B(bool),
    S(String),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::F(x) => x.to_string(),
            Value::I(x) => x.to_string(),
            Value::B(x) => x.to_string(),
            Value::S(x) => x.clone(),
        }
    }
}

/// Rows of one measurement and date.
#[derive(Default)]
struct Table {
    time_ms: Vec<i64>,
    cols: BTreeMap<String, Col>,
}

impl Table {
    fn push(&mut self, time_ms: i64, values: Vec<(String, Value)>) {
        let row = self.time_ms.len();
        self.time_ms.push(time_ms);
        for (name, v) in values {
            let col = self.cols.entry(name).or_insert_with(|| {
                let mut c = match v {
                    Value::F(_) => Col::F(Vec::new()),
                    Value::I(_) => Col::I(Vec::new()),
                    Value::B(_) => Col::B(Vec::new()),
                    Value::S(_) => Col::S(Vec::new()),
                };
                c.pad(row);
                c
            });
            col.pad(row);
            col.push(v);
        }
    }

    fn frame(self) -> PolarsResult<DataFrame> {
        let n = self.time_ms.len();
        let mut cols = vec![
            Column::new("time".into(), self.time_ms).cast(&DataType::Datetime(
                TimeUnit::Milliseconds,
                Some(TimeZone::UTC),
            ))?,
        ];
        for (name, mut c) in self.cols {
            if name == "time" {
                continue; // reserved (line protocol cannot carry it either)
            }
            c.pad(n);
            debug_assert_eq!(c.len(), n);
            cols.push(c.series(&name));
        }
        DataFrame::new(n, cols)
    }
}

pub struct Archive {
    dir: PathBuf,
    seq: AtomicU64,
}

fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Archive {
    pub fn open(dir: &Path) -> std::io::Result<Archive> {
        std::fs::create_dir_all(dir)?;
        Ok(Archive {
            dir: dir.to_owned(),
            seq: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes line protocol (ns timestamps) as Parquet files, synced.
    /// Returns the rows written. Lines that do not parse are skipped (they
    /// cannot come from lantian's encoder) and counted in the error.
    pub fn write(&self, lines: &[u8]) -> Result<usize, WriteError> {
        let text = String::from_utf8_lossy(lines);
        let mut tables: BTreeMap<(String, String), Table> = BTreeMap::new();
        let mut bad = 0;
        for parsed in parse_lines(&text) {
            let Ok(l) = parsed else {
                bad += 1;
                continue;
            };
            let ms = l.timestamp.unwrap_or(0).div_euclid(1_000_000);
            let date = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .format("%Y-%m-%d")
                .to_string();
            let mut values = Vec::new();
            for (k, v) in l.series.tag_set.iter().flatten() {
                values.push((k.to_string(), Value::S(v.to_string())));
            }
            for (k, v) in &l.field_set {
                let v = match v {
                    FieldValue::F64(x) => Value::F(*x),
                    FieldValue::I64(x) => Value::I(*x),
                    FieldValue::U64(x) => Value::I(i64::try_from(*x).unwrap_or(i64::MAX)),
                    FieldValue::Boolean(x) => Value::B(*x),
                    FieldValue::String(s) => Value::S(s.to_string()),
                };
                values.push((k.to_string(), v));
            }
            tables
                .entry((l.series.measurement.to_string(), date))
                .or_default()
                .push(ms, values);
        }
        let mut rows = 0;
        for ((measurement, date), table) in tables {
            rows += table.time_ms.len();
            let dir = self
                .dir
                .join(safe(&measurement))
                .join(format!("date={date}"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| WriteError::Io(format!("{}: {e}", dir.display())))?;
            let name = format!(
                "{}-{}-{}.parquet",
                chrono::Utc::now().timestamp_millis(),
                std::process::id(),
                self.seq.fetch_add(1, Relaxed)
            );
            let mut df = table.frame().map_err(|e| WriteError::Io(e.to_string()))?;
            let mut buf = Vec::new();
            ParquetWriter::new(&mut buf)
                .with_compression(ParquetCompression::Snappy)
                .finish(&mut df)
                .map_err(|e| WriteError::Io(e.to_string()))?;
            crate::durable::write_atomically(&dir.join(name), &buf)
                .map_err(|e| WriteError::Io(format!("{}: {e}", dir.display())))?;
        }
        if bad > 0 {
            return Err(WriteError::Unparsable { bad, rows });
        }
        Ok(rows)
    }
}

/// Why an archive write did not take every line.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Lines that are not line protocol were skipped; the rest is written.
    /// Retrying would not help.
    #[error("{bad} lines did not parse (skipped); {rows} rows archived")]
    Unparsable { bad: usize, rows: usize },
    /// The files could not be written (a full disk, say): worth a retry.
    #[error("{0}")]
    Io(String),
}

/// Reads every Parquet file of a measurement (all dates) into one frame
/// (columns missing in some files are null there).
pub fn read_measurement(dir: &Path, measurement: &str) -> PolarsResult<Option<DataFrame>> {
    read_measurement_between(dir, measurement, i64::MIN, i64::MAX)
}

/// [`read_measurement`], reading only the date partitions that can hold
/// times in [from_ms, to_ms) (rows are not filtered here).
pub fn read_measurement_between(
    dir: &Path,
    measurement: &str,
    from_ms: i64,
    to_ms: i64,
) -> PolarsResult<Option<DataFrame>> {
    let date = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("date=%Y-%m-%d").to_string())
    };
    let (first, last) = (date(from_ms), date(to_ms.saturating_sub(1)));
    let root = dir.join(safe(measurement));
    let Ok(days) = std::fs::read_dir(&root) else {
        return Ok(None);
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for d in days.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        // `date=YYYY-MM-DD` sorts as text in date order.
        if first.as_ref().is_some_and(|f| name < *f) || last.as_ref().is_some_and(|l| name > *l) {
            continue;
        }
        if let Ok(fs) = std::fs::read_dir(d.path()) {
            files.extend(
                fs.flatten()
                    .map(|f| f.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "parquet")),
            );
        }
    }
    files.sort();
    let mut frames = Vec::new();
    for f in files {
        let file = std::fs::File::open(&f)?;
        frames.push(ParquetReader::new(file).finish()?);
    }
    if frames.is_empty() {
        return Ok(None);
    }
    Ok(Some(diagonal(frames)?))
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
    use crate::sink::influx::line::{Value as V, encode_line};

    #[test]
    fn lines_become_parquet_with_tags_fields_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open(dir.path()).unwrap();
        let mut buf = Vec::new();
        let t0 = 1_767_542_400_000; // 2026-01-04T16:00Z
        encode_line(
            &mut buf,
            "air",
            &[("sensor", "a1"), ("site", "dongsi")],
            &[("pm25", V::F(35.5)), ("pm10", V::F(80.0))],
            t0,
        );
        encode_line(
            &mut buf,
            "air",
            &[("sensor", "a2"), ("site", "tiantan")],
            &[("pm25", V::I(40)), ("ok", V::B(true))],
            t0 + 60_000,
        );
        encode_line(
            &mut buf,
            "aqi",
            &[("site", "dongsi")],
            &[("aqi", V::I(51)), ("category", V::S("good".into()))],
            t0,
        );
        assert_eq!(a.write(&buf), Ok(3));
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
        let mut more = Vec::new();
        encode_line(
            &mut more,
            "air",
            &[("sensor", "a3")],
            &[("no2", V::F(20.0))],
            t0,
        );
        a.write(&more).unwrap();
        let air = read_measurement(dir.path(), "air").unwrap().unwrap();
        assert_eq!(air.height(), 3);
        // A line that is not line protocol is skipped, the rest kept, and
        // the error says which kind it is (the writer does not retry it).
        let mut mixed = b"not line protocol\n".to_vec();
        encode_line(
            &mut mixed,
            "dust",
            &[("site", "s1")],
            &[("pm10", V::F(80.0))],
            t0,
        );
        assert_eq!(
            a.write(&mixed),
            Err(WriteError::Unparsable { bad: 1, rows: 1 })
        );
        assert_eq!(air.column("no2").unwrap().f64().unwrap().get(2), Some(20.0));
        // Only the partitions of the range are read.
        let day = 86_400_000;
        assert!(
            read_measurement_between(dir.path(), "air", t0 + day, t0 + 2 * day)
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
        assert!(
            dir.path()
                .join("air/date=2026-01-04")
                .read_dir()
                .unwrap()
                .count()
                >= 2
        );
    }
}

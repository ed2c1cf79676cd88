//! One row per measured section: the aligned table on stdout and the JSON report.

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// A latency histogram in microseconds (up to 10 minutes, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(600_000_000, 3).expect("histogram bounds")
}

#[derive(Debug, Clone, Default)]
pub struct Row {
    pub section: String,
    /// Decided commands/s (bids), transactions/s (baseline), deliveries/s (fan-out).
    pub rate: Option<f64>,
    /// Accepted bids/s.
    pub accepted: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub expected: Option<u64>,
    pub lost: Option<u64>,
    pub duplicated: Option<u64>,
    pub cpu_us_per_delivery: Option<f64>,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_per_conn_kib: Option<f64>,
    /// Error kinds and counts (should be empty).
    pub errors: BTreeMap<String, u64>,
    /// Set when the section could not be measured at all.
    pub failed: Option<String>,
    /// Everything else worth keeping in the JSON report.
    pub extra: Map<String, Value>,
}

impl Row {
    pub fn new(section: impl Into<String>) -> Row {
        Row {
            section: section.into(),
            ..Row::default()
        }
    }

    pub fn failed(section: impl Into<String>, error: &anyhow::Error) -> Row {
        Row {
            failed: Some(format!("{error:#}")),
            ..Row::new(section)
        }
    }

    pub fn set_latency(&mut self, h: &Histogram<u64>) {
        if h.is_empty() {
            return;
        }
        self.p50_ms = Some(h.value_at_quantile(0.50) as f64 / 1000.0);
        self.p99_ms = Some(h.value_at_quantile(0.99) as f64 / 1000.0);
        self.max_ms = Some(h.max() as f64 / 1000.0);
        self.extra.insert("samples".into(), json!(h.len()));
        self.extra
            .insert("mean_ms".into(), json!(round(h.mean() / 1000.0, 3)));
    }

    pub fn error(&mut self, kind: impl Into<String>, n: u64) {
        if n > 0 {
            *self.errors.entry(kind.into()).or_default() += n;
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "section": self.section,
            "rate_per_s": self.rate.map(|v| round(v, 1)),
            "accepted_per_s": self.accepted.map(|v| round(v, 1)),
            "p50_ms": self.p50_ms.map(|v| round(v, 3)),
            "p99_ms": self.p99_ms.map(|v| round(v, 3)),
            "max_ms": self.max_ms.map(|v| round(v, 3)),
            "expected": self.expected,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "server_cpu_us_per_delivery": self.cpu_us_per_delivery.map(|v| round(v, 2)),
            "server_rss_before_kib": self.rss_before_kib,
            "server_rss_after_kib": self.rss_after_kib,
            "server_rss_per_conn_kib": self.rss_per_conn_kib.map(|v| round(v, 2)),
            "errors": self.errors,
            "failed": self.failed,
            "extra": self.extra,
        })
    }
}

pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn per_s(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn errors_cell(row: &Row) -> String {
    let mut parts: Vec<String> = row.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let Some(f) = &row.failed {
        parts.insert(0, format!("FAILED: {f}"));
    }
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(", ")
    }
}

/// The table: one line per row, columns aligned (numbers right, text left).
pub fn table(rows: &[Row]) -> String {
    let header = [
        "section",
        "ops/s",
        "accepted/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "expected",
        "lost",
        "dup",
        "srv CPU us/msg",
        "srv RSS MiB",
        "KiB/conn",
        "errors",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let rss = match (r.rss_before_kib, r.rss_after_kib) {
            (Some(a), Some(b)) => format!("{} -> {}", mib(a), mib(b)),
            (Some(a), None) => mib(a),
            _ => "-".into(),
        };
        cells.push(vec![
            r.section.clone(),
            opt(r.rate, per_s),
            opt(r.accepted, per_s),
            opt(r.p50_ms, ms),
            opt(r.p99_ms, ms),
            opt(r.max_ms, ms),
            opt(r.expected, |v| v.to_string()),
            opt(r.lost, |v| v.to_string()),
            opt(r.duplicated, |v| v.to_string()),
            opt(r.cpu_us_per_delivery, |v| format!("{v:.1}")),
            rss,
            opt(r.rss_per_conn_kib, |v| format!("{v:.1}")),
            errors_cell(r),
        ]);
    }
    let columns = header.len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            let left_aligned = c == 0 || c == columns - 1;
            if c > 0 {
                line.push_str("  ");
            }
            if left_aligned {
                line.push_str(cell);
                if c != columns - 1 {
                    line.push_str(&" ".repeat(pad));
                }
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (columns - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

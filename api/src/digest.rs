//! The doctor's digest of one patient's last 7 days: trends per vital, out-of-range
//! periods, open alerts. The built-in summarizer is deterministic and always works; an
//! OpenAI-compatible chat endpoint (TRIAD_LLM_URL, TRIAD_LLM_MODEL, TRIAD_LLM_API_KEY) can
//! be configured to phrase it, and the built-in text stands in whenever that fails.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;
use sqlx::AnyPool;
use triad_domain::vitals::VitalKind;
use triad_projections::patients::{self, AlertRow, Bucket};
use triad_projections::ProjectionError;

pub const PERIOD_DAYS: i64 = 7;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KindSummary {
    pub kind: &'static str,
    pub count: i64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    /// RISING, FALLING, STABLE (second half of the period against the first).
    pub trend: &'static str,
    pub out_of_range: Vec<Period>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DigestData {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub kinds: Vec<KindSummary>,
    pub open_alerts: Vec<(String, String, Option<f64>, String)>,
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Gathers the facts from the read models (hourly rollups: at most 168 rows per kind).
pub async fn gather(
    pool: &AnyPool,
    patient: &str,
    now: DateTime<Utc>,
) -> Result<DigestData, ProjectionError> {
    let from = now - Duration::days(PERIOD_DAYS);
    let middle = (from + Duration::days(PERIOD_DAYS / 2) + Duration::hours(12)).timestamp_millis();
    let mut kinds = vec![];
    for kind in VitalKind::ALL {
        let hours = patients::vitals(
            pool,
            patient,
            kind.as_str(),
            from.timestamp_millis(),
            now.timestamp_millis() + 1,
            Bucket::Hour,
            10_000,
        )
        .await?;
        if hours.is_empty() {
            continue;
        }
        let count: i64 = hours.iter().map(|h| h.count).sum();
        let total: f64 = hours.iter().map(|h| h.avg * h.count as f64).sum();
        let mean = |part: &[&patients::VitalPoint]| {
            let n: i64 = part.iter().map(|h| h.count).sum();
            (n > 0).then(|| part.iter().map(|h| h.avg * h.count as f64).sum::<f64>() / n as f64)
        };
        let (first, second): (Vec<_>, Vec<_>) = hours.iter().partition(|h| h.at_ms < middle);
        let (lo, hi) = kind.normal();
        let tolerance = (hi - lo) * 0.05;
        let trend = match (mean(&first), mean(&second)) {
            (Some(a), Some(b)) if b - a > tolerance => "RISING",
            (Some(a), Some(b)) if a - b > tolerance => "FALLING",
            (Some(_), Some(_)) => "STABLE",
            _ => "INSUFFICIENT_DATA",
        };
        let mut out_of_range: Vec<Period> = vec![];
        for h in hours.iter().filter(|h| h.min < lo || h.max > hi) {
            let (start, end) = (time(h.at_ms), time(h.at_ms + 3_600_000));
            match out_of_range.last_mut() {
                Some(p) if p.to == start => p.to = end,
                _ => out_of_range.push(Period {
                    from: start,
                    to: end,
                }),
            }
        }
        kinds.push(KindSummary {
            kind: kind.as_str(),
            count,
            min: hours.iter().map(|h| h.min).fold(f64::INFINITY, f64::min),
            max: hours
                .iter()
                .map(|h| h.max)
                .fold(f64::NEG_INFINITY, f64::max),
            avg: total / count.max(1) as f64,
            trend,
            out_of_range,
        });
    }
    let open_alerts = patients::alerts(pool, patient, true, 50)
        .await?
        .into_iter()
        .map(|a: AlertRow| (a.rule_id, a.kind, a.value, a.raised_at))
        .collect();
    Ok(DigestData {
        from,
        to: now,
        kinds,
        open_alerts,
    })
}

/// The built-in summary: the same facts always give the same text.
pub fn render(d: &DigestData) -> String {
    let mut lines = vec![format!(
        "Last {PERIOD_DAYS} days ({} to {}):",
        d.from.format("%Y-%m-%d"),
        d.to.format("%Y-%m-%d")
    )];
    if d.kinds.is_empty() {
        lines.push("No readings.".into());
    }
    for k in &d.kinds {
        let mut line = format!(
            "{}: {} readings, avg {:.1} (min {:.1}, max {:.1}), {}.",
            k.kind,
            k.count,
            k.avg,
            k.min,
            k.max,
            k.trend.to_lowercase().replace('_', " ")
        );
        if !k.out_of_range.is_empty() {
            let hours: i64 = k
                .out_of_range
                .iter()
                .map(|p| (p.to - p.from).num_hours())
                .sum();
            line.push_str(&format!(
                " Out of range for {hours} h in {} period(s).",
                k.out_of_range.len()
            ));
        }
        lines.push(line);
    }
    if d.open_alerts.is_empty() {
        lines.push("No open alerts.".into());
    } else {
        lines.push(format!("{} open alert(s):", d.open_alerts.len()));
        for (rule, kind, value, at) in &d.open_alerts {
            let value = value.map_or("?".to_string(), |v| format!("{v:.1}"));
            lines.push(format!("- {kind} rule {rule}: {value} since {at}"));
        }
    }
    lines.join("\n")
}

/// An OpenAI-compatible chat endpoint.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
}

impl LlmConfig {
    pub fn from_env() -> Option<Self> {
        let url = std::env::var("TRIAD_LLM_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        Some(LlmConfig {
            url,
            model: std::env::var("TRIAD_LLM_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into()),
            api_key: std::env::var("TRIAD_LLM_API_KEY").ok(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("llm request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("llm answered without a message")]
    Empty,
}

/// Asks the model to phrase the facts (and nothing else) for a clinician.
pub async fn phrase(
    config: &LlmConfig,
    facts: &DigestData,
    builtin: &str,
) -> Result<String, LlmError> {
    let body = serde_json::json!({
        "model": config.model,
        "temperature": 0,
        "messages": [
            { "role": "system", "content": "You summarize remote patient monitoring data for a doctor in at most five short sentences. Use only the facts given; do not diagnose." },
            { "role": "user", "content": format!("Facts (JSON): {}\n\nA plain summary: {builtin}", serde_json::to_string(facts).unwrap_or_default()) }
        ]
    });
    let url = format!("{}/chat/completions", config.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .post(url)
        .timeout(std::time::Duration::from_secs(10))
        .json(&body);
    if let Some(key) = &config.api_key {
        request = request.bearer_auth(key);
    }
    let answer: serde_json::Value = request.send().await?.error_for_status()?.json().await?;
    answer["choices"][0]["message"]["content"]
        .as_str()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or(LlmError::Empty)
}

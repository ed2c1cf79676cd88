//! The audit tooling behind `triad audit`: an aggregate's history and state as of a moment,
//! and who read a subject's data. Output goes to any writer (tests read it back).

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde_json::Value;
use std::io::Write;
use triad_domain::auction::Auction;
use triad_domain::patient::{Patient, PatientAlerts, PatientVitals};
use triad_eventstore::store::LogFilter;
use triad_eventstore::{EventStore, RecordedEvent, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown format {s:?}: use table or json")),
        }
    }
}

/// Every event of one aggregate, oldest first.
pub async fn history(
    store: &EventStore,
    aggregate_type: &str,
    id: &str,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let filter = LogFilter::aggregate(aggregate_type, id);
    let mut out = vec![];
    let mut from = 1;
    loop {
        let page = store.read(from, 1_000, &filter).await?;
        let full = page.len() == 1_000;
        if let Some(last) = page.last() {
            from = last.position + 1;
        }
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

fn fold<A: Aggregate>(events: &[RecordedEvent]) -> Result<Value, ToolError> {
    let mut state = A::default();
    for e in events {
        let event: A::Event = e.decode().map_err(ToolError::Store)?;
        state.apply(event);
    }
    Ok(serde_json::to_value(&state).unwrap_or(Value::Null))
}

/// The aggregate's state after `events` (types this build knows).
pub fn state_of(aggregate_type: &str, events: &[RecordedEvent]) -> Result<Value, ToolError> {
    match aggregate_type {
        "Auction" => fold::<Auction>(events),
        "Patient" => fold::<Patient>(events),
        "PatientVitals" => fold::<PatientVitals>(events),
        "PatientAlerts" => fold::<PatientAlerts>(events),
        other => Err(ToolError::Usage(format!("unknown aggregate type {other:?}: use Auction, Patient, PatientVitals or PatientAlerts"))),
    }
}

/// `triad audit TYPE/ID [--as-of T]`: history (up to T) and the state it gives.
pub async fn audit_aggregate(
    store: &EventStore,
    target: &str,
    as_of: Option<DateTime<Utc>>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    let (aggregate_type, id) = target.split_once('/').ok_or_else(|| {
        ToolError::Usage(format!(
            "{target:?}: expected TYPE/ID, e.g. Auction/demo-auction-1"
        ))
    })?;
    let mut events = history(store, aggregate_type, id).await?;
    if let Some(t) = as_of {
        events.retain(|e| e.recorded_at <= t);
    }
    if events.is_empty() {
        return Err(ToolError::Usage(format!(
            "no events for {target}{}",
            as_of.map(|t| format!(" as of {t}")).unwrap_or_default()
        )));
    }
    let state = state_of(aggregate_type, &events)?;
    match format {
        Format::Json => {
            for e in &events {
                writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default())?;
            }
            writeln!(
                out,
                "{}",
                serde_json::json!({ "state": state, "as_of": as_of })
            )?;
        }
        Format::Table => {
            writeln!(
                out,
                "{:>9}  {:<24}  {:<22}  {:<36}  {:<18}  payload",
                "position", "time", "actor", "command", "event"
            )?;
            for e in &events {
                let m = e.metadata();
                let actor = m
                    .as_ref()
                    .map(|m| format!("{}:{}", m.actor_role, m.actor_sub))
                    .unwrap_or_default();
                let command = m.as_ref().map(|m| m.command_id.clone()).unwrap_or_default();
                let payload = if e.shredded {
                    "(shredded) ".to_string() + &e.payload.to_string()
                } else {
                    e.payload.to_string()
                };
                writeln!(
                    out,
                    "{:>9}  {:<24}  {:<22}  {:<36}  {:<18}  {}",
                    e.position,
                    e.recorded_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    actor,
                    command,
                    e.event_type,
                    payload
                )?;
            }
            let when = as_of
                .map(|t| format!("as of {t}"))
                .unwrap_or_else(|| "now".into());
            writeln!(
                out,
                "\nstate {when}:\n{}",
                serde_json::to_string_pretty(&state).unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

/// `triad audit --reads SUBJECT`: every access record about the subject, and whether the
/// whole chain verifies. Returns false when the chain is broken.
pub async fn audit_reads(
    store: &EventStore,
    subject: &str,
    format: Format,
    out: &mut dyn Write,
) -> Result<bool, ToolError> {
    let mut after = 0;
    let mut count = 0;
    if format == Format::Table {
        writeln!(
            out,
            "{:>6}  {:<27}  {:<28}  {:<8}  {:<18}  {:<36}  fields",
            "seq", "at", "actor", "outcome", "operation", "request"
        )?;
    }
    loop {
        let page = store.access_log().list(Some(subject), after, 1_000).await?;
        for r in &page {
            count += 1;
            match format {
                Format::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({ "seq": r.seq, "record": r.record, "hash": r.hash })
                )?,
                Format::Table => writeln!(
                    out,
                    "{:>6}  {:<27}  {:<28}  {:<8}  {:<18}  {:<36}  {}",
                    r.seq,
                    r.record.at,
                    format!("{}:{}", r.record.actor_role, r.record.actor_sub),
                    r.record.outcome,
                    r.record.operation,
                    r.record.request_id,
                    r.record.fields.join(",")
                )?,
            }
        }
        match page.last() {
            Some(last) if page.len() == 1_000 => after = last.seq,
            _ => break,
        }
    }
    let verdict = store.access_log().verify().await?;
    match &verdict {
        Ok(n) => writeln!(
            out,
            "{count} record(s) about {subject}; access log chain verified ({n} records)"
        )?,
        Err((seq, what)) => writeln!(
            out,
            "{count} record(s) about {subject}; ACCESS LOG CHAIN BROKEN at seq {seq}: {what}"
        )?,
    }
    Ok(verdict.is_ok())
}

/// Whether a recorded event decodes into its domain type (for `triad verify`).
pub fn decodes(e: &RecordedEvent) -> Result<(), String> {
    use triad_domain::{auction::AuctionEvent, donation, patient};
    let result = match e.aggregate_type.as_str() {
        "Auction" => e.decode::<AuctionEvent>().map(drop),
        "Patient" => e.decode::<patient::PatientEvent>().map(drop),
        "PatientVitals" => e.decode::<patient::VitalsEvent>().map(drop),
        "PatientAlerts" => e.decode::<patient::AlertEvent>().map(drop),
        "Charity" => e.decode::<donation::CharityEvent>().map(drop),
        "Donation" => e.decode::<donation::DonationEvent>().map(drop),
        other => return Err(format!("unknown aggregate type {other:?}")),
    };
    result.map_err(|err| err.to_string())
}

/// `triad verify`: prints every fault; returns whether the store is sound.
pub async fn verify(store: &EventStore, out: &mut dyn Write) -> Result<bool, ToolError> {
    let report = triad_eventstore::verify::verify(store, &decodes).await?;
    for f in &report.faults {
        writeln!(out, "FAULT {f}")?;
    }
    let reads = store.access_log().verify().await?;
    let reads_ok = match &reads {
        Ok(n) => {
            writeln!(out, "access log: {n} records, chain verified")?;
            true
        }
        Err((seq, what)) => {
            writeln!(out, "FAULT access log record {seq}: {what}")?;
            false
        }
    };
    writeln!(
        out,
        "{} events checked ({} shredded, {} not yet hashed): {}",
        report.events,
        report.shredded,
        report.unchained,
        if report.faults.is_empty() && reads_ok {
            "OK".to_string()
        } else {
            format!("{} fault(s)", report.faults.len() + usize::from(!reads_ok))
        }
    )?;
    Ok(report.faults.is_empty() && reads_ok)
}

/// `triad replay`: events from the global log in order, as a table or JSON lines.
pub async fn replay(
    store: &EventStore,
    from: i64,
    limit: Option<i64>,
    filter: &LogFilter,
    format: Format,
    follow: bool,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    use futures::StreamExt;
    let mut printed = 0i64;
    let print = |e: &RecordedEvent, out: &mut dyn Write| -> Result<(), ToolError> {
        match format {
            Format::Json => writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default())?,
            Format::Table => {
                let payload = if e.shredded {
                    format!("(shredded) {}", e.payload)
                } else {
                    e.payload.to_string()
                };
                writeln!(
                    out,
                    "{:>9}  {}  {}/{}#{}  {}  {}",
                    e.position,
                    e.recorded_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    e.aggregate_type,
                    e.aggregate_id,
                    e.sequence,
                    e.event_type,
                    payload
                )?;
            }
        }
        Ok(())
    };
    if format == Format::Table {
        writeln!(
            out,
            "{:>9}  time                      aggregate#sequence  type  payload",
            "position"
        )?;
    }
    let mut next = from.max(1);
    loop {
        let want = limit.map_or(1_000, |l| (l - printed).clamp(0, 1_000));
        if want == 0 {
            return Ok(());
        }
        let page = store.read(next, want, filter).await?;
        for e in &page {
            print(e, out)?;
            printed += 1;
        }
        match page.last() {
            Some(last) => next = last.position + 1,
            None => break,
        }
    }
    if follow {
        out.flush()?;
        let mut live = store.subscribe(next, filter.clone());
        while let Some(e) = live.next().await {
            if limit.is_some_and(|l| printed >= l) {
                break;
            }
            print(&e?, out)?;
            printed += 1;
            out.flush()?;
        }
    }
    Ok(())
}

//! `triad verify`: checks the whole store and names every fault.
//!
//! - positions: unique (an index guarantees it) and gap-free (a gap is a removed event);
//! - per aggregate: sequences continuous from 1;
//! - the hash chain (chain.rs): every event's hash matches its content and its predecessor;
//! - every payload opens (decrypts, or is shredded) and decodes, through the upcasters, into
//!   its domain type (the caller supplies the decoder, which knows the domains).

use crate::chain::{self, link_hash, GENESIS};
use crate::error::StoreError;
use crate::record::RecordedEvent;
use crate::store::EventStore;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub position: Option<i64>,
    pub aggregate: Option<String>,
    pub what: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.position, &self.aggregate) {
            (Some(p), Some(a)) => write!(f, "position {p} ({a}): {}", self.what),
            (Some(p), None) => write!(f, "position {p}: {}", self.what),
            (None, Some(a)) => write!(f, "{a}: {}", self.what),
            (None, None) => f.write_str(&self.what),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub events: i64,
    pub shredded: i64,
    /// Newest events not hashed yet (the chainer runs just after commits): not a fault.
    pub unchained: i64,
    pub faults: Vec<Fault>,
}

const PAGE: i64 = 2_000;

pub async fn verify(
    store: &EventStore,
    decodes: &(dyn Fn(&RecordedEvent) -> Result<(), String> + Sync),
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let mut sequences: HashMap<(String, String), i64> = HashMap::new();
    let mut expected_position = 1;
    let mut previous_hash = GENESIS.to_string();
    let mut after_gap = false;
    let mut after = 0;
    loop {
        let links = chain::links(store.db(), after, PAGE).await?;
        if links.is_empty() {
            break;
        }
        for l in &links {
            report.events += 1;
            let aggregate = format!("{}/{}", l.aggregate_type, l.aggregate_id);
            if l.position != expected_position {
                report.faults.push(Fault {
                    position: Some(expected_position),
                    aggregate: None,
                    what: format!(
                        "missing: the log jumps from {} to {} (events removed)",
                        expected_position - 1,
                        l.position
                    ),
                });
                after_gap = true;
            }
            expected_position = l.position + 1;
            let last = sequences
                .entry((l.aggregate_type.clone(), l.aggregate_id.clone()))
                .or_insert(0);
            if l.sequence != *last + 1 {
                report.faults.push(Fault {
                    position: Some(l.position),
                    aggregate: Some(aggregate.clone()),
                    what: format!(
                        "sequence {} follows {} (expected {})",
                        l.sequence,
                        last,
                        *last + 1
                    ),
                });
            }
            *last = l.sequence.max(*last);
            match &l.hash {
                None => report.unchained += 1,
                Some(stored) => {
                    // Right after a gap the link is broken by the removal, already reported.
                    if after_gap {
                        after_gap = false;
                    } else if link_hash(&previous_hash, l) != *stored {
                        report.faults.push(Fault {
                            position: Some(l.position),
                            aggregate: Some(aggregate.clone()),
                            what: "hash chain broken: the stored hash does not match this event's content and its predecessor's hash (this event was edited, or the one before it was rewritten)".into(),
                        });
                    }
                    // Continue from the stored hash, so one fault is reported once.
                    previous_hash = stored.clone();
                }
            }
        }
        let first = links[0].position;
        let last = links[links.len() - 1].position;
        // Decoding goes through the same path as every reader (upcast, decrypt).
        match store.read(first, PAGE, &Default::default()).await {
            Ok(events) => {
                for e in events.iter().filter(|e| e.position <= last) {
                    if e.shredded {
                        report.shredded += 1;
                    }
                    if let Err(why) = decodes(e) {
                        report.faults.push(Fault {
                            position: Some(e.position),
                            aggregate: Some(format!("{}/{}", e.aggregate_type, e.aggregate_id)),
                            what: format!("does not decode: {why}"),
                        });
                    }
                }
            }
            Err(e) => report.faults.push(Fault {
                position: Some(first),
                aggregate: None,
                what: format!("cannot be read: {e}"),
            }),
        }
        after = last;
    }
    Ok(report)
}

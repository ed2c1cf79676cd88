//! What the log holds: a recorded event with its global position and metadata.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A global log position. Positions start at 1 and, for committed events, have no gaps other
/// than those left by rolled-back transactions.
pub type Position = i64;

/// Metadata on every event. Kept flat (string values) so the cqrs-es envelope
/// (`HashMap<String, String>`) can still read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// UUID v7: time-ordered, unique per event; the idempotency key for consumers downstream.
    pub event_id: String,
    pub command_id: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub actor_sub: String,
    pub actor_role: String,
    /// Time the command was decided (RFC 3339). The row's `recorded_at` is the commit clock.
    pub recorded_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub position: Position,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The payload after upcasting to the current version.
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
    /// Its personal fields were crypto-shredded (erasure): they read as `null`.
    #[serde(default)]
    pub shredded: bool,
}

impl RecordedEvent {
    pub fn metadata(&self) -> Option<EventMetadata> {
        serde_json::from_value(self.metadata.clone()).ok()
    }

    /// The payload as a domain event type.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, crate::StoreError> {
        // Deserializing from a borrowed Value avoids cloning the whole tree per event.
        E::deserialize(&self.payload).map_err(|e| crate::StoreError::Decode {
            position: self.position,
            event_type: self.event_type.clone(),
            version: self.event_version.clone(),
            reason: e.to_string(),
        })
    }
}

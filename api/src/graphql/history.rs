//! `aggregateHistory` (admin): the audit tooling of `triad audit`, over GraphQL.

use super::{require, services};
use crate::errors::{self, invalid_input, not_found};
use crate::tools;
use async_graphql::{Context, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use triad_domain::Role;

#[derive(SimpleObject)]
pub struct HistoryEvent {
    pub position: i64,
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    pub event_type: String,
    pub event_version: String,
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub command_id: Option<String>,
    /// The payload (upcast, decrypted; personal fields `null` when shredded).
    pub payload: Json<serde_json::Value>,
    pub shredded: bool,
}

#[derive(SimpleObject)]
pub struct AggregateHistory {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub as_of: Option<DateTime<Utc>>,
    pub events: Vec<HistoryEvent>,
    /// The state the events give (as of `asOf`).
    pub state: Json<serde_json::Value>,
}

#[derive(Default)]
pub struct HistoryQuery;

#[Object]
impl HistoryQuery {
    /// An aggregate's history and its state as it was at `asOf` (default: now). Admins only.
    async fn aggregate_history(
        &self,
        ctx: &Context<'_>,
        r#type: String,
        id: String,
        as_of: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<AggregateHistory> {
        require(ctx, &[Role::Admin])?;
        let s = services(ctx)?;
        let mut events = tools::history(&s.store, &r#type, &id)
            .await
            .map_err(errors::internal)?;
        if let Some(t) = as_of {
            events.retain(|e| e.recorded_at <= t);
        }
        if events.is_empty() {
            return Err(not_found(
                format!("no events for {type}/{id}", type = r#type),
            ));
        }
        let state = tools::state_of(&r#type, &events).map_err(|e| invalid_input(e.to_string()))?;
        Ok(AggregateHistory {
            aggregate_type: r#type,
            aggregate_id: id,
            as_of,
            state: Json(state),
            events: events
                .into_iter()
                .map(|e| {
                    let m = e.metadata();
                    HistoryEvent {
                        position: e.position,
                        sequence: e.sequence,
                        recorded_at: e.recorded_at,
                        event_type: e.event_type,
                        event_version: e.event_version,
                        actor_id: m.as_ref().map(|m| m.actor_sub.clone()),
                        actor_role: m.as_ref().map(|m| m.actor_role.clone()),
                        command_id: m.map(|m| m.command_id),
                        payload: Json(e.payload),
                        shredded: e.shredded,
                    }
                })
                .collect(),
        })
    }
}

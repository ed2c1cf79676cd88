//! Access control and auditing of patient data: the one layer every read of it goes through.
//!
//! Resolvers never check patient access themselves. Root fields that expose a patient carry
//! `#[graphql(guard = "PatientRead::new(&id)")]`; the guard decides (admin: all; patient:
//! themself; doctor: patients whose care team includes them; anyone else: no) and writes one
//! access record per read, allowed or denied, naming the fields asked for. Subscriptions are
//! checked when they start and again, through [`check_and_record`], for every event pushed.

use crate::errors;
use crate::graphql::{services, Caller};
use async_graphql::{Context, Guard};
use chrono::{SecondsFormat, Utc};
use triad_domain::Actor;
use triad_eventstore::audit::AccessRecord;
use triad_eventstore::EventStore;

/// How a read happened.
#[derive(Debug, Clone, Copy)]
pub enum ReadKind {
    Query,
    Subscription,
    SubscriptionEvent,
}

impl ReadKind {
    fn as_str(self) -> &'static str {
        match self {
            ReadKind::Query => "query",
            ReadKind::Subscription => "subscription",
            ReadKind::SubscriptionEvent => "subscription-event",
        }
    }
}

/// Decides whether `actor` may read `patient`, and records the attempt either way.
pub async fn check_and_record(
    services: &crate::graphql::Services,
    who: &Caller,
    patient: &str,
    fields: Vec<String>,
    kind: ReadKind,
) -> async_graphql::Result<()> {
    let allowed = match &who.actor {
        None => false,
        Some(actor) => may_read(services, actor, patient).await?,
    };
    record(&services.store, who, patient, fields, kind, allowed).await?;
    if allowed {
        Ok(())
    } else {
        Err(errors::forbidden(format!(
            "no access to patient {patient:?}"
        )))
    }
}

async fn may_read(
    services: &crate::graphql::Services,
    actor: &Actor,
    patient: &str,
) -> async_graphql::Result<bool> {
    let (state, _) = services
        .patients
        .load(patient)
        .await
        .map_err(errors::internal)?;
    if state.id.is_none() || state.forgotten {
        // Unknown and erased patients look the same to everyone but admins.
        return if actor.role == triad_domain::Role::Admin {
            Err(errors::not_found(format!("no patient {patient:?}")))
        } else {
            Ok(false)
        };
    }
    Ok(state.may_read(actor))
}

async fn record(
    store: &EventStore,
    who: &Caller,
    patient: &str,
    fields: Vec<String>,
    kind: ReadKind,
    allowed: bool,
) -> async_graphql::Result<()> {
    let (sub, role) = match &who.actor {
        Some(a) => (a.sub.to_string(), a.role.as_str().to_string()),
        None => ("anonymous".to_string(), "none".to_string()),
    };
    let record = AccessRecord {
        at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        actor_sub: sub,
        actor_role: role,
        subject_id: patient.to_string(),
        fields,
        outcome: if allowed { "allowed" } else { "denied" }.to_string(),
        operation: kind.as_str().to_string(),
        request_id: who.request_id.clone(),
    };
    // No record, no read: a failure to audit refuses the read.
    store
        .access_log()
        .append(&record)
        .await
        .map_err(errors::internal)?;
    Ok(())
}

/// The fields selected under the current field (what is being read).
pub fn selected_fields(ctx: &Context<'_>) -> Vec<String> {
    let mut fields: Vec<String> = ctx
        .field()
        .selection_set()
        .map(|f| f.name().to_string())
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

/// Guard for root fields that expose one patient's data.
pub struct PatientRead {
    patient: String,
}

impl PatientRead {
    pub fn new(patient: &async_graphql::ID) -> Self {
        PatientRead {
            patient: patient.to_string(),
        }
    }
}

impl Guard for PatientRead {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let s = services(ctx)?;
        let who = ctx.data_opt::<Caller>().cloned().unwrap_or_default();
        if ctx.data_opt::<crate::graphql::live::GroupFeed>().is_some() {
            // A fan-out group's shared execution: every member's own execution has recorded
            // its subscribe already; events are recorded as they are pushed.
            let allowed = match &who.actor {
                Some(actor) => may_read(s, actor, &self.patient).await?,
                None => false,
            };
            return if allowed {
                Ok(())
            } else {
                Err(errors::forbidden(format!(
                    "no access to patient {:?}",
                    self.patient
                )))
            };
        }
        let kind = if SUBSCRIPTION_FIELDS.contains(&ctx.field().name()) {
            ReadKind::Subscription
        } else {
            ReadKind::Query
        };
        check_and_record(s, &who, &self.patient, selected_fields(ctx), kind).await
    }
}

/// Root subscription fields that expose patient data.
const SUBSCRIPTION_FIELDS: &[&str] = &["alertRaised"];

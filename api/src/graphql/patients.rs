//! Patient monitoring over GraphQL. Every read of patient data passes the `PatientRead`
//! guard (crate::access), which authorizes it and writes the access record.

use super::{require, services, Caller};
use crate::access::{self, PatientRead, ReadKind};
use crate::digest;
use crate::errors::{self, coded, forbidden, invalid_input, not_found};
use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use cqrs_es::Aggregate;
use futures::{Stream, StreamExt};
use std::collections::BTreeMap;
use triad_domain::alerting::Comparator as DomainComparator;
use triad_domain::patient::{
    day_stream_id, AlertEvent, Patient, PatientAlerts, PatientCommand, PatientError, RecordVitals,
    RuleDefinition,
};
use triad_domain::personal::Personal;
use triad_domain::vitals::{
    check_reading, format_duration, parse_duration, RawReading, VitalKind as DomainKind,
    MAX_READINGS_PER_BATCH,
};
use triad_domain::{Role, UserId};
use triad_eventstore::store::LogFilter;
use triad_eventstore::{CommandContext, CommandError};
use triad_projections::patients::{self as views, Bucket};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "VitalKind", remote = "triad_domain::vitals::VitalKind")]
pub enum VitalKind {
    HeartRate,
    #[graphql(name = "SPO2")]
    Spo2,
    SystolicBp,
    DiastolicBp,
    Temperature,
    Glucose,
    Pain,
    Steps,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "triad_domain::alerting::Comparator")]
pub enum Comparator {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "VitalBucket")]
pub enum VitalBucket {
    Raw,
    Minute,
    Hour,
    Day,
}

fn patient_error(err: CommandError<PatientError>) -> async_graphql::Error {
    match err {
        CommandError::Rejected(e) => coded(e.code(), e.to_string()),
        CommandError::Contention => coded("CONFLICT", err.to_string()),
        CommandError::Store(triad_eventstore::StoreError::Shredded(_)) => {
            coded("GONE", "this patient's data has been erased")
        }
        CommandError::Store(e) => errors::internal(e),
    }
}

fn user_ids(ids: &[ID]) -> async_graphql::Result<Vec<UserId>> {
    ids.iter()
        .map(|i| UserId::parse(i.as_str()).map_err(|e| invalid_input(e.to_string())))
        .collect()
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Output types

#[derive(SimpleObject, Clone, Debug)]
pub struct VitalPoint {
    pub at: DateTime<Utc>,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub count: i64,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Alert {
    pub alert_id: ID,
    pub rule_id: ID,
    pub kind: String,
    pub value: Option<f64>,
    pub raised_at: String,
    pub resolved_at: Option<String>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct AlertRule {
    pub rule_id: ID,
    pub patient_id: ID,
    pub kind: VitalKind,
    pub comparator: Comparator,
    pub threshold: f64,
    /// ISO 8601 duration.
    pub for_duration: String,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct KindDigest {
    pub kind: String,
    pub count: i64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub trend: String,
    pub out_of_range_hours: i64,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Digest {
    /// The summary for the doctor.
    pub text: String,
    /// `builtin` or `llm:<model>`.
    pub generated_by: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub kinds: Vec<KindDigest>,
    pub open_alerts: i32,
}

/// A patient, as their care team sees them. Reached only through guarded root fields.
pub struct PatientNode {
    row: views::PatientRow,
}

#[Object(name = "Patient")]
impl PatientNode {
    async fn id(&self) -> ID {
        ID(self.row.patient_id.clone())
    }
    async fn name(&self) -> Option<&str> {
        self.row.name.as_deref()
    }
    async fn date_of_birth(&self) -> Option<&str> {
        self.row.date_of_birth.as_deref()
    }
    async fn care_team(&self) -> Vec<ID> {
        self.row.care_team.iter().cloned().map(ID).collect()
    }

    /// Readings of one kind, raw or per bucket; `from`/`to` default to the last 30 days.
    async fn vitals(
        &self,
        ctx: &Context<'_>,
        kind: VitalKind,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default_with = "VitalBucket::Hour")] bucket: VitalBucket,
    ) -> async_graphql::Result<Vec<VitalPoint>> {
        let to = to.unwrap_or_else(Utc::now);
        let from = from.unwrap_or(to - Duration::days(30));
        if from >= to {
            return Err(invalid_input("from must be before to"));
        }
        let bucket = match bucket {
            VitalBucket::Raw => Bucket::Raw,
            VitalBucket::Minute => Bucket::Minute,
            VitalBucket::Hour => Bucket::Hour,
            VitalBucket::Day => Bucket::Day,
        };
        let s = services(ctx)?;
        let kind: DomainKind = kind.into();
        let points = views::vitals(
            s.store.read_pool(),
            &self.row.patient_id,
            kind.as_str(),
            from.timestamp_millis(),
            to.timestamp_millis(),
            bucket,
            50_000,
        )
        .await
        .map_err(errors::internal)?;
        Ok(points
            .into_iter()
            .map(|p| VitalPoint {
                at: time(p.at_ms),
                min: p.min,
                max: p.max,
                avg: p.avg,
                count: p.count,
            })
            .collect())
    }

    async fn alerts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] open_only: bool,
    ) -> async_graphql::Result<Vec<Alert>> {
        let s = services(ctx)?;
        let rows = views::alerts(s.store.read_pool(), &self.row.patient_id, open_only, 500)
            .await
            .map_err(errors::internal)?;
        Ok(rows
            .into_iter()
            .map(|a| Alert {
                alert_id: ID(a.alert_id),
                rule_id: ID(a.rule_id),
                kind: a.kind,
                value: a.value,
                raised_at: a.raised_at,
                resolved_at: a.resolved_at,
            })
            .collect())
    }

    async fn rules(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AlertRule>> {
        let s = services(ctx)?;
        let (state, _) = s
            .patients
            .load(&self.row.patient_id)
            .await
            .map_err(errors::internal)?;
        Ok(state
            .rules
            .values()
            .map(|r| rule_node(&self.row.patient_id, r))
            .collect())
    }

    /// The last 7 days in a few lines: trends, out-of-range periods, open alerts.
    async fn digest(&self, ctx: &Context<'_>) -> async_graphql::Result<Digest> {
        let s = services(ctx)?;
        let facts = digest::gather(s.store.read_pool(), &self.row.patient_id, Utc::now())
            .await
            .map_err(errors::internal)?;
        let builtin = digest::render(&facts);
        let (text, generated_by) = match &s.llm {
            Some(config) => match digest::phrase(config, &facts, &builtin).await {
                Ok(text) => (text, format!("llm:{}", config.model)),
                Err(e) => {
                    tracing::warn!(error = %e, "digest provider failed; using the built-in summary");
                    (builtin, "builtin".to_string())
                }
            },
            None => (builtin, "builtin".to_string()),
        };
        Ok(Digest {
            text,
            generated_by,
            from: facts.from,
            to: facts.to,
            open_alerts: facts.open_alerts.len() as i32,
            kinds: facts
                .kinds
                .iter()
                .map(|k| KindDigest {
                    kind: k.kind.to_string(),
                    count: k.count,
                    min: k.min,
                    max: k.max,
                    avg: k.avg,
                    trend: k.trend.to_string(),
                    out_of_range_hours: k
                        .out_of_range
                        .iter()
                        .map(|p| (p.to - p.from).num_hours())
                        .sum(),
                })
                .collect(),
        })
    }
}

fn rule_node(patient: &str, r: &RuleDefinition) -> AlertRule {
    AlertRule {
        rule_id: ID(r.rule_id.clone()),
        patient_id: ID(patient.to_string()),
        kind: r.kind.into(),
        comparator: r.comparator.into(),
        threshold: r.threshold,
        for_duration: format_duration(Duration::seconds(r.for_secs)),
    }
}

async fn patient_node(ctx: &Context<'_>, id: &str) -> async_graphql::Result<PatientNode> {
    let s = services(ctx)?;
    let row = views::patient(s.store.read_pool(), id)
        .await
        .map_err(errors::internal)?;
    // Just enrolled and not projected yet: answer from the aggregate.
    let row = match row {
        Some(r) => r,
        None => {
            let (state, _) = s.patients.load(id).await.map_err(errors::internal)?;
            if state.id.is_none() || state.forgotten {
                return Err(not_found(format!("no patient {id:?}")));
            }
            row_from_state(&state)
        }
    };
    Ok(PatientNode { row })
}

fn row_from_state(state: &Patient) -> views::PatientRow {
    views::PatientRow {
        patient_id: state.id.clone().unwrap_or_default(),
        name: state.name.as_ref().and_then(|n| n.known().cloned()),
        date_of_birth: state
            .date_of_birth
            .as_ref()
            .and_then(|d| d.known().map(|d| d.to_string())),
        care_team: state.care_team.iter().map(|u| u.to_string()).collect(),
    }
}

// ---------------------------------------------------------------------------------------
// Inputs

#[derive(InputObject)]
pub struct EnrollPatientInput {
    pub name: String,
    /// YYYY-MM-DD.
    pub date_of_birth: NaiveDate,
    pub care_team: Vec<ID>,
}

#[derive(InputObject)]
pub struct ReadingInput {
    pub kind: VitalKind,
    pub value: f64,
    pub at: DateTime<Utc>,
}

#[derive(InputObject)]
pub struct RecordVitalsInput {
    pub patient_id: ID,
    pub readings: Vec<ReadingInput>,
}

#[derive(InputObject)]
pub struct DefineAlertRuleInput {
    pub patient_id: ID,
    pub kind: VitalKind,
    pub comparator: Comparator,
    pub threshold: f64,
    /// ISO 8601 duration: P3D, PT10M.
    pub for_duration: String,
}

#[derive(SimpleObject)]
pub struct RecordVitalsResult {
    /// Readings newly stored (repeats of stored readings are ignored).
    pub recorded: i32,
}

#[derive(SimpleObject)]
pub struct AccessRecordNode {
    pub seq: i64,
    pub at: String,
    pub actor_id: ID,
    pub actor_role: String,
    pub subject_id: ID,
    pub fields: Vec<String>,
    pub outcome: String,
    pub operation: String,
    pub request_id: String,
    pub hash: String,
}

// ---------------------------------------------------------------------------------------

#[derive(Default)]
pub struct PatientQuery;

#[Object]
impl PatientQuery {
    /// One patient (their care team, the patient themself, or an admin).
    #[graphql(guard = "PatientRead::new(&id)")]
    async fn patient(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<PatientNode> {
        patient_node(ctx, id.as_str()).await
    }

    /// The caller's patients: a doctor's care-team patients, everyone for an admin, oneself for
    /// a patient. Each patient listed is a recorded read.
    async fn patients(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, PatientNode>> {
        let actor = require(ctx, &[Role::Doctor, Role::Admin, Role::Patient])?.clone();
        if !(1..=100).contains(&first) {
            return Err(invalid_input("first must be between 1 and 100"));
        }
        let s = services(ctx)?;
        let after = after.unwrap_or_default();
        let ids = match actor.role {
            Role::Patient => vec![actor.sub.to_string()]
                .into_iter()
                .filter(|id| *id > after)
                .collect(),
            Role::Doctor => views::patient_ids(
                s.store.read_pool(),
                Some(actor.sub.as_str()),
                &after,
                first as i64 + 1,
            )
            .await
            .map_err(errors::internal)?,
            _ => views::patient_ids(s.store.read_pool(), None, &after, first as i64 + 1)
                .await
                .map_err(errors::internal)?,
        };
        let (ids, more) = triad_projections::sql::take_page(ids, first as usize);
        let who = ctx.data_opt::<Caller>().cloned().unwrap_or_default();
        let fields = node_fields(ctx);
        let mut connection = Connection::new(!after.is_empty(), more);
        for id in ids {
            if access::check_and_record(s, &who, &id, fields.clone(), ReadKind::Query)
                .await
                .is_err()
            {
                continue;
            }
            if let Ok(node) = patient_node(ctx, &id).await {
                connection.edges.push(Edge::new(id, node));
            }
        }
        Ok(connection)
    }

    /// Who read a subject's data, when, and what (admin). A Relay connection, oldest first.
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        subject_id: ID,
        #[graphql(default = 50)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, AccessRecordNode>> {
        require(ctx, &[Role::Admin])?;
        if !(1..=500).contains(&first) {
            return Err(invalid_input("first must be between 1 and 500"));
        }
        let after_seq = match after {
            None => 0,
            Some(c) => c
                .parse::<i64>()
                .map_err(|_| invalid_input("after is not a cursor from this connection"))?,
        };
        let s = services(ctx)?;
        let rows = s
            .store
            .access_log()
            .list(Some(subject_id.as_str()), after_seq, first as i64 + 1)
            .await
            .map_err(errors::internal)?;
        let (rows, more) = triad_projections::sql::take_page(rows, first as usize);
        let mut connection = Connection::new(after_seq > 0, more);
        connection.edges.extend(rows.into_iter().map(|r| {
            Edge::new(
                r.seq.to_string(),
                AccessRecordNode {
                    seq: r.seq,
                    at: r.record.at,
                    actor_id: ID(r.record.actor_sub),
                    actor_role: r.record.actor_role,
                    subject_id: ID(r.record.subject_id),
                    fields: r.record.fields,
                    outcome: r.record.outcome,
                    operation: r.record.operation,
                    request_id: r.record.request_id,
                    hash: r.hash,
                },
            )
        }));
        Ok(connection)
    }
}

/// Fields selected under `edges { node { ... } }`.
fn node_fields(ctx: &Context<'_>) -> Vec<String> {
    let mut fields = vec![];
    for edges in ctx.field().selection_set().filter(|f| f.name() == "edges") {
        for node in edges.selection_set().filter(|n| n.name() == "node") {
            fields.extend(node.selection_set().map(|f| f.name().to_string()));
        }
    }
    fields.sort();
    fields.dedup();
    fields
}

#[derive(Default)]
pub struct PatientMutation;

/// The caller may write vitals and rules for this patient: themself, their care team, admin.
async fn may_write(
    ctx: &Context<'_>,
    patient: &str,
    roles: &[Role],
) -> async_graphql::Result<(triad_domain::Actor, Patient)> {
    let actor = require(ctx, roles)?.clone();
    let s = services(ctx)?;
    let (state, _) = s.patients.load(patient).await.map_err(errors::internal)?;
    if state.id.is_none() {
        return Err(if actor.role == Role::Admin {
            not_found(format!("no patient {patient:?}"))
        } else {
            forbidden(format!("no access to patient {patient:?}"))
        });
    }
    if state.forgotten {
        return Err(coded("GONE", "this patient's data has been erased"));
    }
    if !state.may_read(&actor) {
        return Err(forbidden(format!("no access to patient {patient:?}")));
    }
    Ok((actor, state))
}

#[Object]
impl PatientMutation {
    /// Enrolls a patient (admin); the returned id is the `sub` of the patient's tokens.
    async fn enroll_patient(
        &self,
        ctx: &Context<'_>,
        input: EnrollPatientInput,
    ) -> async_graphql::Result<PatientNode> {
        let actor = require(ctx, &[Role::Admin])?.clone();
        let id = uuid::Uuid::now_v7().to_string();
        let command = PatientCommand::Enroll {
            patient_id: id.clone(),
            name: input.name,
            date_of_birth: input.date_of_birth,
            care_team: user_ids(&input.care_team)?,
            now: Utc::now(),
        };
        let s = services(ctx)?;
        let outcome = s
            .patients
            .execute(
                &id,
                command,
                CommandContext::new(actor, super::correlation_id(ctx)),
            )
            .await
            .map_err(patient_error)?;
        Ok(PatientNode {
            row: row_from_state(&outcome.state),
        })
    }

    async fn change_care_team(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        care_team: Vec<ID>,
    ) -> async_graphql::Result<PatientNode> {
        let actor = require(ctx, &[Role::Admin])?.clone();
        let s = services(ctx)?;
        let command = PatientCommand::ChangeCareTeam {
            care_team: user_ids(&care_team)?,
            now: Utc::now(),
        };
        let outcome = s
            .patients
            .execute(
                patient_id.as_str(),
                command,
                CommandContext::new(actor, super::correlation_id(ctx)),
            )
            .await
            .map_err(patient_error)?;
        Ok(PatientNode {
            row: row_from_state(&outcome.state),
        })
    }

    /// Stores a batch of readings (the patient or their device, their doctors, an admin).
    /// Every reading is checked first; one bad reading refuses the batch, naming it.
    async fn record_vitals(
        &self,
        ctx: &Context<'_>,
        input: RecordVitalsInput,
    ) -> async_graphql::Result<RecordVitalsResult> {
        let patient = input.patient_id.to_string();
        if input.readings.is_empty() || input.readings.len() > MAX_READINGS_PER_BATCH {
            return Err(invalid_input(format!(
                "readings must hold 1 to {MAX_READINGS_PER_BATCH} readings"
            )));
        }
        let now = Utc::now();
        let mut by_day: BTreeMap<String, Vec<RawReading>> = BTreeMap::new();
        for (i, r) in input.readings.iter().enumerate() {
            let raw = RawReading {
                kind: r.kind.into(),
                value: r.value,
                at: r.at,
            };
            check_reading(i, &raw, now).map_err(|e| invalid_input(e.to_string()))?;
            by_day
                .entry(day_stream_id(&patient, r.at))
                .or_default()
                .push(raw);
        }
        let (actor, _) =
            may_write(ctx, &patient, &[Role::Patient, Role::Doctor, Role::Admin]).await?;
        let s = services(ctx)?;
        let mut recorded = 0;
        // One stream per day; a retry after a partial failure is safe (repeats are ignored).
        for (stream, readings) in by_day {
            let command = RecordVitals {
                patient_id: patient.clone(),
                readings,
                recorded_by: actor.clone(),
            };
            let outcome = s
                .vitals
                .execute(
                    &stream,
                    command,
                    CommandContext::new(actor.clone(), super::correlation_id(ctx)),
                )
                .await
                .map_err(patient_error)?;
            for e in outcome.events {
                let triad_domain::patient::VitalsEvent::VitalsRecorded { readings, .. } = e.event;
                recorded += readings.len() as i32;
            }
        }
        metrics::counter!("triad_vitals_readings_total").increment(recorded as u64);
        Ok(RecordVitalsResult { recorded })
    }

    /// Defines an alert rule for a patient (a doctor of their care team, or an admin).
    async fn define_alert_rule(
        &self,
        ctx: &Context<'_>,
        input: DefineAlertRuleInput,
    ) -> async_graphql::Result<AlertRule> {
        let for_secs = parse_duration(&input.for_duration)
            .map_err(invalid_input)?
            .num_seconds();
        let patient = input.patient_id.to_string();
        let (actor, _) = may_write(ctx, &patient, &[Role::Doctor, Role::Admin]).await?;
        let rule = RuleDefinition {
            rule_id: uuid::Uuid::now_v7().to_string(),
            kind: input.kind.into(),
            comparator: DomainComparator::from(input.comparator),
            threshold: input.threshold,
            for_secs,
            defined_by: actor.sub.clone(),
        };
        let s = services(ctx)?;
        let command = PatientCommand::DefineAlertRule {
            rule: rule.clone(),
            now: Utc::now(),
        };
        s.patients
            .execute(
                &patient,
                command,
                CommandContext::new(actor, super::correlation_id(ctx)),
            )
            .await
            .map_err(patient_error)?;
        Ok(rule_node(&patient, &rule))
    }

    async fn retire_alert_rule(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        rule_id: ID,
    ) -> async_graphql::Result<bool> {
        let (actor, _) = may_write(ctx, patient_id.as_str(), &[Role::Doctor, Role::Admin]).await?;
        let s = services(ctx)?;
        let command = PatientCommand::RetireAlertRule {
            rule_id: rule_id.to_string(),
            now: Utc::now(),
        };
        s.patients
            .execute(
                patient_id.as_str(),
                command,
                CommandContext::new(actor, super::correlation_id(ctx)),
            )
            .await
            .map_err(patient_error)?;
        Ok(true)
    }

    /// Erasure (admin): records the request, then destroys the patient's key; the events stay
    /// but their personal fields can never be read again, and read models drop the patient.
    /// Safe to repeat.
    async fn forget_patient(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
    ) -> async_graphql::Result<bool> {
        let actor = require(ctx, &[Role::Admin])?.clone();
        let s = services(ctx)?;
        let command = PatientCommand::Forget {
            by: actor.clone(),
            now: Utc::now(),
        };
        s.patients
            .execute(
                patient_id.as_str(),
                command,
                CommandContext::new(actor, super::correlation_id(ctx)),
            )
            .await
            .map_err(patient_error)?;
        s.store
            .shred(patient_id.as_str())
            .await
            .map_err(errors::internal)?;
        Ok(true)
    }
}

/// An alert, as pushed to the care team.
#[derive(SimpleObject, Clone, Debug)]
pub struct AlertRaised {
    pub alert_id: ID,
    pub patient_id: ID,
    pub rule_id: ID,
    pub kind: VitalKind,
    pub value: Option<f64>,
    pub raised_at: DateTime<Utc>,
    pub position: i64,
}

#[derive(Default)]
pub struct PatientSubscription;

#[Subscription]
impl PatientSubscription {
    /// Alerts raised for one patient, to whoever may read that patient (checked when the
    /// subscription starts and again for every alert).
    #[graphql(guard = "PatientRead::new(&patient_id)")]
    async fn alert_raised(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<AlertRaised>>> {
        let s = services(ctx)?.clone();
        let who = ctx.data_opt::<Caller>().cloned().unwrap_or_default();
        let fields = access::selected_fields(ctx);
        let filter = LogFilter {
            aggregate_type: Some(PatientAlerts::TYPE.to_string()),
            aggregate_id: Some(patient_id.to_string()),
            event_types: vec!["AlertRaised".to_string()],
        };
        let events = super::live::events(ctx, &s.tail, after, filter)?;
        Ok(events.filter_map(move |item| {
            let s = s.clone();
            let who = who.clone();
            let fields = fields.clone();
            async move {
                let recorded = match item {
                    Ok(r) => r,
                    Err(e) => return Some(Err(e)),
                };
                let AlertEvent::AlertRaised {
                    alert_id,
                    patient_id,
                    rule_id,
                    kind,
                    value,
                    raised_at,
                    ..
                } = recorded.decode::<AlertEvent>().ok()?
                else {
                    return None;
                };
                // Care teams change: decide again, and record, for every alert pushed.
                if access::check_and_record(
                    &s,
                    &who,
                    &patient_id,
                    fields,
                    ReadKind::SubscriptionEvent,
                )
                .await
                .is_err()
                {
                    return None;
                }
                Some(Ok(AlertRaised {
                    alert_id: ID(alert_id),
                    patient_id: ID(patient_id),
                    rule_id: ID(rule_id),
                    kind: kind.into(),
                    value: match value {
                        Personal::Known(v) => Some(v),
                        Personal::Shredded => None,
                    },
                    raised_at,
                    position: recorded.position,
                }))
            }
        }))
    }
}

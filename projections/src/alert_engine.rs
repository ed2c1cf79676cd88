//! The alert engine: a process manager that evaluates every alert rule as vitals arrive and
//! records alerts as events (`PatientAlerts`).
//!
//! Per (patient, rule) it keeps a [`RuleWindow`] in `alert_windows`, saved with its
//! checkpoint in one transaction *after* the batch's alert commands are durable. A crash in
//! between replays the batch, which decides the same alerts again; `PatientAlerts` drops
//! them as already raised (alert ids are per episode). So it never acts twice on an event.
//!
//! Not replayable: a rebuild must not run it (its output is events, not rows).

use crate::runner::ProjectionError;
use futures::StreamExt;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use triad_domain::alerting::{AlertRule, RuleWindow, Transition};
use triad_domain::patient::{AlertCommand, PatientAlerts, PatientEvent, VitalsEvent};
use triad_domain::personal::Personal;
use triad_domain::Actor;
use triad_eventstore::store::Migration;
use triad_eventstore::{
    AggregateStore, CommandContext, CommandError, EventStore, Position, RecordedEvent, StoreError,
};

pub const NAME: &str = "alert-engine";

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    postgres: "CREATE TABLE IF NOT EXISTS alert_windows (patient_id text NOT NULL, rule_id text NOT NULL, rule text NOT NULL, state text NOT NULL, PRIMARY KEY (patient_id, rule_id))",
    sqlite: "CREATE TABLE IF NOT EXISTS alert_windows (patient_id text NOT NULL, rule_id text NOT NULL, rule text NOT NULL, state text NOT NULL, PRIMARY KEY (patient_id, rule_id))",
}];

type Windows = BTreeMap<(String, String), Option<(AlertRule, RuleWindow)>>;

pub struct AlertEngine {
    store: EventStore,
    alerts: Arc<AggregateStore<PatientAlerts>>,
}

impl AlertEngine {
    pub async fn start(
        store: EventStore,
        alerts: Arc<AggregateStore<PatientAlerts>>,
    ) -> Result<JoinHandle<()>, ProjectionError> {
        store.migrate(NAME, MIGRATIONS).await?;
        crate::runner::register_checkpoint(store.read_pool(), NAME, 1).await?;
        let engine = AlertEngine { store, alerts };
        Ok(tokio::spawn(async move { engine.run().await }))
    }

    async fn run(self) {
        loop {
            let from = match crate::runner::checkpoint(self.store.read_pool(), NAME).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "alert engine cannot read its checkpoint");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut expected = from;
            let mut log = self.store.subscribe_all(from + 1).ready_chunks(200);
            while let Some(chunk) = log.next().await {
                let events: Vec<RecordedEvent> = chunk.into_iter().filter_map(Result::ok).collect();
                let Some(last) = events.last().map(|e| e.position) else {
                    continue;
                };
                match self.process(expected, last, &events).await {
                    Ok(true) => expected = last,
                    Ok(false) => break, // another replica is ahead: resume from its checkpoint
                    Err(e) => {
                        metrics::counter!("triad_projection_errors_total", "projection" => NAME)
                            .increment(1);
                        tracing::error!(error = %e, "alert engine batch failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                }
            }
        }
    }

    async fn load(&self, windows: &mut Windows, patient: &str) -> Result<(), ProjectionError> {
        if windows.keys().any(|(p, _)| p == patient) {
            return Ok(());
        }
        let rows =
            sqlx::query("SELECT rule_id, rule, state FROM alert_windows WHERE patient_id = $1")
                .bind(patient)
                .fetch_all(self.store.read_pool())
                .await?;
        for r in rows {
            let rule: AlertRule = serde_json::from_str(&r.try_get::<String, _>("rule")?)
                .map_err(|e| ProjectionError::Invalid(e.to_string()))?;
            let state: RuleWindow =
                serde_json::from_str(&r.try_get::<String, _>("state")?).unwrap_or_default();
            windows.insert(
                (patient.to_string(), r.try_get("rule_id")?),
                Some((rule, state)),
            );
        }
        // Marks the patient as loaded even without rules.
        windows
            .entry((patient.to_string(), String::new()))
            .or_insert(None);
        Ok(())
    }

    /// Returns false when another replica already moved the checkpoint.
    async fn process(
        &self,
        expected: Position,
        last: Position,
        events: &[RecordedEvent],
    ) -> Result<bool, ProjectionError> {
        let mut windows: Windows = BTreeMap::new();
        let mut forgotten: BTreeSet<String> = BTreeSet::new();
        let mut commands: Vec<(String, AlertCommand, String)> = vec![];
        for e in events {
            match e.aggregate_type.as_str() {
                "Patient" => {
                    let patient = e.aggregate_id.clone();
                    self.load(&mut windows, &patient).await?;
                    match e.decode::<PatientEvent>()? {
                        PatientEvent::AlertRuleDefined { rule, .. } => {
                            let rule = AlertRule {
                                rule_id: rule.rule_id,
                                kind: rule.kind,
                                comparator: rule.comparator,
                                threshold: rule.threshold,
                                for_secs: rule.for_secs,
                            };
                            windows
                                .entry((patient, rule.rule_id.clone()))
                                .or_insert(Some((rule, RuleWindow::default())));
                        }
                        PatientEvent::AlertRuleRetired { rule_id, .. } => {
                            windows.insert((patient, rule_id), None);
                        }
                        PatientEvent::PatientForgotten { .. } => {
                            for ((p, _), w) in windows.iter_mut() {
                                if *p == patient {
                                    *w = None;
                                }
                            }
                            forgotten.insert(patient);
                        }
                        _ => {}
                    }
                }
                "PatientVitals" if !e.shredded => {
                    let VitalsEvent::VitalsRecorded {
                        patient_id,
                        readings,
                    } = e.decode::<VitalsEvent>()?;
                    if forgotten.contains(&patient_id) {
                        continue;
                    }
                    self.load(&mut windows, &patient_id).await?;
                    let event_id = e.metadata().map(|m| m.event_id).unwrap_or_default();
                    for ((p, _), slot) in windows.iter_mut() {
                        let Some((rule, window)) = slot else { continue };
                        if *p != patient_id {
                            continue;
                        }
                        let mine: Vec<_> = readings
                            .iter()
                            .filter(|r| r.kind == rule.kind)
                            .filter_map(|r| match r.value {
                                Personal::Known(v) => Some((r.at, v)),
                                Personal::Shredded => None,
                            })
                            .collect();
                        for t in window.observe(rule, &mine) {
                            let cmd = match t {
                                Transition::Raise {
                                    episode_start,
                                    value,
                                    at,
                                } => AlertCommand::Raise {
                                    patient_id: p.clone(),
                                    rule_id: rule.rule_id.clone(),
                                    kind: rule.kind,
                                    episode_start,
                                    value,
                                    at,
                                },
                                Transition::Resolve { episode_start, at } => {
                                    AlertCommand::Resolve {
                                        patient_id: p.clone(),
                                        rule_id: rule.rule_id.clone(),
                                        episode_start,
                                        at,
                                    }
                                }
                            };
                            commands.push((p.clone(), cmd, event_id.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        // Side effects first (idempotent), state and checkpoint after.
        let engine = Actor::system("alert-engine");
        for (patient, cmd, cause) in commands {
            let mut ctx = CommandContext::new(engine.clone(), cause.clone());
            ctx.causation_id = cause;
            match self.alerts.execute(&patient, cmd, ctx).await {
                Ok(_) => {}
                // Forgotten meanwhile: nothing may be stored for this patient any more.
                Err(CommandError::Store(StoreError::Shredded(_))) => {}
                Err(e) => {
                    return Err(ProjectionError::Invalid(format!(
                        "alert command failed: {e}"
                    )))
                }
            }
        }
        let mut tx = self.store.read_pool().begin().await?;
        if !crate::runner::advance_checkpoint(&mut *tx, NAME, expected, last).await? {
            return Ok(false);
        }
        for patient in &forgotten {
            sqlx::query("DELETE FROM alert_windows WHERE patient_id = $1")
                .bind(patient)
                .execute(&mut *tx)
                .await?;
        }
        for ((patient, rule_id), slot) in windows {
            if rule_id.is_empty() {
                continue;
            }
            match slot {
                Some((rule, state)) => {
                    sqlx::query("INSERT INTO alert_windows (patient_id, rule_id, rule, state) VALUES ($1, $2, $3, $4) ON CONFLICT (patient_id, rule_id) DO UPDATE SET rule = excluded.rule, state = excluded.state")
                        .bind(&patient)
                        .bind(&rule_id)
                        .bind(serde_json::to_string(&rule).map_err(|e| ProjectionError::Invalid(e.to_string()))?)
                        .bind(serde_json::to_string(&state).map_err(|e| ProjectionError::Invalid(e.to_string()))?)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query("DELETE FROM alert_windows WHERE patient_id = $1 AND rule_id = $2")
                        .bind(&patient)
                        .bind(&rule_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        metrics::gauge!("triad_projection_position", "projection" => NAME).set(last as f64);
        Ok(true)
    }
}

//! Remote patient monitoring: three aggregates, each with a bounded history.
//!
//! - [`Patient`] (id: the patient id): enrollment, care team, alert rules, erasure.
//! - [`PatientVitals`] (id: `PATIENT:YYYY-MM-DD`): one UTC day of one patient's readings.
//!   Splitting by day keeps every stream small however long a patient is monitored, and gives
//!   exact de-duplication (same kind and timestamp) within the day.
//! - [`PatientAlerts`] (id: the patient id): alerts raised and resolved by the alert engine;
//!   one alert per episode, whatever the engine retries.
//!
//! Personal fields are [`Personal`] and declared in [`PROTECTED`]: the event store encrypts
//! them with the patient's key, and they read back as `Shredded` once the patient is forgotten.

use crate::actor::{Actor, Role};
use crate::alerting::Comparator;
use crate::decider::Decider;
use crate::ids::UserId;
use crate::personal::{Personal, ProtectedFields};
use crate::vitals::{RawReading, VitalKind};
use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};

pub const MAX_CARE_TEAM: usize = 50;
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_RULES: usize = 100;

/// The patient (subject) of a vitals stream id `PATIENT:DAY`.
pub fn subject_of_day_stream(id: &str) -> &str {
    id.rsplit_once(':').map_or(id, |(patient, _)| patient)
}

pub fn day_stream_id(patient: &str, at: DateTime<Utc>) -> String {
    format!("{patient}:{}", at.format("%Y-%m-%d"))
}

fn same(id: &str) -> &str {
    id
}

/// Personal fields of the patient domain, encrypted at rest with the patient's key.
pub const PROTECTED: &[ProtectedFields] = &[
    ProtectedFields {
        aggregate_type: "Patient",
        subject: same,
        fields: &[(
            "PatientEnrolled",
            &["/PatientEnrolled/name", "/PatientEnrolled/date_of_birth"],
        )],
    },
    ProtectedFields {
        aggregate_type: "PatientVitals",
        subject: subject_of_day_stream,
        fields: &[("VitalsRecorded", &["/VitalsRecorded/readings/*/value"])],
    },
    ProtectedFields {
        aggregate_type: "PatientAlerts",
        subject: same,
        fields: &[("AlertRaised", &["/AlertRaised/value"])],
    },
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatientError {
    #[error("patient not found")]
    NotFound,
    #[error("patient already enrolled")]
    AlreadyEnrolled,
    #[error("this patient's data has been erased")]
    Forgotten,
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("no alert rule {0:?}")]
    RuleNotFound(String),
}

impl PatientError {
    pub fn code(&self) -> &'static str {
        match self {
            PatientError::NotFound | PatientError::RuleNotFound(_) => "NOT_FOUND",
            PatientError::AlreadyEnrolled => "CONFLICT",
            PatientError::Forgotten => "GONE",
            PatientError::InvalidInput(_) => "INVALID_INPUT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RuleDefinition {
    pub rule_id: String,
    pub kind: VitalKind,
    pub comparator: Comparator,
    pub threshold: f64,
    pub for_secs: i64,
    pub defined_by: UserId,
}

// ---------------------------------------------------------------------------------------
// Patient

#[derive(Debug, Clone, PartialEq)]
pub enum PatientCommand {
    Enroll {
        patient_id: String,
        name: String,
        date_of_birth: NaiveDate,
        care_team: Vec<UserId>,
        now: DateTime<Utc>,
    },
    ChangeCareTeam {
        care_team: Vec<UserId>,
        now: DateTime<Utc>,
    },
    DefineAlertRule {
        rule: RuleDefinition,
        now: DateTime<Utc>,
    },
    RetireAlertRule {
        rule_id: String,
        now: DateTime<Utc>,
    },
    Forget {
        by: Actor,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PatientEvent {
    PatientEnrolled {
        patient_id: String,
        name: Personal<String>,
        date_of_birth: Personal<NaiveDate>,
        care_team: Vec<UserId>,
        enrolled_at: DateTime<Utc>,
    },
    CareTeamChanged {
        care_team: Vec<UserId>,
        changed_at: DateTime<Utc>,
    },
    AlertRuleDefined {
        rule: RuleDefinition,
        defined_at: DateTime<Utc>,
    },
    AlertRuleRetired {
        rule_id: String,
        retired_at: DateTime<Utc>,
    },
    /// Erasure: the patient's key is destroyed after this is stored.
    PatientForgotten {
        forgotten_by: UserId,
        forgotten_at: DateTime<Utc>,
    },
}

impl DomainEvent for PatientEvent {
    fn event_type(&self) -> String {
        match self {
            PatientEvent::PatientEnrolled { .. } => "PatientEnrolled",
            PatientEvent::CareTeamChanged { .. } => "CareTeamChanged",
            PatientEvent::AlertRuleDefined { .. } => "AlertRuleDefined",
            PatientEvent::AlertRuleRetired { .. } => "AlertRuleRetired",
            PatientEvent::PatientForgotten { .. } => "PatientForgotten",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        crate::catalog::version_of(&self.event_type()).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Patient {
    pub id: Option<String>,
    pub name: Option<Personal<String>>,
    pub date_of_birth: Option<Personal<NaiveDate>>,
    pub care_team: BTreeSet<UserId>,
    pub rules: BTreeMap<String, RuleDefinition>,
    pub forgotten: bool,
}

fn check_team(team: &[UserId]) -> Result<Vec<UserId>, PatientError> {
    if team.len() > MAX_CARE_TEAM {
        return Err(PatientError::InvalidInput(format!(
            "a care team has at most {MAX_CARE_TEAM} members"
        )));
    }
    let unique: BTreeSet<UserId> = team.iter().cloned().collect();
    Ok(unique.into_iter().collect())
}

impl Patient {
    fn live(&self) -> Result<(), PatientError> {
        match (&self.id, self.forgotten) {
            (None, _) => Err(PatientError::NotFound),
            (_, true) => Err(PatientError::Forgotten),
            _ => Ok(()),
        }
    }

    /// Whether `actor` may read this patient's data: admins, the patient, their care team.
    pub fn may_read(&self, actor: &Actor) -> bool {
        match actor.role {
            Role::Admin => true,
            Role::Patient => self.id.as_deref() == Some(actor.sub.as_str()),
            Role::Doctor => self.care_team.contains(&actor.sub),
            _ => false,
        }
    }
}

impl Decider for Patient {
    type Summary = Patient;

    fn summary(&self) -> Patient {
        self.clone()
    }

    fn decide(&self, command: &PatientCommand) -> Result<Vec<PatientEvent>, PatientError> {
        match command {
            PatientCommand::Enroll {
                patient_id,
                name,
                date_of_birth,
                care_team,
                now,
            } => {
                if self.id.is_some() {
                    return Err(PatientError::AlreadyEnrolled);
                }
                let name = name.trim();
                if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
                    return Err(PatientError::InvalidInput(format!(
                        "name must have 1 to {MAX_NAME_LEN} characters"
                    )));
                }
                if *date_of_birth > now.date_naive() {
                    return Err(PatientError::InvalidInput(
                        "dateOfBirth is in the future".into(),
                    ));
                }
                Ok(vec![PatientEvent::PatientEnrolled {
                    patient_id: patient_id.clone(),
                    name: Personal::Known(name.to_string()),
                    date_of_birth: Personal::Known(*date_of_birth),
                    care_team: check_team(care_team)?,
                    enrolled_at: *now,
                }])
            }
            PatientCommand::ChangeCareTeam { care_team, now } => {
                self.live()?;
                Ok(vec![PatientEvent::CareTeamChanged {
                    care_team: check_team(care_team)?,
                    changed_at: *now,
                }])
            }
            PatientCommand::DefineAlertRule { rule, now } => {
                self.live()?;
                if !rule.threshold.is_finite() {
                    return Err(PatientError::InvalidInput(
                        "threshold must be a finite number".into(),
                    ));
                }
                if rule.for_secs <= 0 || rule.for_secs > 90 * 86_400 {
                    return Err(PatientError::InvalidInput(
                        "forDuration must be between 1 second and 90 days".into(),
                    ));
                }
                if self.rules.len() >= MAX_RULES {
                    return Err(PatientError::InvalidInput(format!(
                        "a patient has at most {MAX_RULES} rules"
                    )));
                }
                if self.rules.contains_key(&rule.rule_id) {
                    return Ok(vec![]);
                }
                Ok(vec![PatientEvent::AlertRuleDefined {
                    rule: rule.clone(),
                    defined_at: *now,
                }])
            }
            PatientCommand::RetireAlertRule { rule_id, now } => {
                self.live()?;
                if !self.rules.contains_key(rule_id) {
                    return Err(PatientError::RuleNotFound(rule_id.clone()));
                }
                Ok(vec![PatientEvent::AlertRuleRetired {
                    rule_id: rule_id.clone(),
                    retired_at: *now,
                }])
            }
            PatientCommand::Forget { by, now } => match (&self.id, self.forgotten) {
                (None, _) => Err(PatientError::NotFound),
                (_, true) => Ok(vec![]),
                _ => Ok(vec![PatientEvent::PatientForgotten {
                    forgotten_by: by.sub.clone(),
                    forgotten_at: *now,
                }]),
            },
        }
    }
}

impl Aggregate for Patient {
    const TYPE: &'static str = "Patient";
    type Command = PatientCommand;
    type Event = PatientEvent;
    type Error = PatientError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        crate::decider::handle(self, command, sink).await
    }

    fn apply(&mut self, event: PatientEvent) {
        match event {
            PatientEvent::PatientEnrolled {
                patient_id,
                name,
                date_of_birth,
                care_team,
                ..
            } => {
                self.id = Some(patient_id);
                self.name = Some(name);
                self.date_of_birth = Some(date_of_birth);
                self.care_team = care_team.into_iter().collect();
            }
            PatientEvent::CareTeamChanged { care_team, .. } => {
                self.care_team = care_team.into_iter().collect()
            }
            PatientEvent::AlertRuleDefined { rule, .. } => {
                self.rules.insert(rule.rule_id.clone(), rule);
            }
            PatientEvent::AlertRuleRetired { rule_id, .. } => {
                self.rules.remove(&rule_id);
            }
            PatientEvent::PatientForgotten { .. } => {
                self.forgotten = true;
                self.name = Some(Personal::Shredded);
                self.date_of_birth = Some(Personal::Shredded);
                self.rules.clear();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// PatientVitals (one patient, one UTC day)

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reading {
    pub kind: VitalKind,
    pub value: Personal<f64>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordVitals {
    pub patient_id: String,
    /// Already validated at the edge, all within this stream's day.
    pub readings: Vec<RawReading>,
    pub recorded_by: Actor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum VitalsEvent {
    VitalsRecorded {
        patient_id: String,
        readings: Vec<Reading>,
    },
}

impl DomainEvent for VitalsEvent {
    fn event_type(&self) -> String {
        "VitalsRecorded".to_string()
    }
    fn event_version(&self) -> String {
        crate::catalog::version_of(&self.event_type()).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PatientVitals {
    /// (kind, ms) of every reading stored for the day.
    pub seen: HashSet<(VitalKind, i64)>,
}

impl Decider for PatientVitals {
    type Summary = usize;

    fn summary(&self) -> usize {
        self.seen.len()
    }

    /// Keeps only readings not stored yet (same kind and timestamp); none new: nothing to do.
    fn decide(&self, command: &RecordVitals) -> Result<Vec<VitalsEvent>, PatientError> {
        let mut fresh = HashSet::new();
        let readings: Vec<Reading> = command
            .readings
            .iter()
            .filter(|r| {
                let key = (r.kind, r.at.timestamp_millis());
                !self.seen.contains(&key) && fresh.insert(key)
            })
            .map(|r| Reading {
                kind: r.kind,
                value: Personal::Known(r.value),
                at: r.at,
            })
            .collect();
        if readings.is_empty() {
            return Ok(vec![]);
        }
        Ok(vec![VitalsEvent::VitalsRecorded {
            patient_id: command.patient_id.clone(),
            readings,
        }])
    }
}

impl Aggregate for PatientVitals {
    const TYPE: &'static str = "PatientVitals";
    type Command = RecordVitals;
    type Event = VitalsEvent;
    type Error = PatientError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        crate::decider::handle(self, command, sink).await
    }

    fn apply(&mut self, event: VitalsEvent) {
        let VitalsEvent::VitalsRecorded { readings, .. } = event;
        for r in readings {
            self.seen.insert((r.kind, r.at.timestamp_millis()));
        }
    }
}

// ---------------------------------------------------------------------------------------
// PatientAlerts

#[derive(Debug, Clone, PartialEq)]
pub enum AlertCommand {
    Raise {
        patient_id: String,
        rule_id: String,
        kind: VitalKind,
        episode_start: DateTime<Utc>,
        value: f64,
        at: DateTime<Utc>,
    },
    Resolve {
        patient_id: String,
        rule_id: String,
        episode_start: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AlertEvent {
    AlertRaised {
        alert_id: String,
        patient_id: String,
        rule_id: String,
        kind: VitalKind,
        value: Personal<f64>,
        episode_start: DateTime<Utc>,
        raised_at: DateTime<Utc>,
    },
    AlertResolved {
        alert_id: String,
        patient_id: String,
        rule_id: String,
        resolved_at: DateTime<Utc>,
    },
}

impl DomainEvent for AlertEvent {
    fn event_type(&self) -> String {
        match self {
            AlertEvent::AlertRaised { .. } => "AlertRaised",
            AlertEvent::AlertResolved { .. } => "AlertResolved",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        crate::catalog::version_of(&self.event_type()).to_string()
    }
}

/// Alert id: one per (patient, rule, episode), so a retried decision is the same alert.
pub fn alert_id(patient: &str, rule: &str, episode_start: DateTime<Utc>) -> String {
    format!("{patient}:{rule}:{}", episode_start.timestamp_millis())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PatientAlerts {
    pub patient_id: Option<String>,
    /// Every alert id ever raised, and which are open.
    pub raised: BTreeSet<String>,
    pub open: BTreeSet<String>,
}

impl Decider for PatientAlerts {
    type Summary = usize;

    fn summary(&self) -> usize {
        self.open.len()
    }

    fn decide(&self, command: &AlertCommand) -> Result<Vec<AlertEvent>, PatientError> {
        match command {
            AlertCommand::Raise {
                patient_id,
                rule_id,
                kind,
                episode_start,
                value,
                at,
            } => {
                let patient = patient_id.clone();
                let id = alert_id(&patient, rule_id, *episode_start);
                if self.raised.contains(&id) {
                    return Ok(vec![]);
                }
                Ok(vec![AlertEvent::AlertRaised {
                    alert_id: id,
                    patient_id: patient,
                    rule_id: rule_id.clone(),
                    kind: *kind,
                    value: Personal::Known(*value),
                    episode_start: *episode_start,
                    raised_at: *at,
                }])
            }
            AlertCommand::Resolve {
                patient_id,
                rule_id,
                episode_start,
                at,
            } => {
                let patient = patient_id.clone();
                let id = alert_id(&patient, rule_id, *episode_start);
                if !self.open.contains(&id) {
                    return Ok(vec![]);
                }
                Ok(vec![AlertEvent::AlertResolved {
                    alert_id: id,
                    patient_id: patient,
                    rule_id: rule_id.clone(),
                    resolved_at: *at,
                }])
            }
        }
    }
}

impl Aggregate for PatientAlerts {
    const TYPE: &'static str = "PatientAlerts";
    type Command = AlertCommand;
    type Event = AlertEvent;
    type Error = PatientError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        crate::decider::handle(self, command, sink).await
    }

    fn apply(&mut self, event: AlertEvent) {
        match event {
            AlertEvent::AlertRaised {
                alert_id,
                patient_id,
                ..
            } => {
                self.patient_id = Some(patient_id);
                self.raised.insert(alert_id.clone());
                self.open.insert(alert_id);
            }
            AlertEvent::AlertResolved { alert_id, .. } => {
                self.open.remove(&alert_id);
            }
        }
    }
}

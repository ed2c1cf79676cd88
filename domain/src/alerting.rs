//! Alert rules and their evaluation over a stream of readings: pure, replayable, and
//! indifferent to the order readings arrive in.
//!
//! A rule is "KIND COMPARATOR THRESHOLD for DURATION". Durations of a day or more are judged
//! per UTC day: the rule holds when each of the last N days with data (N = the duration in
//! days, rounded up) is present, consecutive, and has only readings that satisfy the
//! comparator ("PAIN GT 8 for P3D": three days in a row with every pain reading above 8).
//! Shorter durations are judged per reading: it holds when every reading over at least the
//! duration satisfies it, with no silence longer than the duration in between ("SPO2 LT 90
//! for PT10M"). One alert per episode: raised when the rule starts holding, resolved when it
//! stops.

use crate::vitals::VitalKind;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Comparator {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Comparator {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::Gt => "GT",
            Comparator::Gte => "GTE",
            Comparator::Lt => "LT",
            Comparator::Lte => "LTE",
        }
    }

    pub fn parse(raw: &str) -> Option<Comparator> {
        [
            Comparator::Gt,
            Comparator::Gte,
            Comparator::Lt,
            Comparator::Lte,
        ]
        .into_iter()
        .find(|c| c.as_str() == raw)
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparator::Gt => value > threshold,
            Comparator::Gte => value >= threshold,
            Comparator::Lt => value < threshold,
            Comparator::Lte => value <= threshold,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    pub rule_id: String,
    pub kind: VitalKind,
    pub comparator: Comparator,
    pub threshold: f64,
    /// How long the condition must hold, in seconds.
    pub for_secs: i64,
}

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct DayTally {
    count: u32,
    satisfied: u32,
}

/// What a window decided after new readings.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Raise {
        episode_start: DateTime<Utc>,
        value: f64,
        at: DateTime<Utc>,
    },
    Resolve {
        episode_start: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

/// The evaluation state of one rule for one patient; persisted between batches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleWindow {
    /// Day number (days since the epoch, UTC) -> tally; for day-based rules.
    days: BTreeMap<i64, DayTally>,
    /// Reading time (ms) -> (value, satisfies); for reading-based rules.
    readings: BTreeMap<i64, (f64, bool)>,
    /// Start (ms) of the episode currently raised.
    raised: Option<i64>,
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl RuleWindow {
    pub fn is_raised(&self) -> bool {
        self.raised.is_some()
    }

    /// Takes in readings of the rule's kind (any order, duplicates ignored) and returns the
    /// transitions they cause.
    pub fn observe(
        &mut self,
        rule: &AlertRule,
        readings: &[(DateTime<Utc>, f64)],
    ) -> Vec<Transition> {
        if readings.is_empty() {
            return vec![];
        }
        let day_based = rule.for_secs >= 86_400;
        for (at, value) in readings {
            let ms = at.timestamp_millis();
            let ok = rule.comparator.holds(*value, rule.threshold);
            if self.readings.insert(ms, (*value, ok)).is_some() {
                continue; // a reading already counted
            }
            if day_based {
                let tally = self.days.entry(ms.div_euclid(DAY_MS)).or_default();
                tally.count += 1;
                tally.satisfied += u32::from(ok);
            }
        }
        let latest_ms = *self.readings.keys().next_back().unwrap_or(&0);
        let (latest_value, _) = self.readings[&latest_ms];
        let holding = if day_based {
            self.holds_days(rule)
        } else {
            self.holds_readings(rule, latest_ms)
        };
        self.prune(rule, latest_ms, day_based);
        let at = time(latest_ms);
        match (self.raised, holding) {
            (None, Some(start)) => {
                self.raised = Some(start);
                vec![Transition::Raise {
                    episode_start: time(start),
                    value: latest_value,
                    at,
                }]
            }
            (Some(start), None) => {
                self.raised = None;
                vec![Transition::Resolve {
                    episode_start: time(start),
                    at,
                }]
            }
            _ => vec![],
        }
    }

    /// Start (ms) of the streak that makes the rule hold at the latest day, if it holds.
    fn holds_days(&self, rule: &AlertRule) -> Option<i64> {
        let needed = (rule.for_secs + 86_399) / 86_400;
        let (&latest, _) = self.days.iter().next_back()?;
        let mut start = latest;
        let mut day = latest;
        loop {
            match self.days.get(&day) {
                Some(t) if t.count > 0 && t.satisfied == t.count => start = day,
                _ => break,
            }
            day -= 1;
        }
        (latest - start + 1 >= needed).then_some(start * DAY_MS)
    }

    fn holds_readings(&self, rule: &AlertRule, latest: i64) -> Option<i64> {
        let window = rule.for_secs * 1_000;
        let mut start: Option<i64> = None;
        let mut previous: Option<i64> = None;
        for (&ms, &(_, ok)) in &self.readings {
            if !ok {
                start = None;
            } else {
                start = match (start, previous) {
                    (Some(s), Some(p)) if ms - p <= window => Some(s),
                    _ => Some(ms),
                };
            }
            previous = Some(ms);
        }
        let start = start?;
        (latest - start >= window).then_some(self.raised.unwrap_or(start))
    }

    /// Forgets what can no longer change the outcome (bounded memory per rule).
    fn prune(&mut self, rule: &AlertRule, latest_ms: i64, day_based: bool) {
        let keep_from = if day_based {
            let days = (rule.for_secs + 86_399) / 86_400 + 2;
            let first_day = latest_ms.div_euclid(DAY_MS) - days;
            self.days = self.days.split_off(&first_day);
            first_day * DAY_MS
        } else {
            latest_ms - 2 * rule.for_secs * 1_000
        };
        // Keep the run's start while an episode is raised, so its identity does not drift.
        let keep_from = self.raised.map_or(keep_from, |s| keep_from.min(s));
        self.readings = self.readings.split_off(&keep_from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn day(n: i64, hour: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
            + Duration::days(n)
            + Duration::hours(hour)
    }

    fn pain_rule() -> AlertRule {
        AlertRule {
            rule_id: "r".into(),
            kind: VitalKind::Pain,
            comparator: Comparator::Gt,
            threshold: 8.0,
            for_secs: 3 * 86_400,
        }
    }

    fn raises(ts: &[Transition]) -> usize {
        ts.iter()
            .filter(|t| matches!(t, Transition::Raise { .. }))
            .count()
    }

    #[test]
    fn pain_three_days_fires_once_on_day_three_and_resolves() {
        let rule = pain_rule();
        let mut w = RuleWindow::default();
        assert!(w.observe(&rule, &[(day(0, 9), 9.0)]).is_empty());
        assert!(w.observe(&rule, &[(day(1, 9), 9.5)]).is_empty());
        let t = w.observe(&rule, &[(day(2, 9), 9.0)]);
        assert_eq!(
            t,
            vec![Transition::Raise {
                episode_start: day(0, 0),
                value: 9.0,
                at: day(2, 9)
            }]
        );
        assert!(
            w.observe(&rule, &[(day(3, 9), 10.0)]).is_empty(),
            "still the same episode"
        );
        let t = w.observe(&rule, &[(day(4, 9), 3.0)]);
        assert!(matches!(t.as_slice(), [Transition::Resolve { .. }]));
    }

    #[test]
    fn a_gap_day_breaks_the_streak() {
        let rule = pain_rule();
        let mut w = RuleWindow::default();
        let mut all = vec![];
        for d in [0, 1, 3, 4] {
            all.extend(w.observe(&rule, &[(day(d, 9), 9.0)]));
        }
        assert_eq!(raises(&all), 0);
        all.extend(w.observe(&rule, &[(day(5, 9), 9.0)]));
        assert_eq!(raises(&all), 1, "days 3, 4, 5 form a new streak");
    }

    #[test]
    fn out_of_order_input_gives_the_same_alerts() {
        let rule = pain_rule();
        let mut w = RuleWindow::default();
        let mut all = vec![];
        // Day 2 and day 0 arrive before day 1.
        all.extend(w.observe(&rule, &[(day(2, 9), 9.0)]));
        all.extend(w.observe(&rule, &[(day(0, 9), 9.0)]));
        assert_eq!(raises(&all), 0);
        all.extend(w.observe(&rule, &[(day(1, 9), 9.0)]));
        assert_eq!(raises(&all), 1);
        // A duplicate changes nothing.
        assert!(w.observe(&rule, &[(day(1, 9), 9.0)]).is_empty());
    }

    #[test]
    fn spo2_ten_minutes_of_every_reading() {
        let rule = AlertRule {
            rule_id: "s".into(),
            kind: VitalKind::Spo2,
            comparator: Comparator::Lt,
            threshold: 90.0,
            for_secs: 600,
        };
        let mut w = RuleWindow::default();
        let t0 = day(0, 0);
        let mut all = vec![];
        for m in 0..10 {
            all.extend(w.observe(&rule, &[(t0 + Duration::minutes(m), 88.0)]));
        }
        assert_eq!(raises(&all), 0, "nine minutes are not ten");
        all.extend(w.observe(&rule, &[(t0 + Duration::minutes(10), 87.0)]));
        assert_eq!(raises(&all), 1);
        let t = w.observe(&rule, &[(t0 + Duration::minutes(11), 95.0)]);
        assert!(matches!(t.as_slice(), [Transition::Resolve { .. }]));
    }
}

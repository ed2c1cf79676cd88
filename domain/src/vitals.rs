//! Vital signs: kinds, physiological ranges, readings, and ISO 8601 durations.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VitalKind {
    HeartRate,
    Spo2,
    SystolicBp,
    DiastolicBp,
    Temperature,
    Glucose,
    Pain,
    Steps,
}

impl VitalKind {
    pub const ALL: [VitalKind; 8] = [
        VitalKind::HeartRate,
        VitalKind::Spo2,
        VitalKind::SystolicBp,
        VitalKind::DiastolicBp,
        VitalKind::Temperature,
        VitalKind::Glucose,
        VitalKind::Pain,
        VitalKind::Steps,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VitalKind::HeartRate => "HEART_RATE",
            VitalKind::Spo2 => "SPO2",
            VitalKind::SystolicBp => "SYSTOLIC_BP",
            VitalKind::DiastolicBp => "DIASTOLIC_BP",
            VitalKind::Temperature => "TEMPERATURE",
            VitalKind::Glucose => "GLUCOSE",
            VitalKind::Pain => "PAIN",
            VitalKind::Steps => "STEPS",
        }
    }

    pub fn parse(raw: &str) -> Option<VitalKind> {
        VitalKind::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// Values a living patient's device can report (units: bpm, %, mmHg, mmHg, degrees
    /// Celsius, mg/dL, 0-10 scale, steps per reading). Outside: a device or entry error.
    pub fn range(self) -> (f64, f64) {
        match self {
            VitalKind::HeartRate => (20.0, 300.0),
            VitalKind::Spo2 => (50.0, 100.0),
            VitalKind::SystolicBp => (50.0, 300.0),
            VitalKind::DiastolicBp => (20.0, 200.0),
            VitalKind::Temperature => (25.0, 45.0),
            VitalKind::Glucose => (10.0, 1_000.0),
            VitalKind::Pain => (0.0, 10.0),
            VitalKind::Steps => (0.0, 100_000.0),
        }
    }

    /// The usual healthy band, for the digest's "out of range" periods.
    pub fn normal(self) -> (f64, f64) {
        match self {
            VitalKind::HeartRate => (50.0, 110.0),
            VitalKind::Spo2 => (92.0, 100.0),
            VitalKind::SystolicBp => (90.0, 140.0),
            VitalKind::DiastolicBp => (60.0, 90.0),
            VitalKind::Temperature => (36.0, 38.0),
            VitalKind::Glucose => (70.0, 180.0),
            VitalKind::Pain => (0.0, 6.0),
            VitalKind::Steps => (0.0, 100_000.0),
        }
    }
}

/// Readings further in the future than this are refused (device clocks drift a little).
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
pub const MAX_READINGS_PER_BATCH: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawReading {
    pub kind: VitalKind,
    pub value: f64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("reading {index} ({kind:?} {value} at {at}): {reason}")]
pub struct ReadingError {
    pub index: usize,
    pub kind: VitalKind,
    pub value: f64,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// Validates one reading: finite, in its physiological range, not in the future.
pub fn check_reading(index: usize, r: &RawReading, now: DateTime<Utc>) -> Result<(), ReadingError> {
    let fail = |reason: String| ReadingError {
        index,
        kind: r.kind,
        value: r.value,
        at: r.at,
        reason,
    };
    if !r.value.is_finite() {
        return Err(fail("value must be a finite number".into()));
    }
    let (lo, hi) = r.kind.range();
    if r.value < lo || r.value > hi {
        return Err(fail(format!("value must be within {lo}..={hi}")));
    }
    if r.at > now + MAX_CLOCK_SKEW {
        return Err(fail(
            "timestamp is more than 5 minutes in the future".into(),
        ));
    }
    Ok(())
}

/// Parses an ISO 8601 duration of days, hours, minutes and seconds (`P3D`, `PT10M`,
/// `P1DT12H`, `PT90S`, `P2W`). Years and months are refused: their length varies.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let bad = || format!("{raw:?} is not an ISO 8601 duration like P3D or PT10M");
    let rest = raw.strip_prefix('P').ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return Err(bad()),
        None => (rest, None),
    };
    let mut total = Duration::zero();
    let mut take = |part: &str, units: &[(char, i64)]| -> Result<(), String> {
        let mut number = String::new();
        let mut allowed = units.iter();
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let (_, secs) = allowed.by_ref().find(|(u, _)| *u == c).ok_or_else(bad)?;
            let n: i64 = number.parse().map_err(|_| bad())?;
            total += Duration::seconds(n.checked_mul(*secs).ok_or_else(bad)?);
            number.clear();
        }
        if number.is_empty() {
            Ok(())
        } else {
            Err(bad())
        }
    };
    take(date, &[('W', 604_800), ('D', 86_400)])?;
    if let Some(t) = time {
        take(t, &[('H', 3_600), ('M', 60), ('S', 1)])?;
    }
    if total <= Duration::zero() {
        return Err(format!("{raw:?} must be longer than zero"));
    }
    Ok(total)
}

/// Formats a duration back to ISO 8601 (the inverse of [`parse_duration`]).
pub fn format_duration(d: Duration) -> String {
    let secs = d.num_seconds();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3_600, (rem % 3_600) / 60, rem % 60);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if rem > 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
        if s > 0 {
            out.push_str(&format!("{s}S"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("P3D"), Ok(Duration::days(3)));
        assert_eq!(parse_duration("PT10M"), Ok(Duration::minutes(10)));
        assert_eq!(
            parse_duration("P1DT12H30M5S"),
            Ok(Duration::seconds(86_400 + 12 * 3_600 + 30 * 60 + 5))
        );
        assert_eq!(parse_duration("P2W"), Ok(Duration::days(14)));
        for bad in [
            "", "P", "PT", "3D", "P1M", "PT1D", "P1H", "PxD", "P0D", "P1DT",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in ["P3D", "PT10M", "P1DT12H30M5S", "PT90S"] {
            let parsed = parse_duration(d).unwrap();
            assert_eq!(parse_duration(&format_duration(parsed)), Ok(parsed));
        }
    }

    #[test]
    fn reading_checks() {
        let now = Utc::now();
        let ok = RawReading {
            kind: VitalKind::Spo2,
            value: 97.0,
            at: now,
        };
        assert!(check_reading(0, &ok, now).is_ok());
        let nan = RawReading {
            value: f64::NAN,
            ..ok.clone()
        };
        assert!(check_reading(0, &nan, now).is_err());
        let high = RawReading {
            value: 101.0,
            ..ok.clone()
        };
        assert_eq!(check_reading(3, &high, now).unwrap_err().index, 3);
        let future = RawReading {
            at: now + Duration::minutes(6),
            ..ok
        };
        assert!(check_reading(0, &future, now).is_err());
    }
}

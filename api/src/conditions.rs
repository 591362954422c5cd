//! The one helper that sets status conditions, so `lastTransitionTime` means
//! what Kubernetes says it means: when the status last changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition every SigningKey reports.
pub const READY: &str = "Ready";

/// Sets condition `type_` in `conditions`. The transition time is kept when the
/// status is unchanged (only reason or message moved) and set to `now` when the
/// status flips or the condition is new.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Time,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = match conditions.iter().find(|c| c.type_ == type_) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => now,
    };
    let new = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation,
        last_transition_time,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(slot) => *slot = new,
        None => conditions.push(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    #[test]
    fn keeps_transition_time_while_status_holds() {
        let mut c = Vec::new();
        set_condition(&mut c, READY, false, "Pending", "generating", Some(1), t("2026-01-01T00:00:00Z"));
        set_condition(&mut c, READY, false, "Pending", "still generating", Some(1), t("2026-01-01T00:01:00Z"));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(c[0].message, "still generating");
        set_condition(&mut c, READY, true, "KeyActive", "ok", Some(2), t("2026-01-01T00:02:00Z"));
        assert_eq!(c[0].last_transition_time, t("2026-01-01T00:02:00Z"));
        assert_eq!(c[0].status, "True");
        assert_eq!(c[0].observed_generation, Some(2));
    }

    #[test]
    fn other_conditions_are_left_alone() {
        let mut c = Vec::new();
        set_condition(&mut c, "Other", true, "R", "m", None, t("2026-01-01T00:00:00Z"));
        set_condition(&mut c, READY, true, "R", "m", None, t("2026-01-01T00:05:00Z"));
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].type_, "Other");
        assert_eq!(c[0].last_transition_time, t("2026-01-01T00:00:00Z"));
    }
}

//! Time partitions of a tenant's `measurements` on plain PostgreSQL (pure).
//!
//! The operator keeps partitions ahead of now and drops the ones wholly past retention;
//! what no partition takes lands in the DEFAULT partition, so no row is ever refused.
//! A partition's name carries its bounds (`measurements_p2026112300_2026112400`, UTC
//! hours), so planning needs only the names of the existing partitions and survives a
//! change of the chunk interval: new partitions start where the old ones end.

use jiff::{SignedDuration, Timestamp};

/// Partitions kept ready after the current one.
pub const PARTITIONS_AHEAD: i64 = 3;

const NAME_PREFIX: &str = "measurements_p";
const HOUR: i64 = 3600;

/// The half-open time range `[start, end)` of one partition, on whole UTC hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Partition {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Partition {
    pub fn name(&self) -> String {
        format!(
            "{NAME_PREFIX}{}_{}",
            self.start.strftime("%Y%m%d%H"),
            self.end.strftime("%Y%m%d%H")
        )
    }

    /// The partition a table name stands for; `None` for any other table (the default
    /// partition, or one somebody attached by hand, which the operator leaves alone).
    pub fn from_name(name: &str) -> Option<Partition> {
        let (start, end) = name.strip_prefix(NAME_PREFIX)?.split_once('_')?;
        let parse = |hours: &str| -> Option<Timestamp> {
            if hours.len() != 10 || !hours.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let text = format!(
                "{}-{}-{}T{}:00:00Z",
                &hours[0..4],
                &hours[4..6],
                &hours[6..8],
                &hours[8..10]
            );
            text.parse().ok()
        };
        let partition = Partition {
            start: parse(start)?,
            end: parse(end)?,
        };
        (partition.start < partition.end).then_some(partition)
    }
}

/// What to change so that partitions cover now and the next [`PARTITIONS_AHEAD`]
/// intervals, and none lies wholly before the retention cutoff.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: Vec<Partition>,
    pub drop: Vec<Partition>,
    /// Rows older than this go (from the default partition too).
    pub cutoff: Option<Timestamp>,
}

pub fn plan(
    existing: &[Partition],
    now: Timestamp,
    chunk_interval_hours: i32,
    retention_days: i32,
) -> Plan {
    let interval = i64::from(chunk_interval_hours.max(1)) * HOUR;
    let cutoff = now - SignedDuration::from_hours(i64::from(retention_days.max(1)) * 24);
    let mut existing = existing.to_vec();
    existing.sort();
    let drop: Vec<Partition> = existing
        .iter()
        .filter(|partition| partition.end <= cutoff)
        .copied()
        .collect();

    // Aligned on the interval since the epoch, so every operator replica and every
    // reconcile computes the same bounds.
    let aligned = now.as_second().div_euclid(interval) * interval;
    let horizon = aligned + (PARTITIONS_AHEAD + 1) * interval;
    let mut cursor = aligned;
    let mut create = Vec::new();
    let live: Vec<(i64, i64)> = existing
        .iter()
        .map(|p| (p.start.as_second(), p.end.as_second()))
        .filter(|&(_, end)| end > aligned)
        .collect();
    while cursor < horizon {
        if let Some(&(_, end)) = live
            .iter()
            .find(|&&(start, end)| start <= cursor && cursor < end)
        {
            cursor = end;
            continue;
        }
        // Up to the next existing partition, so a gap left by a changed interval is
        // filled without overlapping.
        let next_start = live
            .iter()
            .map(|&(start, _)| start)
            .filter(|&start| start > cursor)
            .min()
            .unwrap_or(i64::MAX);
        let end = (cursor + interval).min(next_start);
        create.push(Partition {
            start: at(cursor),
            end: at(end),
        });
        cursor = end;
    }
    Plan {
        create,
        drop,
        cutoff: Some(cutoff),
    }
}

fn at(second: i64) -> Timestamp {
    // Within jiff's range for any date this code will meet (years -9999..=9999).
    Timestamp::from_second(second).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn names(partitions: &[Partition]) -> Vec<String> {
        partitions.iter().map(Partition::name).collect()
    }

    #[test]
    fn names_carry_the_bounds_and_round_trip() {
        let partition = Partition {
            start: t("2026-11-23T00:00:00Z"),
            end: t("2026-11-24T00:00:00Z"),
        };
        assert_eq!(partition.name(), "measurements_p2026112300_2026112400");
        assert_eq!(Partition::from_name(&partition.name()), Some(partition));
        for other in [
            "measurements_default",
            "measurements_p2026112300",
            "measurements_p2026112400_2026112300",
            "measurements_p20261123xx_2026112400",
            "measurements_p2026113200_2026120100",
        ] {
            assert_eq!(Partition::from_name(other), None, "{other}");
        }
    }

    #[test]
    fn a_new_tenant_gets_the_current_partition_and_three_ahead() {
        let plan = plan(&[], t("2026-11-23T10:17:00Z"), 24, 365);
        assert_eq!(
            names(&plan.create),
            [
                "measurements_p2026112300_2026112400",
                "measurements_p2026112400_2026112500",
                "measurements_p2026112500_2026112600",
                "measurements_p2026112600_2026112700",
            ]
        );
        assert!(plan.drop.is_empty());
    }

    #[test]
    fn the_steady_state_plans_nothing_and_time_moving_on_adds_one() {
        let now = t("2026-11-23T10:17:00Z");
        let existing = plan(&[], now, 24, 365).create;
        assert!(plan(&existing, now, 24, 365).create.is_empty());
        let tomorrow = now + SignedDuration::from_hours(24);
        assert_eq!(
            names(&plan(&existing, tomorrow, 24, 365).create),
            ["measurements_p2026112700_2026112800"]
        );
    }

    #[test]
    fn partitions_wholly_past_retention_are_dropped_and_the_cutoff_given() {
        let now = t("2026-11-23T10:00:00Z");
        let old = Partition {
            start: t("2026-11-10T00:00:00Z"),
            end: t("2026-11-11T00:00:00Z"),
        };
        let straddling = Partition {
            start: t("2026-11-15T00:00:00Z"),
            end: t("2026-11-17T00:00:00Z"),
        };
        let plan = plan(&[old, straddling], now, 24, 7);
        assert_eq!(
            plan.drop,
            [old],
            "a partition with rows inside retention stays"
        );
        assert_eq!(plan.cutoff, Some(t("2026-11-16T10:00:00Z")));
    }

    #[test]
    fn a_changed_interval_fills_gaps_without_overlap() {
        let now = t("2026-11-23T10:00:00Z");
        // Daily partitions exist up to the 25th; the interval becomes 6 hours.
        let existing = [
            Partition {
                start: t("2026-11-23T00:00:00Z"),
                end: t("2026-11-24T00:00:00Z"),
            },
            Partition {
                start: t("2026-11-24T00:00:00Z"),
                end: t("2026-11-25T00:00:00Z"),
            },
        ];
        let plan = plan(&existing, now, 6, 365);
        assert!(plan.create.is_empty(), "now + 3×6 h is covered: {plan:?}");

        let later = plan_at(&existing, t("2026-11-24T20:00:00Z"));
        assert_eq!(later[0].start, t("2026-11-25T00:00:00Z"));
        let mut all: Vec<Partition> = existing.iter().copied().chain(later).collect();
        all.sort();
        assert!(all.windows(2).all(|pair| pair[0].end <= pair[1].start));
    }

    fn plan_at(existing: &[Partition], now: Timestamp) -> Vec<Partition> {
        plan(existing, now, 6, 365).create
    }
}

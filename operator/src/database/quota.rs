//! The database-storage quota (pure): when the writer loses and regains INSERT.
//!
//! Hysteresis keeps a tenant hovering at its limit from flapping: writes stop above the
//! quota and resume only below [`RESUME_PERCENT`] of it.

/// Writes resume once usage falls below this share of the quota.
pub const RESUME_PERCENT: i128 = 95;

/// Whether the writer may insert, given the schema's size, the quota in bytes and
/// whether it may insert now.
pub fn writes_allowed(bytes: i64, quota: i128, allowed_now: bool) -> bool {
    let bytes = i128::from(bytes);
    if bytes > quota {
        false
    } else if bytes * 100 < quota * RESUME_PERCENT {
        true
    } else {
        allowed_now
    }
}

/// `12.3 MiB`: sizes as people read them, for condition messages.
pub fn human_bytes(bytes: i128) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stop_above_the_quota_and_resume_below_95_percent() {
        let quota = 1000;
        assert!(writes_allowed(500, quota, true));
        assert!(
            writes_allowed(1000, quota, true),
            "at the quota is still within it"
        );
        assert!(!writes_allowed(1001, quota, true));
        // Between 95% and 100% nothing changes: no flapping at the limit.
        assert!(!writes_allowed(960, quota, false));
        assert!(writes_allowed(960, quota, true));
        assert!(writes_allowed(949, quota, false));
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10 * 1024 * 1024 * 1024), "10.0 GiB");
    }
}

//! What `/readyz` answers, and the log line that says why whenever that changes: an
//! operator reading `kubectl describe pod` sees "Readiness probe failed: 503" and finds
//! the cause in the pod's log, once per change rather than once per probe.

use std::sync::Mutex;

use tracing::{info, warn};

/// Why the service cannot take writes now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unready {
    /// Stable, for people and probes: what `/readyz` answers.
    pub reason: &'static str,
    /// The error behind it, for the log.
    pub cause: String,
}

/// The database is not reachable (the probe or a commit could not reach it).
pub const DATABASE_UNREACHABLE: &str = "the database is not reachable";

/// Ready or not, with the reason; logs each change of reason with its cause.
pub struct Readiness {
    state: Mutex<Option<Unready>>,
}

impl Readiness {
    /// Not ready until told otherwise, for `reason`; nothing logged yet (starting is not
    /// news).
    pub fn starting(reason: &'static str) -> Readiness {
        Readiness {
            state: Mutex::new(Some(Unready {
                reason,
                cause: "starting".into(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Unready>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ready; logged when it was not (after starting). Whether it logged.
    pub fn ready(&self) -> bool {
        let mut state = self.lock();
        match state.take() {
            Some(was) if was.cause != "starting" => {
                info!(was = was.reason, "ready again");
                true
            }
            _ => false,
        }
    }

    /// Not ready for `reason`; logged (with `cause`) when the reason is new. Whether it
    /// logged.
    pub fn unready(&self, reason: &'static str, cause: impl Into<String>) -> bool {
        let cause = cause.into();
        let mut state = self.lock();
        let new = state.as_ref().is_none_or(|now| now.reason != reason);
        if new {
            warn!(reason, %cause, "not ready");
        }
        *state = Some(Unready { reason, cause });
        new
    }

    /// `None` when ready.
    pub fn state(&self) -> Option<Unready> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_kept_until_ready_and_a_new_cause_keeps_the_reason() {
        let readiness = Readiness::starting(DATABASE_UNREACHABLE);
        assert_eq!(
            readiness.state().map(|state| state.reason),
            Some(DATABASE_UNREACHABLE)
        );
        readiness.ready();
        assert_eq!(readiness.state(), None);
        readiness.unready(DATABASE_UNREACHABLE, "connection refused");
        readiness.unready(DATABASE_UNREACHABLE, "timed out");
        assert_eq!(
            readiness.state(),
            Some(Unready {
                reason: DATABASE_UNREACHABLE,
                cause: "timed out".into()
            })
        );
        readiness.ready();
        assert_eq!(readiness.state(), None);
    }

    #[test]
    fn each_change_is_logged_once() {
        let readiness = Readiness::starting(DATABASE_UNREACHABLE);
        assert!(!readiness.ready(), "starting up is not news");
        let logged: Vec<bool> = (0..5)
            .map(|_| readiness.unready(DATABASE_UNREACHABLE, "connection refused"))
            .collect();
        assert_eq!(logged, [true, false, false, false, false]);
        assert!(readiness.unready("the queue is stuck", "no writer answers"));
        assert!(readiness.ready());
        assert!(!readiness.ready());
    }
}

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

    pub fn ready(&self) {
        let mut state = self.lock();
        if let Some(was) = state.take()
            && was.cause != "starting"
        {
            info!(was = was.reason, "ready again");
        }
    }

    /// Not ready for `reason`; logged (with `cause`) when the reason is new.
    pub fn unready(&self, reason: &'static str, cause: impl Into<String>) {
        let cause = cause.into();
        let mut state = self.lock();
        if state.as_ref().is_none_or(|now| now.reason != reason) {
            warn!(reason, %cause, "not ready");
        }
        *state = Some(Unready { reason, cause });
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

    /// The log lines `run` writes.
    fn logged(run: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn each_change_is_logged_once_with_its_cause() {
        let lines = logged(|| {
            let readiness = Readiness::starting(DATABASE_UNREACHABLE);
            readiness.ready();
            for _ in 0..5 {
                readiness.unready(DATABASE_UNREACHABLE, "connection refused");
            }
            readiness.unready("the queue is stuck", "no writer answers");
            readiness.ready();
            readiness.ready();
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains("not ready") && lines[0].contains("connection refused"));
        assert!(lines[1].contains("the queue is stuck") && lines[1].contains("no writer answers"));
        assert!(lines[2].contains("ready again"));
    }
}

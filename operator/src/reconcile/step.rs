//! The one shape every step of the pipeline returns (pure), so the pipeline reads as one
//! call per step.

use super::conditions::Observed;

/// What a step came to, with the conditions it observed.
#[derive(Debug)]
pub enum Step<T, E> {
    /// The step does not apply (no database configured).
    Skipped,
    /// The step waits for an earlier one; the condition says for what.
    Waiting(Observed),
    /// Done, with its result and its conditions (which may still be on their way, such
    /// as a rollout).
    Done(T, Vec<Observed>),
    /// Failed: the condition that says why, and the error the reconcile is retried with.
    Failed(Observed, E),
}

impl<T, E> Step<T, E> {
    /// The conditions the step contributes to the status, in order.
    pub fn conditions(&self) -> Vec<&Observed> {
        match self {
            Step::Skipped => Vec::new(),
            Step::Waiting(observed) | Step::Failed(observed, _) => vec![observed],
            Step::Done(_, observed) => observed.iter().collect(),
        }
    }

    pub fn done(&self) -> Option<&T> {
        match self {
            Step::Done(value, _) => Some(value),
            _ => None,
        }
    }

    /// The step's error, for the retry.
    pub fn into_result(self) -> Result<(), E> {
        match self {
            Step::Failed(_, error) => Err(error),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::conditions::{ConditionType, Reason};

    #[test]
    fn each_shape_gives_its_conditions_and_only_failures_an_error() {
        let ok = Observed::ok(ConditionType::NamespaceReady, Reason::Applied, "in place");
        let done: Step<u8, &str> = Step::Done(1, vec![ok.clone()]);
        assert_eq!(done.conditions(), [&ok]);
        assert_eq!(done.done(), Some(&1));
        assert!(done.into_result().is_ok());
        let skipped: Step<u8, &str> = Step::Skipped;
        assert!(skipped.conditions().is_empty() && skipped.into_result().is_ok());
        let failed: Step<u8, &str> = Step::Failed(ok.clone(), "boom");
        assert_eq!(failed.conditions(), [&ok]);
        assert_eq!(failed.into_result(), Err("boom"));
    }
}

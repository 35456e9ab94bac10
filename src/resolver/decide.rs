//! What one SWR answer about a digest means for it: scan its tags, ask again
//! (untagged yet, or SWR failing for now), drop it, or dead-letter it. Pure, so
//! every rule of the contract is tested without a network.

use std::time::Duration;

use crate::batcher::Backoff;
use crate::store::{ClaimedDigest, DeadLetterCause, DigestSettlement, Millis, NextAsk};
use crate::swr::{SwrError, SwrErrorKind};

/// How untagged digests are asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvePolicy {
    /// Asks in all that may find no tag before the digest is dropped.
    pub attempts: u32,
    /// How far apart those asks are.
    pub delay: Duration,
    /// How long a claimed digest belongs to its resolver.
    pub lease_ms: Millis,
}

/// One resolution's outcome: the `outcome` label of
/// `digest_resolutions_total`, one per [`crate::ops::metrics::DIGEST_RESOLUTION_OUTCOMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Resolved,
    UntaggedRetry,
    Untagged,
    NotFound,
    Retry,
    DeadLetter,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Resolved => "resolved",
            Outcome::UntaggedRetry => "untagged_retry",
            Outcome::Untagged => "untagged",
            Outcome::NotFound => "not_found",
            Outcome::Retry => "retry",
            Outcome::DeadLetter => "dead_letter",
        }
    }
}

/// What to do with the digest: `Resolved` names the tags to scan (the
/// source's filter still applies).
pub type Plan = DigestSettlement<Vec<String>>;

/// How the ask went: the artifact's tag names, SWR's error, or no answer
/// within the lease.
#[derive(Debug)]
pub enum Answer {
    Tags(Vec<String>),
    Failed(SwrError),
    TimedOut { budget: Duration },
}

pub fn decide(
    claimed: &ClaimedDigest,
    answer: Answer,
    policy: &ResolvePolicy,
    backoff: &Backoff,
    now: Millis,
) -> (Outcome, Plan) {
    let retry = |retry_after: Option<Duration>, last_error: String| {
        let failures = claimed.failures.saturating_add(1);
        let delay = backoff.delay(failures, retry_after);
        (
            Outcome::Retry,
            Plan::AskAgain(NextAsk {
                not_before: now.saturating_add(delay.as_millis() as Millis),
                untagged_answers: claimed.untagged_answers,
                failures,
                last_error,
            }),
        )
    };
    match answer {
        Answer::Tags(tags) if !tags.is_empty() => (Outcome::Resolved, Plan::Resolved(tags)),
        Answer::Tags(_) => {
            let untagged_answers = claimed.untagged_answers.saturating_add(1);
            if untagged_answers >= policy.attempts {
                (
                    Outcome::Untagged,
                    Plan::Drop {
                        reason: Outcome::Untagged.as_str(),
                    },
                )
            } else {
                (
                    Outcome::UntaggedRetry,
                    Plan::AskAgain(NextAsk {
                        not_before: now.saturating_add(policy.delay.as_millis() as Millis),
                        untagged_answers,
                        failures: claimed.failures,
                        last_error: format!(
                            "SWR names no tag for it yet ({untagged_answers} of {} asks)",
                            policy.attempts
                        ),
                    }),
                )
            }
        }
        Answer::TimedOut { budget } => retry(
            None,
            format!(
                "SWR gave no answer within {} ms, before the digest's lease ends",
                budget.as_millis()
            ),
        ),
        Answer::Failed(error) => match error.kind() {
            SwrErrorKind::Retryable => retry(error.retry_after(), error.to_string()),
            SwrErrorKind::NotFound => (
                Outcome::NotFound,
                Plan::Drop {
                    reason: Outcome::NotFound.as_str(),
                },
            ),
            SwrErrorKind::Unauthorized | SwrErrorKind::Rejected => (
                Outcome::DeadLetter,
                Plan::DeadLetter(DeadLetterCause {
                    http_status: error.status(),
                    error_code: error.error_code().map(str::to_string),
                    error_msg: error.to_string(),
                    request_id: error.request_id().map(str::to_string),
                }),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ImageType, Partition};
    use crate::store::UnresolvedDigest;

    const NOW: Millis = 1_800_000_000_000;

    fn policy() -> ResolvePolicy {
        ResolvePolicy {
            attempts: 3,
            delay: Duration::from_millis(2_000),
            lease_ms: 30_000,
        }
    }

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(1_000), Duration::from_secs(60))
    }

    fn claimed(untagged_answers: u32, failures: u32) -> ClaimedDigest {
        ClaimedDigest {
            id: 7,
            owner: "me".into(),
            claim: 1,
            lease_until: NOW + 30_000,
            digest: UnresolvedDigest {
                source: "swr-ee".into(),
                partition: Partition {
                    image_type: ImageType::InstanceImage,
                    instance_id: Some("inst".into()),
                    enterprise_project_id: None,
                },
                namespace: "team-a".into(),
                name: "api".into(),
                digest: "sha256:ab".into(),
                instance_url: None,
            },
            untagged_answers,
            failures,
            enqueued_at: NOW - 10,
        }
    }

    fn status(status: u16, retry_after: Option<Duration>) -> Answer {
        Answer::Failed(SwrError::Status {
            operation: "show_instance_artifact",
            status,
            error_code: Some("SWR.0001".into()),
            error_msg: Some("no".into()),
            request_id: Some("req-1".into()),
            retry_after,
        })
    }

    fn decide_now(claimed: &ClaimedDigest, answer: Answer) -> (Outcome, Plan) {
        decide(claimed, answer, &policy(), &backoff(), NOW)
    }

    /// `not_before`, `untagged_answers` and `failures` of an `AskAgain` plan.
    fn ask_again(plan: Plan) -> (Millis, u32, u32) {
        let Plan::AskAgain(next) = plan else {
            panic!("expected another ask, got {plan:?}");
        };
        (next.not_before, next.untagged_answers, next.failures)
    }

    #[test]
    fn tags_are_scanned() {
        let (outcome, plan) = decide_now(
            &claimed(0, 0),
            Answer::Tags(vec!["v1".into(), "latest".into()]),
        );
        assert_eq!(outcome, Outcome::Resolved);
        assert_eq!(plan, Plan::Resolved(vec!["v1".into(), "latest".into()]));
    }

    #[test]
    fn untagged_is_asked_again_until_the_attempts_run_out() {
        let (outcome, plan) = decide_now(&claimed(1, 4), Answer::Tags(vec![]));
        assert_eq!(outcome, Outcome::UntaggedRetry);
        let (not_before, untagged_answers, failures) = ask_again(plan);
        assert_eq!(not_before, NOW + 2_000);
        assert_eq!((untagged_answers, failures), (2, 4));

        let (outcome, plan) = decide_now(&claimed(2, 0), Answer::Tags(vec![]));
        assert_eq!(
            (outcome, plan),
            (Outcome::Untagged, Plan::Drop { reason: "untagged" })
        );
    }

    #[test]
    fn not_found_drops() {
        let (outcome, plan) = decide_now(&claimed(0, 0), status(404, None));
        assert_eq!(
            (outcome, plan),
            (
                Outcome::NotFound,
                Plan::Drop {
                    reason: "not_found"
                }
            )
        );
    }

    #[test]
    fn server_trouble_backs_off_after_retry_after() {
        for (answer, floor) in [
            (status(429, Some(Duration::from_secs(7))), 7_000),
            (status(503, None), 0),
            (
                Answer::TimedOut {
                    budget: Duration::from_secs(9),
                },
                0,
            ),
        ] {
            let (outcome, plan) = decide_now(&claimed(1, 2), answer);
            assert_eq!(outcome, Outcome::Retry);
            let (not_before, untagged_answers, failures) = ask_again(plan);
            // Third failure: the jitter ceiling is 4 s above the floor.
            assert!(
                (NOW + floor..=NOW + floor + 4_000).contains(&not_before),
                "{not_before}"
            );
            assert_eq!((untagged_answers, failures), (1, 3));
        }
    }

    #[test]
    fn refusals_are_dead_letters_with_swr_error() {
        for code in [400, 401, 403] {
            let (outcome, plan) = decide_now(&claimed(0, 0), status(code, None));
            assert_eq!(outcome, Outcome::DeadLetter);
            let Plan::DeadLetter(cause) = plan else {
                panic!("expected a dead letter, got {plan:?}");
            };
            assert_eq!(cause.http_status, Some(code));
            assert_eq!(cause.error_code.as_deref(), Some("SWR.0001"));
            assert_eq!(cause.request_id.as_deref(), Some("req-1"));
            assert!(cause.error_msg.contains("no"), "{}", cause.error_msg);
        }
    }
}

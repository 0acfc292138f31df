//! The transition rules in memory, at scale: every arrival order of every random history
//! converges on one document, and that document says what DESIGN.md's rules say.
//! `JOBTRACE_PURE_HISTORIES` sets how many histories (the longer run uses 100,000).
//! The same holds from a trace the original system wrote (no `attempt`).

use job_trace::ids::MessageId;
use job_trace::rules;
use job_trace_tests::histories::{
    arrival_order, check_legacy_semantics, check_semantics, legacy_trace, random_history,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn every_arrival_order_converges_on_the_documented_state() {
    let (histories, seed) = (histories(), seed());
    eprintln!("pure convergence: {histories} histories x 5 arrival orders, JOBTRACE_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let job = MessageId::parse("job").unwrap();
    for n in 0..histories {
        let history = random_history(&mut rng, job.clone());
        let expected = rules::replay(&history.messages).unwrap();
        if let Err(problem) = check_semantics(&history, &expected) {
            panic!("history {n} (JOBTRACE_SEED={seed}): {problem}\n{history:#?}");
        }
        for _ in 0..5 {
            let order = arrival_order(&mut rng, &history, &job);
            let converged = rules::replay(&order).unwrap();
            assert_eq!(
                converged, expected,
                "history {n} (JOBTRACE_SEED={seed}) diverges for arrivals {order:#?}"
            );
        }
    }
}

fn histories() -> usize {
    std::env::var("JOBTRACE_PURE_HISTORIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

fn seed() -> u64 {
    std::env::var("JOBTRACE_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

#[test]
fn every_arrival_order_converges_from_a_legacy_trace() {
    let (histories, seed) = (histories() / 4, seed());
    eprintln!("legacy convergence: {histories} histories x 3 arrival orders, JOBTRACE_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let job = MessageId::parse("job").unwrap();
    for n in 0..histories {
        let start = legacy_trace(&mut rng, &job);
        let history = random_history(&mut rng, job.clone());
        let from_start = |order: &[rules::Change]| {
            order.iter().fold(start.clone(), |doc, change| {
                rules::apply(Some(&doc), change)
            })
        };
        let expected = from_start(&history.messages);
        if let Err(problem) = check_legacy_semantics(&start, &history, &expected) {
            panic!("history {n} (JOBTRACE_SEED={seed}): {problem}\n{history:#?}");
        }
        for _ in 0..3 {
            let order = arrival_order(&mut rng, &history, &job);
            assert_eq!(
                from_start(&order),
                expected,
                "history {n} (JOBTRACE_SEED={seed}) from {start:#?} diverges for arrivals {order:#?}"
            );
        }
    }
}

//! The transition rules in memory, at scale: every arrival order of every random history
//! converges on one document, and that document says what DESIGN.md's rules say.
//! `JOBTRACE_PURE_HISTORIES` sets how many histories (the longer run uses 100,000).

use job_trace::ids::MessageId;
use job_trace::rules;
use job_trace_tests::histories::{arrival_order, check_semantics, random_history};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn every_arrival_order_converges_on_the_documented_state() {
    let histories: usize = std::env::var("JOBTRACE_PURE_HISTORIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("JOBTRACE_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
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

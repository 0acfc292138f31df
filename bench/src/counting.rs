//! Database commands per operation, counted on the wire by a proxy in front of the
//! database: the functions and the direct client all talk to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bson::Document;
use mongodb::options::ClientOptions;
use mongodb::Client;
use serde_json::{json, Value};

use crate::data;
use crate::direct::{self, Inputs};
use crate::proxy;
use crate::scenarios::{RequestInputs, Scenario};
use crate::setup::{now_ms, start_functions, Bench, COLLECTION, DATABASE, ORIGINAL_COLLECTION};

/// `settings.counted` of each operation; per operation the commands that did work (not
/// the driver's monitoring), by name, and the answers the HTTP loads got.
pub fn count_commands(bench: &mut Bench) -> Value {
    let counts = proxy::Counts::default();
    let proxy_port = bench.rt.block_on(proxy::start(
        0,
        bench.db_port(),
        counts.clone(),
        std::time::Duration::ZERO,
    ));
    let proxy_uri = format!("mongodb://127.0.0.1:{proxy_port}/?directConnection=true");
    let functions = start_functions(&bench.bins, &bench.work, &proxy_uri, "-counted");
    let n = bench.settings.counted;
    let http = reqwest::Client::new();
    let mut requests = RequestInputs {
        ids: bench.ids.clone(),
        users: bench.users.clone(),
        etags: std::fs::read_to_string(&bench.etags_file)
            .expect("etags file")
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
            .collect(),
        pushes: data::push_stream(&mut bench.rng, n / 3 + 1, 100, now_ms()),
    };
    let client = bench.rt.block_on(async {
        Client::with_options(ClientOptions::parse(&proxy_uri).await.expect("proxy uri"))
            .expect("client through the proxy")
    });
    let traces = client.database(DATABASE).collection::<Document>(COLLECTION);
    let original = client
        .database(DATABASE)
        .collection::<Document>(ORIGINAL_COLLECTION);
    let changes: Vec<_> = data::push_stream(&mut bench.rng, n / 3 + 1, 100, now_ms())
        .iter()
        .map(|b| data::change_of(b))
        .collect();
    let inputs = Inputs {
        ids: bench.ids.clone(),
        users: bench.users.clone(),
        changes: Arc::new(changes),
    };

    let mut rows = serde_json::Map::new();
    for scenario in Scenario::ALL.into_iter().filter(|s| s.counted()) {
        let (delta, answers) = if let Some(op) = scenario.direct() {
            bench.rt.block_on(async {
                direct::run_count(op, &traces, &original, &inputs, 5).await;
                let before = counts.snapshot();
                let errors = direct::run_count(op, &traces, &original, &inputs, n).await;
                (
                    proxy::delta(&before, &counts.snapshot()),
                    json!({ "errors": errors }),
                )
            })
        } else {
            // Fresh pushes for every load: one write strategy must not find the pushes of
            // the one before already applied (a redelivery that changes nothing costs cas
            // only its read), or the count would be of redeliveries.
            requests.pushes = data::push_stream(&mut bench.rng, n / 3 + 1, 100, now_ms());
            let rng = &mut bench.rng;
            let warm: Vec<_> = (0..20)
                .map(|i| scenario.request(&functions, &requests, i + n, rng))
                .collect();
            let measured: Vec<_> = (0..n)
                .map(|i| scenario.request(&functions, &requests, i, rng))
                .collect();
            bench.rt.block_on(async {
                for request in warm {
                    request.send(&http).await;
                }
                let before = counts.snapshot();
                let mut answers: BTreeMap<String, u64> = BTreeMap::new();
                for request in measured {
                    *answers
                        .entry(request.send(&http).await.to_string())
                        .or_default() += 1;
                }
                (proxy::delta(&before, &counts.snapshot()), json!(answers))
            })
        };
        let work: u64 = delta
            .iter()
            .filter(|(name, _)| !proxy::is_monitoring(name))
            .map(|(_, n)| n)
            .sum();
        // A read then a conditional write: the original pattern, and `cas` uncontended.
        let pattern_needs = if matches!(scenario, Scenario::Original | Scenario::PushCas) {
            2.0
        } else {
            1.0
        };
        rows.insert(
            scenario.key().into(),
            json!({
                "operations": n,
                "commands_per_operation": work as f64 / n as f64,
                "by_name": delta,
                "physical_limit": 1.0,
                "pattern_needs": pattern_needs,
                "answers": answers,
            }),
        );
    }
    drop(functions);
    Value::Object(rows)
}

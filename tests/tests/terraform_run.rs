//! Holds `terraform/`'s Cloud Run services and builds to the code they run.
//!
//! Each check reads `terraform/*.tf` with the harness's HCL reader (no provider, no
//! network) and evaluates what a plan would set, for the variable values a test gives:
//!
//! * in every mode (`api_auth`, the LINE settings, Firestore or not), the environment
//!   Terraform gives each service satisfies that service's own configuration reader, and
//!   trace-api's preconditions refuse exactly the modes it would refuse at start-up;
//! * trace-api's request timeout outlives the event stream and the long-poll, taken from
//!   the code's constants;
//! * trace-writer's concurrency times the code's per-push memory bound fits its memory;
//! * no image default acknowledges a push, `gcloud run deploy`'s writes are ignored, both
//!   services know their project, `STORE_WRITE` follows the database;
//! * the APIs and the build account's access that `gcloud builds submit` needs;
//! * the README's bootstrap and health checks;
//! * `terraform fmt -check -recursive terraform` is clean.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use job_trace::config::{from_iter, DatabaseConfig, ServerConfig};
use job_trace_tests::hcl::{
    attribute, block, ignore_changes, rust_constant, source, terraform_binary, Env, Evaluation,
    Terraform, Value,
};
use job_trace_tests::project_root;
use trace_api::ApiConfig;
use trace_writer::WriterConfig;

const PROJECT: &str = "my-project";
const BUILT_IMAGE: &str = "asia-northeast1-docker.pkg.dev/my-project/job-trace/trace:0123abc";

/// What the user puts into Secret Manager, standing in for each secret's value.
fn secret_value(variable: &str) -> String {
    match variable {
        "MONGO_URI" => "mongodb://trace-services:pw@127.0.0.1:27017/?tls=false".into(),
        "API_TOKEN" => "0123456789abcdef0123456789abcdef".into(),
        "LINE_CHANNEL_SECRET" => "line-channel-secret".into(),
        other => panic!("no stand-in value for the secret behind {other}"),
    }
}

fn deployable(mut values: Vec<(&'static str, Value)>) -> Vec<(&'static str, Value)> {
    values.extend([
        ("project_id", Value::from(PROJECT)),
        ("trace_writer_image", Value::from(BUILT_IMAGE)),
        ("trace_api_image", Value::from(BUILT_IMAGE)),
    ]);
    values
}

/// The process environment a service starts with: plain values as Terraform sets them,
/// secrets with the value the user stored. Every secret must be one the `secrets` output
/// lists, which the README's bootstrap fills before the services exist.
fn process_env(terraform: &Terraform, plan: &Evaluation, service: &str) -> Vec<(String, String)> {
    let terraform_secrets = match plan.output("secrets") {
        Value::Array(ids) => ids,
        other => panic!("output secrets is not a list: {other}"),
    };
    let env = plan.container_env(terraform.resource("google_cloud_run_v2_service", service));
    env.into_iter()
        .map(|(name, value)| match value {
            Env::Plain(value) => (name, value),
            Env::Secret(id) => {
                assert!(
                    terraform_secrets.contains(&Value::from(id.clone())),
                    "{service} reads {name} from secret {id}, which output `secrets` (the \
                     README's list to fill before the first deploy) leaves out"
                );
                let value = secret_value(&name);
                (name, value)
            }
        })
        .collect()
}

/// Whether the functions' own readers accept this environment (`Err` says why not).
fn api_starts(env: &[(String, String)]) -> Result<(), String> {
    shared_config_loads(env)?;
    ApiConfig::from_vars(env.to_vec())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn writer_starts(env: &[(String, String)]) -> Result<WriterConfig, String> {
    shared_config_loads(env)?;
    WriterConfig::from_vars(env.to_vec()).map_err(|e| e.to_string())
}

fn shared_config_loads(env: &[(String, String)]) -> Result<(), String> {
    from_iter::<ServerConfig>(env.to_vec())
        .map_err(|e| e.to_string())?
        .limits()
        .map_err(|e| e.to_string())?;
    let database = from_iter::<DatabaseConfig>(env.to_vec()).map_err(|e| e.to_string())?;
    DatabaseConfig::checked(database)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn every_mode_gives_each_function_the_configuration_it_needs() {
    let terraform = Terraform::load();
    let api = terraform.resource("google_cloud_run_v2_service", "trace_api");
    let writer = terraform.resource("google_cloud_run_v2_service", "trace_writer");
    let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused = 0;
    for auth in ["none", "token", "line"] {
        for channel_id in ["", "1657000000"] {
            for channel_secret in [false, true] {
                for jwks_url in ["https://api.line.me/oauth2/v2.1/certs", ""] {
                    for firestore in [true, false] {
                        let values = deployable(vec![
                            ("api_auth", Value::from(auth)),
                            ("line_channel_id", Value::from(channel_id)),
                            ("line_channel_secret_enabled", Value::Bool(channel_secret)),
                            ("line_jwks_url", Value::from(jwks_url)),
                            ("enable_firestore", Value::Bool(firestore)),
                        ]);
                        let mode = format!(
                            "api_auth={auth} line_channel_id={channel_id:?} \
                             line_channel_secret_enabled={channel_secret} \
                             line_jwks_url={jwks_url:?} enable_firestore={firestore}"
                        );
                        let plan = terraform.evaluate(&values);

                        let writer_refusals: Vec<String> = plan
                            .preconditions(writer)
                            .into_iter()
                            .filter(|(holds, _)| !holds)
                            .map(|(_, message)| message)
                            .collect();
                        assert!(writer_refusals.is_empty(), "{mode}: {writer_refusals:?}");
                        let writer_config =
                            writer_starts(&process_env(&terraform, &plan, "trace_writer"))
                                .unwrap_or_else(|error| {
                                    panic!("{mode}: trace-writer would not start: {error}")
                                });
                        assert_eq!(
                            writer_config.trace_project.as_deref(),
                            Some(PROJECT),
                            "{mode}: trace-writer does not know its project (GOOGLE_CLOUD_PROJECT)"
                        );
                        assert_eq!(
                            writer_config.completions.map(|target| target.topic),
                            Some(format!(
                                "projects/{PROJECT}/topics/{}",
                                jobtrace::topology::COMPLETIONS_TOPIC
                            )),
                            "{mode}: trace-writer does not publish completions to the topic \
                             Terraform creates"
                        );

                        let refusals: Vec<String> = plan
                            .preconditions(api)
                            .into_iter()
                            .filter(|(holds, _)| !holds)
                            .map(|(_, message)| message)
                            .collect();
                        let starts = api_starts(&process_env(&terraform, &plan, "trace_api"));
                        match (refusals.is_empty(), starts) {
                            (true, Ok(())) => *accepted.entry(auth.to_string()).or_default() += 1,
                            (false, Err(_)) => refused += 1,
                            (true, Err(error)) => panic!(
                                "{mode}: Terraform accepts this mode, but trace-api exits at \
                                 start-up: {error}"
                            ),
                            (false, Ok(())) => panic!(
                                "{mode}: trace-api would start, but Terraform refuses it: \
                                 {refusals:?}"
                            ),
                        }
                    }
                }
            }
        }
    }
    println!("modes Terraform accepts, by api_auth: {accepted:?}; refused at plan: {refused}");
    for auth in ["none", "token", "line"] {
        assert!(
            accepted.get(auth).is_some_and(|n| *n > 0),
            "no usable {auth} mode"
        );
    }
    assert!(
        refused > 0,
        "no mode was refused: the checks above compared nothing"
    );
}

/// The default LINE mode is the one the README describes: a channel ID and LINE's keys.
#[test]
fn line_mode_checks_tokens_against_lines_key_set_by_default() {
    let terraform = Terraform::load();
    let plan = terraform.evaluate(&deployable(vec![
        ("api_auth", Value::from("line")),
        ("line_channel_id", Value::from("1657000000")),
    ]));
    let env: BTreeMap<String, String> = process_env(&terraform, &plan, "trace_api")
        .into_iter()
        .collect();
    assert_eq!(
        env.get("LINE_JWKS_URL").map(String::as_str),
        Some("https://api.line.me/oauth2/v2.1/certs")
    );
    assert_eq!(env.get("API_AUTH").map(String::as_str), Some("line"));
}

#[test]
fn both_services_know_their_project_and_write_strategy() {
    let terraform = Terraform::load();
    for (firestore, chosen, expected) in [
        (true, "", "cas"),
        (false, "", "pipeline"),
        (true, "pipeline", "pipeline"),
        (false, "cas", "cas"),
    ] {
        let plan = terraform.evaluate(&deployable(vec![
            ("enable_firestore", Value::Bool(firestore)),
            ("store_write", Value::from(chosen)),
        ]));
        for service in ["trace_writer", "trace_api"] {
            let env: BTreeMap<String, String> = process_env(&terraform, &plan, service)
                .into_iter()
                .collect();
            let case = format!("{service}, enable_firestore={firestore}, store_write={chosen:?}");
            assert_eq!(
                env.get("STORE_WRITE").map(String::as_str),
                Some(expected),
                "{case}"
            );
            assert_eq!(
                env.get("GOOGLE_CLOUD_PROJECT").map(String::as_str),
                Some(PROJECT),
                "{case}"
            );
        }
    }
}

/// Seconds of a Cloud Run duration such as "300s".
fn seconds(duration: &str) -> u64 {
    duration
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{duration:?} is not a whole number of seconds"))
}

fn template_timeout(terraform: &Terraform, service: &str) -> u64 {
    let resource = terraform.resource("google_cloud_run_v2_service", service);
    let template = block(resource.body(), "template", service);
    let plan = terraform.evaluate(&deployable(vec![]));
    match plan.eval(attribute(template.body(), "timeout").expect("template.timeout")) {
        Ok(Value::String(timeout)) => seconds(&timeout),
        other => panic!("{service}: timeout gives {other:?}"),
    }
}

/// Room after the stream ends or the wait runs out: the last database read, the closing
/// bytes, the trip through Cloud Run's front end.
const TIMEOUT_MARGIN_SECONDS: u64 = 20;

#[test]
fn trace_api_timeout_outlives_the_event_stream_and_the_long_poll() {
    let terraform = Terraform::load();
    let api_source = "functions/trace-api/src";
    let (stream, stream_at) = rust_constant(api_source, "STREAM_LIFETIME");
    let (wait, wait_at) = rust_constant(api_source, "MAX_WAIT_SECONDS");
    let db_timeout = terraform.number_default("db_timeout_seconds") as u64;
    // A long-poll reads before it waits and after it wakes.
    let longest = stream.max(wait + 2 * db_timeout);
    let timeout = template_timeout(&terraform, "trace_api");
    println!(
        "STREAM_LIFETIME {stream} s ({}), MAX_WAIT_SECONDS {wait} s ({}), DB timeout \
         {db_timeout} s: the longest request takes {longest} s; trace-api's timeout {timeout} s",
        stream_at.display(),
        wait_at.display()
    );
    assert!(
        timeout >= longest + TIMEOUT_MARGIN_SECONDS,
        "trace-api's Cloud Run timeout ({timeout} s) would cut a request of {longest} s \
         (+{TIMEOUT_MARGIN_SECONDS} s margin)"
    );
    let ack_deadline = terraform.number_default("ack_deadline_seconds") as u64;
    let writer_timeout = template_timeout(&terraform, "trace_writer");
    assert!(
        writer_timeout >= ack_deadline,
        "trace-writer's timeout ({writer_timeout} s) is shorter than the ack deadline \
         ({ack_deadline} s) Pub/Sub waits for a push"
    );
}

const MIB: u64 = 1024 * 1024;

/// The code bounds what the pushes in flight hold (`PUSH_MEMORY_MIB`, each push reserving
/// up to `PUSH_MEMORY_BUDGET_BYTES`); Terraform must give that bound the container's memory
/// less what the process keeps (`WRITER_RESERVED_BYTES`), and refuse a memory that cannot
/// hold one push of the largest size.
#[test]
fn trace_writer_memory_bound_is_the_codes() {
    let terraform = Terraform::load();
    let writer = terraform.resource("google_cloud_run_v2_service", "trace_writer");
    let template = block(writer.body(), "template", "trace_writer");
    let plan = terraform.evaluate(&deployable(vec![]));
    let number = |local: &str| match plan.local(local) {
        Value::Number(n) => n.as_u64().expect("a whole number"),
        other => panic!("local.{local} is {other}"),
    };
    let budget = job_trace::push::PUSH_MEMORY_BUDGET_BYTES as u64;
    let push_mib = number("writer_push_memory_mib");
    assert!(
        push_mib * MIB >= budget && (push_mib - 1) * MIB < budget,
        "terraform's writer_push_memory_mib ({push_mib}) is not the code's \
         PUSH_MEMORY_BUDGET_BYTES ({budget} bytes) rounded up to MiB"
    );
    let base_mib = number("writer_base_memory_mib");
    assert_eq!(
        base_mib * MIB,
        trace_writer::config::WRITER_RESERVED_BYTES as u64,
        "terraform's writer_base_memory_mib is not the code's WRITER_RESERVED_BYTES"
    );
    let memory_mib = number("trace_writer_memory_mib");
    let container = block(template.body(), "containers", "template");
    let resources = block(container.body(), "resources", "containers");
    assert!(source(resources.body(), "limits").contains("var.trace_writer_memory"));
    let writer_env = match plan.local("writer_env") {
        Value::Object(env) => env,
        other => panic!("local.writer_env is {other}"),
    };
    assert_eq!(
        writer_env.get("PUSH_MEMORY_MIB"),
        Some(&Value::from((memory_mib - base_mib).to_string())),
        "PUSH_MEMORY_MIB is the container's memory less the process's own"
    );
    println!(
        "trace-writer: {memory_mib} MiB, {} MiB for pushes in flight, {push_mib} MiB for the \
         largest",
        memory_mib - base_mib
    );
    let fits = |values: Vec<(&'static str, Value)>| {
        let plan = terraform.evaluate(&deployable(values));
        plan.preconditions(writer)
            .into_iter()
            .all(|(holds, _)| holds)
    };
    assert!(fits(vec![]));
    assert!(fits(vec![("trace_writer_memory", Value::from("128Mi"))]));
    assert!(fits(vec![("trace_writer_memory", Value::from("1Gi"))]));
    assert!(!fits(vec![("trace_writer_memory", Value::from("100Mi"))]));
}

/// Each service's `MAX_CONNECTIONS` is what its concurrency and memory allow (twice the
/// concurrency and 16 for probes, at most an eighth of the memory at the code's
/// `CONNECTION_BYTES` each), trace-api's `MAX_EVENT_STREAMS` never more than its
/// concurrency, and the deadlines fit the services' request timeouts.
#[test]
fn connection_bounds_follow_concurrency_and_memory() {
    let terraform = Terraform::load();
    let plan = terraform.evaluate(&deployable(vec![]));
    let connection_kib = match plan.local("connection_kib") {
        Value::Number(n) => n.as_u64().expect("a whole number"),
        other => panic!("local.connection_kib is {other}"),
    };
    assert_eq!(
        connection_kib * 1024,
        job_trace::http::CONNECTION_BYTES as u64,
        "terraform's connection_kib is not the code's CONNECTION_BYTES"
    );
    let expected = |concurrency: u64, memory_mib: u64| {
        (2 * concurrency + 16).min(memory_mib * MIB / 8 / job_trace::http::CONNECTION_BYTES as u64)
    };
    for (concurrency, memory, memory_mib) in [
        (80, "256Mi", 256),
        (1, "128Mi", 128),
        (500, "256Mi", 256),
        (1000, "2Gi", 2048),
    ] {
        let plan = terraform.evaluate(&deployable(vec![
            ("trace_writer_concurrency", Value::from(concurrency)),
            ("trace_writer_memory", Value::from(memory)),
            ("trace_api_concurrency", Value::from(concurrency)),
            ("trace_api_memory", Value::from(memory)),
        ]));
        let case = format!("concurrency {concurrency}, memory {memory}");
        for service in ["trace_writer", "trace_api"] {
            let env = process_env(&terraform, &plan, service);
            let server: ServerConfig = from_iter(env.clone()).unwrap();
            let limits = server
                .limits()
                .unwrap_or_else(|e| panic!("{case}: {service}: {e}"));
            assert_eq!(
                limits.max_connections as u64,
                expected(concurrency, memory_mib),
                "{case}: {service}'s MAX_CONNECTIONS"
            );
            if service == "trace_api" {
                let api = ApiConfig::from_vars(env).unwrap();
                assert_eq!(
                    api.max_event_streams as u64,
                    concurrency.min(expected(concurrency, memory_mib)),
                    "{case}: MAX_EVENT_STREAMS"
                );
            }
        }
    }
    let writer_env: BTreeMap<String, String> = process_env(&terraform, &plan, "trace_writer")
        .into_iter()
        .collect();
    assert_eq!(
        writer_env.get("MAX_CONNECTIONS"),
        Some(&job_trace::config::DEFAULT_MAX_CONNECTIONS.to_string()),
        "the code's default MAX_CONNECTIONS is what Terraform's defaults give"
    );
    let body = terraform.number_default("body_read_timeout_seconds") as u64;
    let writer_timeout = template_timeout(&terraform, "trace_writer");
    assert!(
        body < writer_timeout,
        "a body may take {body} s, longer than trace-writer's request timeout ({writer_timeout} s)"
    );
    let refused = |header: i64, idle: i64| {
        let plan = terraform.evaluate(&deployable(vec![
            ("header_read_timeout_seconds", Value::from(header)),
            ("idle_timeout_seconds", Value::from(idle)),
        ]));
        ["trace_writer", "trace_api"].map(|service| {
            let resource = terraform.resource("google_cloud_run_v2_service", service);
            let refused = plan.preconditions(resource).iter().any(|(holds, _)| !holds);
            let starts = shared_config_loads(&process_env(&terraform, &plan, service)).is_ok();
            assert_eq!(
                refused, !starts,
                "{service}, header {header} s, idle {idle} s"
            );
            refused
        })
    };
    assert_eq!(refused(10, 60), [false, false]);
    assert_eq!(refused(30, 20), [true, true]);
}

#[test]
fn no_default_image_acknowledges_pushes() {
    let terraform = Terraform::load();
    for (service, variable) in [
        ("trace_writer", "trace_writer_image"),
        ("trace_api", "trace_api_image"),
    ] {
        let resource = terraform.resource("google_cloud_run_v2_service", service);
        let holds = |image: &str| {
            let mut values = deployable(vec![]);
            values.retain(|(name, _)| *name != variable);
            values.push((variable, Value::from(image)));
            terraform
                .evaluate(&values)
                .preconditions(resource)
                .into_iter()
                .all(|(holds, _)| holds)
        };
        let default = terraform.string_default(variable);
        assert!(
            !holds(&default),
            "{service} can be created with the default {variable} {default:?}"
        );
        assert!(
            !holds("us-docker.pkg.dev/cloudrun/container/hello"),
            "{service}: hello"
        );
        assert!(holds(BUILT_IMAGE), "{service}: a built image is refused");
    }
    // Pushes only reach trace-writer, so no subscription exists before it passes.
    for (address, subscription) in terraform.resources("google_pubsub_subscription") {
        let Some(push) = subscription
            .body()
            .blocks()
            .find(|b| b.identifier() == "push_config")
        else {
            continue;
        };
        assert!(
            source(push.body(), "push_endpoint")
                .contains("google_cloud_run_v2_service.trace_writer.uri"),
            "{address} pushes somewhere other than trace-writer"
        );
    }
}

#[test]
fn what_gcloud_run_deploy_writes_is_ignored() {
    let terraform = Terraform::load();
    for service in ["trace_writer", "trace_api"] {
        let ignored = ignore_changes(terraform.resource("google_cloud_run_v2_service", service));
        for written in [
            "template[0].containers[0].image",
            "template[0].annotations",
            "template[0].labels",
            "template[0].revision",
            "client",
            "client_version",
        ] {
            assert!(
                ignored.iter().any(|entry| entry == written),
                "{service}: lifecycle.ignore_changes lacks {written} ({ignored:?})"
            );
        }
    }
}

#[test]
fn gcloud_builds_submit_has_its_api_and_the_source_bucket() {
    let terraform = Terraform::load();
    let plan = terraform.evaluate(&deployable(vec![]));
    let services = plan.local("services");
    for api in [
        "cloudresourcemanager.googleapis.com",
        "cloudbuild.googleapis.com",
        "run.googleapis.com",
    ] {
        assert!(
            matches!(&services, Value::Array(list) if list.contains(&Value::from(api))),
            "local.services lacks {api}"
        );
    }
    let grants: Vec<_> = terraform
        .resources("google_project_iam_member")
        .into_iter()
        .filter(|(_, grant)| {
            source(grant.body(), "member") == "google_service_account.build.member"
        })
        .collect();
    let reads_source = grants
        .iter()
        .find(|(_, grant)| source(grant.body(), "role") == "\"roles/storage.objectViewer\"")
        .expect("the build account may read the objects gcloud builds submit uploads");
    let condition = block(reads_source.1.body(), "condition", &reads_source.0);
    let expression = match plan.eval(attribute(condition.body(), "expression").unwrap()) {
        Ok(Value::String(text)) => text,
        other => panic!("{other:?}"),
    };
    // The bucket itself (listing) and the objects in it (reading).
    let bucket = format!("projects/_/buckets/{PROJECT}_cloudbuild");
    assert!(
        expression.contains(&format!("\"{bucket}\"")),
        "{expression}"
    );
    assert!(
        expression.contains(&format!("\"{bucket}/\"")),
        "{expression}"
    );
}

/// cloudbuild.yaml's defaults push to the repository and deploy to the services Terraform
/// creates with its defaults.
#[test]
fn cloudbuild_deploys_to_what_terraform_creates() {
    let terraform = Terraform::load();
    let cloudbuild = fs::read_to_string(project_root().join("cloudbuild.yaml")).unwrap();
    let substitution = |key: &str| {
        cloudbuild
            .lines()
            .find_map(|line| line.trim().strip_prefix(&format!("{key}:")))
            .map(|value| value.trim().trim_matches('\'').to_string())
            .unwrap_or_else(|| panic!("cloudbuild.yaml has no substitution {key}"))
    };
    assert_eq!(substitution("_REGION"), terraform.string_default("region"));
    assert_eq!(
        substitution("_REPOSITORY"),
        terraform.string_default("artifact_repository")
    );
    for service in ["trace_writer", "trace_api"] {
        let resource = terraform.resource("google_cloud_run_v2_service", service);
        let name = source(resource.body(), "name");
        let name = name.trim_matches('"');
        assert!(
            cloudbuild.contains(&format!("gcloud run deploy {name} ")),
            "cloudbuild.yaml does not deploy {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The README's commands
// ---------------------------------------------------------------------------------------

fn readme(path: &str) -> String {
    fs::read_to_string(project_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Cloud Run's front end answers paths ending in `z` itself: a `curl` at `/healthz` from
/// outside gets Google's 404.
#[test]
fn readme_checks_health_on_paths_cloud_run_passes_on() {
    for path in ["README.md", "terraform/README.md"] {
        let text = readme(path);
        let curls: Vec<&str> = text.lines().filter(|line| line.contains("curl ")).collect();
        for line in &curls {
            assert!(
                !line.contains("/healthz") && !line.contains("/readyz"),
                "{path}: {line}"
            );
        }
    }
    let guide = readme("terraform/README.md");
    assert!(
        guide.contains("curl -s \"$API/health\""),
        "terraform/README.md checks /health"
    );
    assert!(
        guide.contains("curl -s \"$API/ready\""),
        "terraform/README.md checks /ready"
    );
}

/// Cloud Run refuses a revision that names a secret with no version: the first, targeted
/// apply creates every secret a mode may use, so that each can be given its value before
/// the services exist.
#[test]
fn readme_bootstrap_creates_every_secret_before_the_services() {
    let terraform = Terraform::load();
    let guide = readme("terraform/README.md");
    let first_apply: String = guide
        .split("terraform apply")
        .nth(1)
        .expect("terraform/README.md has a terraform apply")
        .lines()
        .take_while(|line| line.trim_end().ends_with('\\') || line.contains("-target="))
        .collect();
    for (address, _) in terraform.resources("google_secret_manager_secret") {
        assert!(
            first_apply.contains(&format!("-target={address}")),
            "the README's first apply does not create {address}: {first_apply}"
        );
    }
    assert!(
        !first_apply.contains("google_cloud_run_v2_service"),
        "the first apply must stop short of the services"
    );
}

#[test]
fn terraform_fmt_is_clean() {
    let binary = terraform_binary();
    let output = Command::new(&binary)
        .args(["fmt", "-check", "-recursive", "-diff", "terraform"])
        .current_dir(project_root())
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.display()));
    assert!(
        output.status.success(),
        "`terraform fmt -check -recursive terraform` is not clean; run \
         `terraform fmt -recursive terraform`:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

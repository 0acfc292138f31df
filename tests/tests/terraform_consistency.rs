//! Holds `terraform/` to the code.
//!
//! The index set is defined once, in `job_trace::indexes::seed_index_set()`. On MongoDB the
//! services create it at start-up (`ENSURE_INDEXES=true`); on Firestore with MongoDB
//! compatibility Terraform owns it. This test parses `terraform/*.tf` with hcl-rs (no
//! providers, no network) and fails when
//!
//! * the `google_firestore_index` resources differ from the non-TTL indexes of the code
//!   (fields, their order and direction, uniqueness), or are not MongoDB-compatible
//!   collection-group indexes on the traces collection;
//! * the TTL is not a single `google_firestore_field` on `EXPIRE_AT_FIELD`, the field the
//!   writer maintains (Firestore allows one TTL field per collection, so the seed's two TTL
//!   indexes are folded into `expire_at`);
//! * `terraform fmt -check -recursive terraform` is not clean (skipped only when Terraform
//!   is not installed and `CI` is not `true`).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use hcl::{Block, Body, Expression};
use job_trace::indexes::{seed_index_set, Direction, IndexSpec, EXPIRE_AT_FIELD};

/// The variable every Firestore index and the TTL field must be declared on.
const COLLECTION_VARIABLE: &str = "var.collection_job_traces";

/// One `google_firestore_index` resource, reduced to what must agree with the code.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TfIndex {
    /// `google_firestore_index.NAME`, for messages.
    resource: String,
    /// Field paths in declaration order (`__name__`, which Firestore appends itself, left
    /// out).
    fields: Vec<(String, Direction)>,
    unique: bool,
}

/// One `google_firestore_field` resource that carries a `ttl_config` block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TfTtlField {
    resource: String,
    field: String,
}

/// The part of an index both sides must agree on.
type IndexKey = (Vec<(String, Direction)>, bool);

fn code_key(spec: &IndexSpec) -> IndexKey {
    let fields = spec
        .fields
        .iter()
        .map(|(field, direction)| (field.to_string(), *direction))
        .collect();
    (fields, spec.unique)
}

fn tf_key(index: &TfIndex) -> IndexKey {
    (index.fields.clone(), index.unique)
}

fn describe(key: &IndexKey) -> String {
    let fields = key
        .0
        .iter()
        .map(|(field, direction)| format!("{field}: {}", direction.as_i32()))
        .collect::<Vec<_>>()
        .join(", ");
    if key.1 {
        format!("unique {{ {fields} }}")
    } else {
        format!("{{ {fields} }}")
    }
}

/// Compares the code's index set with Terraform's `google_firestore_index` resources.
///
/// TTL indexes of the code are left out: Firestore gets the TTL field instead (see
/// [`compare_ttl`]). The rest must match one to one, as a multiset: every code index has
/// exactly one Terraform index with the same fields (same order, same directions) and the
/// same uniqueness, and Terraform declares nothing else.
fn compare(code: &[IndexSpec], tf: &[TfIndex]) -> Result<(), String> {
    let mut unmatched: Vec<&TfIndex> = tf.iter().collect();
    let mut problems = Vec::new();
    for spec in code.iter().filter(|spec| !spec.is_ttl()) {
        let key = code_key(spec);
        match unmatched.iter().position(|index| tf_key(index) == key) {
            Some(position) => {
                unmatched.remove(position);
            }
            None => problems.push(format!(
                "index {} {} is in the code's index set (shared/src/indexes.rs) but no \
                 google_firestore_index in terraform/ declares it",
                spec.name,
                describe(&key)
            )),
        }
    }
    for index in unmatched {
        let key = tf_key(index);
        let hint = if code
            .iter()
            .any(|spec| spec.is_ttl() && code_key(spec) == key)
        {
            " (it is a TTL index of the code: on Firestore the TTL is the expire_at field, \
             not an index)"
        } else {
            ""
        };
        problems.push(format!(
            "{} {} is declared in terraform/ but is not in the code's index set{hint}",
            index.resource,
            describe(&key)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The code's TTL indexes become exactly one Firestore TTL field: the one the writer keeps.
fn compare_ttl(code: &[IndexSpec], ttl_fields: &[TfTtlField]) -> Result<(), String> {
    let code_has_ttl = code.iter().any(IndexSpec::is_ttl);
    match (code_has_ttl, ttl_fields) {
        (false, []) => Ok(()),
        (false, fields) => Err(format!(
            "the code's index set has no TTL index, but terraform/ declares TTL fields: {fields:?}"
        )),
        (true, []) => Err(format!(
            "the code's index set expires traces, but terraform/ declares no \
             google_firestore_field with ttl_config (expected one on {EXPIRE_AT_FIELD:?})"
        )),
        (true, [only]) if only.field == EXPIRE_AT_FIELD => Ok(()),
        (true, [only]) => Err(format!(
            "{} puts the TTL on {:?}, but the writer maintains {EXPIRE_AT_FIELD:?}",
            only.resource, only.field
        )),
        (true, fields) => Err(format!(
            "Firestore allows one TTL field per collection; terraform/ declares {}: {fields:?}",
            fields.len()
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Reading terraform/
// ---------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Every `terraform/*.tf` file, parsed, in file-name order.
fn parse_terraform() -> Vec<(String, Body)> {
    let dir = workspace_root().join("terraform");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "tf"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no .tf files in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            let body = hcl::parse(&text)
                .unwrap_or_else(|error| panic!("{} is not valid HCL: {error}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, body)
        })
        .collect()
}

/// `resource "TYPE" "NAME" { ... }` blocks of one type, as (`TYPE.NAME`, block).
fn resources<'a>(files: &'a [(String, Body)], kind: &str) -> Vec<(String, &'a Block)> {
    files
        .iter()
        .flat_map(|(_, body)| body.blocks())
        .filter(|block| block.identifier() == "resource")
        .filter_map(|block| match block.labels() {
            [resource_type, name] if resource_type.as_str() == kind => {
                Some((format!("{kind}.{}", name.as_str()), block))
            }
            _ => None,
        })
        .collect()
}

fn attribute<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes()
        .find(|attribute| attribute.key() == key)
        .map(|attribute| attribute.expr())
}

fn string_attribute(resource: &str, body: &Body, key: &str) -> Result<String, String> {
    match attribute(body, key) {
        Some(Expression::String(value)) => Ok(value.clone()),
        Some(other) => Err(format!(
            "{resource}: {key} must be a string literal, found `{other}`"
        )),
        None => Err(format!("{resource}: {key} is missing")),
    }
}

/// The attribute must be the collection variable, so that indexes, TTL and the services'
/// COLLECTION_JOB_TRACES cannot drift apart.
fn check_collection(resource: &str, body: &Body) -> Result<(), String> {
    match attribute(body, "collection") {
        Some(expr) if expr.to_string() == COLLECTION_VARIABLE => Ok(()),
        Some(expr) => Err(format!(
            "{resource}: collection must be {COLLECTION_VARIABLE}, found `{expr}`"
        )),
        None => Err(format!("{resource}: collection is missing")),
    }
}

fn read_index(resource: &str, block: &Block) -> Result<TfIndex, String> {
    let body = block.body();
    if body.blocks().any(|inner| inner.identifier() == "dynamic") {
        return Err(format!(
            "{resource}: declare fields as literal blocks (no dynamic blocks) so that this \
             test can read them"
        ));
    }
    let api_scope = string_attribute(resource, body, "api_scope")?;
    if api_scope != "MONGODB_COMPATIBLE_API" {
        return Err(format!(
            "{resource}: api_scope must be MONGODB_COMPATIBLE_API, found {api_scope}"
        ));
    }
    let query_scope = string_attribute(resource, body, "query_scope")?;
    if query_scope != "COLLECTION_GROUP" {
        return Err(format!(
            "{resource}: query_scope must be COLLECTION_GROUP (the MongoDB-compatible API \
             needs it), found {query_scope}"
        ));
    }
    check_collection(resource, body)?;
    let unique = match attribute(body, "unique") {
        None => false,
        Some(Expression::Bool(unique)) => *unique,
        Some(other) => {
            return Err(format!(
                "{resource}: unique must be a literal true or false, found `{other}`"
            ))
        }
    };
    let mut fields = Vec::new();
    for field in body.blocks().filter(|inner| inner.identifier() == "fields") {
        let path = string_attribute(resource, field.body(), "field_path")?;
        let order = string_attribute(resource, field.body(), "order")?;
        let direction = match order.as_str() {
            "ASCENDING" => Direction::Ascending,
            "DESCENDING" => Direction::Descending,
            other => return Err(format!("{resource}: unknown order {other} on {path}")),
        };
        if path != "__name__" {
            fields.push((path, direction));
        }
    }
    if fields.is_empty() {
        return Err(format!("{resource}: no fields"));
    }
    Ok(TfIndex {
        resource: resource.to_string(),
        fields,
        unique,
    })
}

fn tf_indexes(files: &[(String, Body)]) -> Result<Vec<TfIndex>, String> {
    resources(files, "google_firestore_index")
        .into_iter()
        .map(|(resource, block)| read_index(&resource, block))
        .collect()
}

fn tf_ttl_fields(files: &[(String, Body)]) -> Result<Vec<TfTtlField>, String> {
    let mut ttl_fields = Vec::new();
    for (resource, block) in resources(files, "google_firestore_field") {
        let body = block.body();
        if !body
            .blocks()
            .any(|inner| inner.identifier() == "ttl_config")
        {
            continue;
        }
        check_collection(&resource, body)?;
        let field = string_attribute(&resource, body, "field")?;
        ttl_fields.push(TfTtlField { resource, field });
    }
    Ok(ttl_fields)
}

// ---------------------------------------------------------------------------------------
// Terraform against the code
// ---------------------------------------------------------------------------------------

#[test]
fn firestore_indexes_match_the_code() {
    let files = parse_terraform();
    let tf = tf_indexes(&files).unwrap_or_else(|error| panic!("{error}"));
    if let Err(problems) = compare(&seed_index_set(), &tf) {
        panic!("terraform/ and job_trace::indexes::seed_index_set() disagree:\n{problems}");
    }
}

#[test]
fn ttl_is_the_field_the_writer_maintains() {
    let files = parse_terraform();
    let ttl = tf_ttl_fields(&files).unwrap_or_else(|error| panic!("{error}"));
    if let Err(problem) = compare_ttl(&seed_index_set(), &ttl) {
        panic!("{problem}");
    }
}

/// The removal tests start from the real, agreeing sets; when they already disagree,
/// `firestore_indexes_match_the_code` says why.
fn assert_baseline(code: &[IndexSpec], tf: &[TfIndex]) {
    assert!(
        compare(code, tf).is_ok(),
        "terraform/ and the code disagree before anything is removed; see \
         firestore_indexes_match_the_code"
    );
}

#[test]
fn removing_any_index_from_terraform_is_caught() {
    let code = seed_index_set();
    let tf = tf_indexes(&parse_terraform()).unwrap();
    assert_baseline(&code, &tf);
    for removed in 0..tf.len() {
        let mut fewer = tf.clone();
        let gone = fewer.remove(removed);
        let error = compare(&code, &fewer).expect_err("an index missing from terraform/");
        println!("without {}:\n{error}\n", gone.resource);
        assert!(error.contains("no google_firestore_index"), "{error}");
    }
}

#[test]
fn removing_any_index_from_the_code_is_caught() {
    let tf = tf_indexes(&parse_terraform()).unwrap();
    let code = seed_index_set();
    assert_baseline(&code, &tf);
    for removed in (0..code.len()).filter(|&i| !code[i].is_ttl()) {
        let mut fewer = code.clone();
        let gone = fewer.remove(removed);
        let error = compare(&fewer, &tf).expect_err("an index missing from the code");
        println!("without {} in the code:\n{error}\n", gone.name);
        assert!(error.contains("is not in the code's index set"), "{error}");
    }
}

#[test]
fn terraform_fmt_is_clean() {
    let in_ci = std::env::var("CI").is_ok_and(|value| value == "true");
    let candidates = ["terraform", "/usr/local/bin/terraform"];
    for binary in candidates {
        let output = Command::new(binary)
            .args(["fmt", "-check", "-recursive", "-diff", "terraform"])
            .current_dir(workspace_root())
            .env("CHECKPOINT_DISABLE", "1")
            .output();
        match output {
            Err(error) if error.kind() == ErrorKind::NotFound => continue,
            Err(error) => panic!("cannot run {binary}: {error}"),
            Ok(output) => {
                assert!(
                    output.status.success(),
                    "`terraform fmt -check -recursive terraform` is not clean; run \
                     `terraform fmt -recursive terraform`:\n{}\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                return;
            }
        }
    }
    assert!(
        !in_ci,
        "terraform is not installed, and CI=true: the fmt check must run in CI"
    );
    eprintln!("terraform is not installed: skipping the fmt check (it runs in CI)");
}

// ---------------------------------------------------------------------------------------
// The comparison itself
// ---------------------------------------------------------------------------------------

/// Terraform's view of the code's index set, as a correct terraform/ would declare it.
fn mirror(code: &[IndexSpec]) -> Vec<TfIndex> {
    code.iter()
        .filter(|spec| !spec.is_ttl())
        .map(|spec| TfIndex {
            resource: format!("google_firestore_index.{}", spec.name.replace('-', "m")),
            fields: code_key(spec).0,
            unique: spec.unique,
        })
        .collect()
}

#[test]
fn compare_accepts_the_same_set_in_any_order() {
    let code = seed_index_set();
    let mut tf = mirror(&code);
    tf.reverse();
    assert_eq!(compare(&code, &tf), Ok(()));
}

#[test]
fn compare_fails_when_terraform_lacks_an_index() {
    let code = seed_index_set();
    let mut tf = mirror(&code);
    tf.retain(|index| index.fields[0].0 != "status");
    let error = compare(&code, &tf).unwrap_err();
    println!("{error}");
    assert!(error.contains("status_1"), "{error}");
    assert!(error.contains("no google_firestore_index"), "{error}");
}

#[test]
fn compare_fails_when_the_code_lacks_an_index() {
    let code = seed_index_set();
    let tf = mirror(&code);
    let fewer: Vec<IndexSpec> = code
        .iter()
        .filter(|spec| spec.name != "line_user_id_1")
        .cloned()
        .collect();
    let error = compare(&fewer, &tf).unwrap_err();
    println!("{error}");
    assert!(
        error.contains("google_firestore_index.line_user_id_1"),
        "{error}"
    );
    assert!(error.contains("is not in the code's index set"), "{error}");
}

#[test]
fn compare_fails_on_a_flipped_direction_or_lost_uniqueness() {
    let code = seed_index_set();

    let mut flipped = mirror(&code);
    let created = flipped
        .iter_mut()
        .find(|index| index.fields[0].0 == "created_at")
        .unwrap();
    created.fields[0].1 = Direction::Ascending;
    let error = compare(&code, &flipped).unwrap_err();
    assert!(error.contains("created_at_-1"), "{error}");
    assert!(error.contains("{ created_at: 1 }"), "{error}");

    let mut not_unique = mirror(&code);
    not_unique
        .iter_mut()
        .find(|index| index.unique)
        .unwrap()
        .unique = false;
    let error = compare(&code, &not_unique).unwrap_err();
    assert!(error.contains("unique { message_id: 1 }"), "{error}");
}

#[test]
fn compare_fails_on_a_reordered_compound_index() {
    let mut code = seed_index_set();
    let mut compound = code[1].clone();
    compound.name = "line_user_id_1_created_at_-1".into();
    compound.fields = vec![
        ("line_user_id", Direction::Ascending),
        ("created_at", Direction::Descending),
    ];
    code.push(compound);
    let mut tf = mirror(&code);
    assert_eq!(compare(&code, &tf), Ok(()));
    tf.last_mut().unwrap().fields.reverse();
    let error = compare(&code, &tf).unwrap_err();
    assert!(error.contains("line_user_id_1_created_at_-1"), "{error}");
}

#[test]
fn compare_rejects_a_ttl_index_declared_as_an_index() {
    let code = seed_index_set();
    let mut tf = mirror(&code);
    tf.push(TfIndex {
        resource: "google_firestore_index.created_at_asc".into(),
        fields: vec![("created_at".into(), Direction::Ascending)],
        unique: false,
    });
    let error = compare(&code, &tf).unwrap_err();
    assert!(error.contains("TTL index"), "{error}");
}

#[test]
fn compare_ttl_wants_exactly_expire_at() {
    let code = seed_index_set();
    let expire_at = TfTtlField {
        resource: "google_firestore_field.expire_at_ttl".into(),
        field: EXPIRE_AT_FIELD.into(),
    };
    assert_eq!(compare_ttl(&code, std::slice::from_ref(&expire_at)), Ok(()));
    assert!(compare_ttl(&code, &[]).is_err());

    let created_at = TfTtlField {
        resource: "google_firestore_field.created_at_ttl".into(),
        field: "created_at".into(),
    };
    let error = compare_ttl(&code, std::slice::from_ref(&created_at)).unwrap_err();
    assert!(error.contains("expire_at"), "{error}");
    assert!(compare_ttl(&code, &[expire_at.clone(), created_at]).is_err());

    let without_ttl: Vec<IndexSpec> = code.into_iter().filter(|s| !s.is_ttl()).collect();
    assert_eq!(compare_ttl(&without_ttl, &[]), Ok(()));
    assert!(compare_ttl(&without_ttl, &[expire_at]).is_err());
}

#[test]
fn reader_rejects_what_it_cannot_hold_to_the_code() {
    let parse = |text: &str| vec![("inline.tf".to_string(), hcl::parse(text).unwrap())];

    let wrong_scope = parse(
        r#"
resource "google_firestore_index" "x" {
  collection  = var.collection_job_traces
  api_scope   = "ANY_API"
  query_scope = "COLLECTION_GROUP"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
}
"#,
    );
    assert!(tf_indexes(&wrong_scope).unwrap_err().contains("api_scope"));

    let other_collection = parse(
        r#"
resource "google_firestore_index" "x" {
  collection  = "traces"
  api_scope   = "MONGODB_COMPATIBLE_API"
  query_scope = "COLLECTION_GROUP"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
}
"#,
    );
    assert!(tf_indexes(&other_collection)
        .unwrap_err()
        .contains("collection"));

    let dynamic = parse(
        r#"
resource "google_firestore_index" "x" {
  collection  = var.collection_job_traces
  api_scope   = "MONGODB_COMPATIBLE_API"
  query_scope = "COLLECTION_GROUP"
  dynamic "fields" {
    for_each = ["status"]
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
}
"#,
    );
    assert!(tf_indexes(&dynamic).unwrap_err().contains("dynamic"));

    let with_name = parse(
        r#"
resource "google_firestore_index" "x" {
  collection  = var.collection_job_traces
  api_scope   = "MONGODB_COMPATIBLE_API"
  query_scope = "COLLECTION_GROUP"
  unique      = true
  fields {
    field_path = "message_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}
"#,
    );
    assert_eq!(
        tf_indexes(&with_name).unwrap(),
        vec![TfIndex {
            resource: "google_firestore_index.x".into(),
            fields: vec![("message_id".into(), Direction::Ascending)],
            unique: true,
        }]
    );
}

// ---------------------------------------------------------------------------------------
// Terraform's Pub/Sub against what `jobtrace provision` creates on the emulator
// ---------------------------------------------------------------------------------------

/// `variable "NAME" { default = ... }`.
fn variable_default<'a>(files: &'a [(String, Body)], name: &str) -> &'a Expression {
    files
        .iter()
        .flat_map(|(_, body)| body.blocks())
        .filter(|block| block.identifier() == "variable")
        .find(|block| matches!(block.labels(), [label] if label.as_str() == name))
        .and_then(|block| attribute(block.body(), "default"))
        .unwrap_or_else(|| panic!("variable {name} with a default"))
}

fn string_default(files: &[(String, Body)], name: &str) -> String {
    match variable_default(files, name) {
        Expression::String(value) => value.clone(),
        other => panic!("variable {name}: default is not a string: {other}"),
    }
}

fn number_default(files: &[(String, Body)], name: &str) -> i64 {
    match variable_default(files, name) {
        Expression::Number(value) => value.as_i64().expect("an integer"),
        other => panic!("variable {name}: default is not a number: {other}"),
    }
}

/// The expression of `key` as source text, whatever it is.
fn source(body: &Body, key: &str) -> String {
    attribute(body, key)
        .map(ToString::to_string)
        .unwrap_or_default()
}

#[test]
fn jobtrace_provisions_the_topics_and_subscriptions_terraform_declares() {
    use jobtrace::topology::*;
    let files = parse_terraform();
    assert_eq!(string_default(&files, "scrape_jobs_topic"), JOBS_TOPIC);
    assert_eq!(string_default(&files, "events_topic"), EVENTS_TOPIC);
    assert_eq!(
        string_default(&files, "dead_letter_topic"),
        DEAD_LETTER_TOPIC
    );
    assert_eq!(
        number_default(&files, "max_delivery_attempts"),
        i64::from(MAX_DELIVERY_ATTEMPTS)
    );
    assert_eq!(
        number_default(&files, "ack_deadline_seconds"),
        i64::from(ACK_DEADLINE_SECONDS)
    );

    let subscriptions = resources(&files, "google_pubsub_subscription");
    let hold = subscriptions
        .iter()
        .find(|(_, block)| source(block.body(), "topic").contains("dead_letter"))
        .expect("a subscription holding dead letters");
    assert_eq!(
        source(hold.1.body(), "name"),
        format!(
            "\"${{var.dead_letter_topic}}{}\"",
            &DEAD_LETTER_HOLD[DEAD_LETTER_TOPIC.len()..]
        ),
        "{}",
        hold.0
    );

    let pushing: Vec<_> = subscriptions
        .iter()
        .filter(|(_, block)| {
            block
                .body()
                .blocks()
                .any(|b| b.identifier() == "push_config")
        })
        .collect();
    assert_eq!(
        pushing.len(),
        PUSH_SUBSCRIPTIONS.len(),
        "push subscriptions"
    );
    for planned in PUSH_SUBSCRIPTIONS {
        let (resource, block) = pushing
            .iter()
            .find(|(_, block)| source(block.body(), "name") == format!("\"{}\"", planned.name))
            .unwrap_or_else(|| panic!("terraform has no push subscription {}", planned.name));
        let body = block.body();
        let topic = source(body, "topic");
        let topic_variable = if planned.topic == JOBS_TOPIC {
            "scrape_jobs"
        } else {
            "events"
        };
        assert!(topic.contains(topic_variable), "{resource}: topic {topic}");
        let ordered = matches!(
            attribute(body, "enable_message_ordering"),
            Some(Expression::Bool(true))
        );
        assert_eq!(ordered, planned.ordering, "{resource}: message ordering");
        assert_eq!(
            source(body, "ack_deadline_seconds"),
            "var.ack_deadline_seconds"
        );
        let push = body
            .blocks()
            .find(|b| b.identifier() == "push_config")
            .unwrap();
        let endpoint = source(push.body(), "push_endpoint");
        assert!(
            endpoint.ends_with(&format!("}}{PUSH_PATH}\"")),
            "{resource}: push endpoint {endpoint} does not end in {PUSH_PATH}"
        );
        let dead_letter = body
            .blocks()
            .find(|b| b.identifier() == "dead_letter_policy")
            .unwrap_or_else(|| panic!("{resource}: no dead_letter_policy"));
        assert_eq!(
            source(dead_letter.body(), "max_delivery_attempts"),
            "var.max_delivery_attempts"
        );
        assert!(source(dead_letter.body(), "dead_letter_topic").contains("dead_letter"));
    }
}

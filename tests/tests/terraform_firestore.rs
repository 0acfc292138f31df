//! Holds `terraform/`'s Firestore to the code.
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
//! * Firestore gets no change stream and trace-api runs with `API_CHANGE_STREAMS=off` on
//!   it unless told otherwise (terraform/README.md says why).

use job_trace::indexes::{seed_index_set, Direction, IndexSpec, EXPIRE_AT_FIELD};
use job_trace_tests::hcl::{
    attribute, string_attribute, Block, Body, Expression, Terraform, Value,
};

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

fn tf_indexes(terraform: &Terraform) -> Result<Vec<TfIndex>, String> {
    terraform
        .resources("google_firestore_index")
        .into_iter()
        .map(|(resource, block)| read_index(&resource, block))
        .collect()
}

fn tf_ttl_fields(terraform: &Terraform) -> Result<Vec<TfTtlField>, String> {
    let mut ttl_fields = Vec::new();
    for (resource, block) in terraform.resources("google_firestore_field") {
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
    let tf = tf_indexes(&Terraform::load()).unwrap_or_else(|error| panic!("{error}"));
    if let Err(problems) = compare(&seed_index_set(), &tf) {
        panic!("terraform/ and job_trace::indexes::seed_index_set() disagree:\n{problems}");
    }
}

#[test]
fn ttl_is_the_field_the_writer_maintains() {
    let ttl = tf_ttl_fields(&Terraform::load()).unwrap_or_else(|error| panic!("{error}"));
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
    let tf = tf_indexes(&Terraform::load()).unwrap();
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
    let tf = tf_indexes(&Terraform::load()).unwrap();
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
    let parse = Terraform::parse;

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
// Change streams on Firestore
// ---------------------------------------------------------------------------------------

fn api_change_streams(values: &[(&str, Value)]) -> Value {
    let terraform = Terraform::load();
    let plan = terraform.evaluate(values);
    plan.local("api_env")
        .as_object()
        .and_then(|env| env.get("API_CHANGE_STREAMS").cloned())
        .expect("trace-api's environment sets API_CHANGE_STREAMS")
}

/// Firestore has no change stream unless one is created, and terraform/ creates none
/// (terraform/README.md, "Change streams"): trace-api polls there, and keeps
/// `auto` on MongoDB, which has them.
#[test]
fn firestore_runs_trace_api_without_change_streams() {
    let terraform = Terraform::load();
    assert!(
        terraform
            .resources("google_firestore_change_stream")
            .is_empty(),
        "terraform/ creates a Firestore change stream: then API_CHANGE_STREAMS may stay auto \
         on Firestore; change this test and terraform/README.md together"
    );
    let firestore = ("enable_firestore", Value::Bool(true));
    let mongodb = ("enable_firestore", Value::Bool(false));
    assert_eq!(
        api_change_streams(std::slice::from_ref(&firestore)),
        Value::from("off")
    );
    assert_eq!(api_change_streams(&[mongodb]), Value::from("auto"));
    // What check-backend finds may turn them on again.
    let chosen = ("api_change_streams", Value::from("auto"));
    assert_eq!(
        api_change_streams(&[firestore, chosen]),
        Value::from("auto")
    );
}

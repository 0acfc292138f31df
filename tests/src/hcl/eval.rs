//! What a plan would compute from `terraform/`, for given variable values (see the parent
//! module's comment).

use std::collections::BTreeMap;

use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::Map;

use super::{attribute, block, blocks, Block, Body, Expression, Terraform, Value};

impl Terraform {
    /// What a plan with these variable values would compute (see the module's comment).
    /// Variables not given keep their defaults; those without one are null.
    pub fn evaluate(&self, values: &[(&str, Value)]) -> Evaluation<'_> {
        let mut vars = Map::new();
        for block in self.top_blocks("variable") {
            let [name] = block.labels() else { continue };
            let default = attribute(block.body(), "default")
                .map(|expr| {
                    expr.evaluate(&Context::new()).unwrap_or_else(|error| {
                        panic!("variable {}: default: {error}", name.as_str())
                    })
                })
                .unwrap_or(Value::Null);
            vars.insert(name.as_str().to_string(), default);
        }
        for (name, value) in values {
            assert!(
                vars.contains_key(*name),
                "terraform/ declares no variable {name}"
            );
            vars.insert(name.to_string(), value.clone());
        }
        let mut evaluation = Evaluation {
            terraform: self,
            vars,
            locals: Map::new(),
            resources: BTreeMap::new(),
        };
        evaluation.settle();
        evaluation
    }
}

/// One environment variable of a container: a value, or a Secret Manager secret's ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Env {
    Plain(String),
    Secret(String),
}

/// A plan's values, for one set of variable values.
pub struct Evaluation<'a> {
    terraform: &'a Terraform,
    vars: Map<String, Value>,
    locals: Map<String, Value>,
    /// `KIND` => `NAME` => the stand-in (an array of them under `count`).
    resources: BTreeMap<String, Map<String, Value>>,
}

impl Evaluation<'_> {
    fn context(&self) -> Context<'static> {
        let mut context = Context::new();
        context.declare_var("var", Value::Object(self.vars.clone()));
        context.declare_var("local", Value::Object(self.locals.clone()));
        let mut data = Map::new();
        for (kind, named) in &self.resources {
            match kind.strip_prefix("data.") {
                Some(kind) => {
                    data.insert(kind.to_string(), Value::Object(named.clone()));
                }
                None => context.declare_var(kind.as_str(), Value::Object(named.clone())),
            }
        }
        context.declare_var("data", Value::Object(data));
        declare_functions(&mut context);
        context
    }

    /// Evaluates locals and stand-ins again until nothing more can be known: each may
    /// read the others, in any order.
    fn settle(&mut self) {
        let declared: Vec<(String, String, &Block)> = self
            .terraform
            .files
            .iter()
            .flat_map(|(_, body)| body.blocks())
            .filter_map(|block| match (block.identifier(), block.labels()) {
                ("resource", [kind, name]) => {
                    Some((kind.as_str().to_string(), name.as_str().to_string(), block))
                }
                ("data", [kind, name]) => Some((
                    format!("data.{}", kind.as_str()),
                    name.as_str().to_string(),
                    block,
                )),
                _ => None,
            })
            .collect();
        let locals = self.terraform.locals();
        loop {
            let known = (self.locals.len(), format!("{:?}", self.resources));
            let context = self.context();
            for (name, expr) in &locals {
                if let Ok(value) = expr.evaluate(&context) {
                    self.locals.insert(name.clone(), value);
                }
            }
            for (kind, name, block) in &declared {
                let stand_in = stand_in(kind, name, block.body(), &context);
                let value = match attribute(block.body(), "count")
                    .or_else(|| attribute(block.body(), "for_each"))
                {
                    None => stand_in,
                    Some(count) => match count.evaluate(&context) {
                        Ok(Value::Number(n)) => {
                            Value::Array(vec![stand_in; n.as_u64().unwrap_or(0) as usize])
                        }
                        // for_each and unknown counts: one instance stands in.
                        _ => Value::Array(vec![stand_in]),
                    },
                };
                self.resources
                    .entry(kind.clone())
                    .or_default()
                    .insert(name.clone(), value);
            }
            if known == (self.locals.len(), format!("{:?}", self.resources)) {
                break;
            }
        }
    }

    /// An expression's value, or hcl-rs's reason why it has none.
    pub fn eval(&self, expr: &Expression) -> Result<Value, String> {
        expr.evaluate(&self.context())
            .map_err(|error| format!("`{expr}`: {error}"))
    }

    /// `local.NAME`; panics with the reason when it cannot be evaluated.
    pub fn local(&self, name: &str) -> Value {
        if let Some(value) = self.locals.get(name) {
            return value.clone();
        }
        let expr = self
            .terraform
            .locals()
            .into_iter()
            .find(|(local, _)| local == name)
            .map(|(_, expr)| expr)
            .unwrap_or_else(|| panic!("terraform/ declares no local {name}"));
        match self.eval(expr) {
            Ok(value) => value,
            Err(error) => panic!("local.{name} cannot be evaluated: {error}"),
        }
    }

    /// `output "NAME"`'s value.
    pub fn output(&self, name: &str) -> Value {
        let output = self
            .terraform
            .top_blocks("output")
            .find(|block| matches!(block.labels(), [label] if label.as_str() == name))
            .unwrap_or_else(|| panic!("terraform/ declares no output {name}"));
        let value = attribute(output.body(), "value").expect("an output has a value");
        self.eval(value)
            .unwrap_or_else(|error| panic!("output {name} cannot be evaluated: {error}"))
    }

    /// The preconditions of a resource: (holds, error message) each.
    pub fn preconditions(&self, resource: &Block) -> Vec<(bool, String)> {
        blocks(resource.body(), "lifecycle")
            .flat_map(|lifecycle| blocks(lifecycle.body(), "precondition"))
            .map(|precondition| {
                let body = precondition.body();
                let condition =
                    attribute(body, "condition").expect("a precondition has a condition");
                let holds = match self.eval(condition) {
                    Ok(Value::Bool(holds)) => holds,
                    other => panic!("precondition `{condition}` gives {other:?}"),
                };
                let message = attribute(body, "error_message")
                    .map(|message| match self.eval(message) {
                        Ok(Value::String(text)) => text,
                        _ => message.to_string(),
                    })
                    .unwrap_or_default();
                (holds, message)
            })
            .collect()
    }

    /// The environment of a Cloud Run service's first container, from its literal and
    /// dynamic `env` blocks.
    pub fn container_env(&self, service: &Block) -> BTreeMap<String, Env> {
        let template = block(service.body(), "template", "service");
        let container = block(template.body(), "containers", "template");
        let mut env = BTreeMap::new();
        let mut add = |context: &Context, content: &Body| {
            let eval = |key: &str| {
                attribute(content, key)
                    .map(|expr| match expr.evaluate(context) {
                        Ok(Value::String(text)) => text,
                        other => panic!("env {key} `{expr}` gives {other:?}"),
                    })
                    .unwrap_or_default()
            };
            let name = eval("name");
            let value = match content
                .blocks()
                .find(|block| block.identifier() == "value_source")
            {
                Some(source) => {
                    let secret = block(source.body(), "secret_key_ref", "value_source");
                    let id = attribute(secret.body(), "secret")
                        .map(|expr| match expr.evaluate(context) {
                            Ok(Value::String(text)) => text,
                            other => panic!("secret `{expr}` gives {other:?}"),
                        })
                        .unwrap_or_default();
                    Env::Secret(id)
                }
                None => Env::Plain(eval("value")),
            };
            assert!(
                env.insert(name.clone(), value).is_none(),
                "env {name} is set twice"
            );
        };
        let context = self.context();
        for literal in blocks(container.body(), "env") {
            add(&context, literal.body());
        }
        for dynamic in blocks(container.body(), "dynamic") {
            if !matches!(dynamic.labels(), [label] if label.as_str() == "env") {
                continue;
            }
            let for_each = attribute(dynamic.body(), "for_each").expect("for_each");
            let entries = match self.eval(for_each) {
                Ok(Value::Object(entries)) => entries,
                other => panic!("dynamic env: for_each `{for_each}` gives {other:?}"),
            };
            let content = block(dynamic.body(), "content", "dynamic env");
            for (key, value) in entries {
                let mut context = self.context();
                let mut each = Map::new();
                each.insert("key".to_string(), Value::String(key));
                each.insert("value".to_string(), value);
                context.declare_var("env", Value::Object(each));
                add(&context, content.body());
            }
        }
        env
    }
}

/// A resource as the configuration reads it: its attributes that evaluate now, and
/// stand-ins for the computed ones it reads.
fn stand_in(kind: &str, name: &str, body: &Body, context: &Context) -> Value {
    let mut object = Map::new();
    for attribute in body.attributes() {
        if let Ok(value) = attribute.expr().evaluate(context) {
            object.insert(attribute.key().to_string(), value);
        }
    }
    let text = |object: &Map<String, Value>, key: &str| match object.get(key) {
        Some(Value::String(text)) => Some(text.clone()),
        _ => None,
    };
    let project = text(&object, "project").unwrap_or_else(|| "project".into());
    let computed: Vec<(&str, String)> = match kind {
        "google_service_account" => {
            let email = format!(
                "{}@{project}.iam.gserviceaccount.com",
                text(&object, "account_id").unwrap_or_else(|| name.into())
            );
            vec![
                ("member", format!("serviceAccount:{email}")),
                (
                    "name",
                    format!("projects/{project}/serviceAccounts/{email}"),
                ),
                ("email", email),
            ]
        }
        "google_cloud_run_v2_service" => vec![("uri", format!("https://{name}-uc.a.run.app"))],
        "data.google_project" => vec![("number", "123456789012".into())],
        "google_firestore_database" => vec![("uid", "00000000-uid".into())],
        _ => vec![],
    };
    for (key, value) in computed {
        object
            .entry(key.to_string())
            .or_insert(Value::String(value));
    }
    let id = text(&object, "name").unwrap_or_else(|| name.into());
    object
        .entry("name".to_string())
        .or_insert(Value::String(name.into()));
    object
        .entry("id".to_string())
        .or_insert(Value::String(format!("projects/{project}/{kind}/{id}")));
    Value::Object(object)
}

/// The Terraform functions the configuration's locals and preconditions use.
fn declare_functions(context: &mut Context) {
    fn merge(args: FuncArgs) -> Result<Value, String> {
        let mut merged = Map::new();
        for arg in args.iter() {
            match arg {
                Value::Object(object) => merged.extend(object.clone()),
                Value::Null => {}
                other => return Err(format!("merge: not an object: {other}")),
            }
        }
        Ok(Value::Object(merged))
    }
    fn tostring(args: FuncArgs) -> Result<Value, String> {
        Ok(Value::String(match &args[0] {
            Value::String(text) => text.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => return Err(format!("tostring: {other}")),
        }))
    }
    fn contains(args: FuncArgs) -> Result<Value, String> {
        match &args[0] {
            Value::Array(list) => Ok(Value::Bool(list.contains(&args[1]))),
            other => Err(format!("contains: not a list: {other}")),
        }
    }
    fn length(args: FuncArgs) -> Result<Value, String> {
        Ok(Value::from(match &args[0] {
            Value::Array(list) => list.len(),
            Value::Object(object) => object.len(),
            Value::String(text) => text.chars().count(),
            other => return Err(format!("length: {other}")),
        }))
    }
    fn text_pair(name: &str, args: &FuncArgs) -> Result<(String, String), String> {
        match (&args[0], &args[1]) {
            (Value::String(a), Value::String(b)) => Ok((a.clone(), b.clone())),
            _ => Err(format!("{name}: two strings expected")),
        }
    }
    fn startswith(args: FuncArgs) -> Result<Value, String> {
        let (text, prefix) = text_pair("startswith", &args)?;
        Ok(Value::Bool(text.starts_with(&prefix)))
    }
    fn strcontains(args: FuncArgs) -> Result<Value, String> {
        let (text, part) = text_pair("strcontains", &args)?;
        Ok(Value::Bool(text.contains(&part)))
    }
    fn endswith(args: FuncArgs) -> Result<Value, String> {
        let (text, suffix) = text_pair("endswith", &args)?;
        Ok(Value::Bool(text.ends_with(&suffix)))
    }
    fn trimsuffix(args: FuncArgs) -> Result<Value, String> {
        let (text, suffix) = text_pair("trimsuffix", &args)?;
        Ok(Value::String(
            text.strip_suffix(suffix.as_str())
                .unwrap_or(&text)
                .to_string(),
        ))
    }
    fn concat(args: FuncArgs) -> Result<Value, String> {
        let mut all = Vec::new();
        for arg in args.iter() {
            match arg {
                Value::Array(list) => all.extend(list.iter().cloned()),
                other => return Err(format!("concat: not a list: {other}")),
            }
        }
        Ok(Value::Array(all))
    }
    fn toset(args: FuncArgs) -> Result<Value, String> {
        Ok(args[0].clone())
    }
    fn tonumber(args: FuncArgs) -> Result<Value, String> {
        match &args[0] {
            Value::Number(n) => Ok(Value::Number(*n)),
            Value::String(text) => text
                .parse::<i64>()
                .map(Value::from)
                .map_err(|error| format!("tonumber({text:?}): {error}")),
            other => Err(format!("tonumber: {other}")),
        }
    }
    let any = || ParamType::Any;
    for (name, func) in [
        ("merge", merge as fn(FuncArgs) -> Result<Value, String>),
        ("concat", concat),
    ] {
        context.declare_func(name, FuncDef::builder().variadic_param(any()).build(func));
    }
    for (name, func, arity) in [
        (
            "tostring",
            tostring as fn(FuncArgs) -> Result<Value, String>,
            1,
        ),
        ("contains", contains, 2),
        ("length", length, 1),
        ("startswith", startswith, 2),
        ("strcontains", strcontains, 2),
        ("endswith", endswith, 2),
        ("trimsuffix", trimsuffix, 2),
        ("toset", toset, 1),
        ("tonumber", tonumber, 1),
    ] {
        context.declare_func(
            name,
            FuncDef::builder().params(vec![any(); arity]).build(func),
        );
    }
}

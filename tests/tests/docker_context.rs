//! Holds the `Dockerfile` to the build context Docker would send.
//!
//! Cloud Build uploads the repository's files and `docker build .` sends them minus what
//! `.dockerignore` names. When that drops a workspace member, cargo cannot load the
//! workspace and no image builds (this is how `bench/` once broke every build). The test
//! rebuilds the context the way Docker does (tracked files minus `.dockerignore`, with
//! Docker's rules for `**`, `!`, a leading and a trailing `/`), copies it into a
//! temporary folder, loads the workspace there with `cargo metadata --locked --offline`,
//! and checks every `COPY`/`ADD` source of the Dockerfile against it. It also keeps
//! secrets, local state and bulky trees out of the context.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use job_trace_tests::project_root;

// ---------------------------------------------------------------------------------------
// .dockerignore, as moby/patternmatcher reads and matches it
// ---------------------------------------------------------------------------------------

/// One line of `.dockerignore`: a pattern compiled to a matcher, and whether it is an
/// exception (`!`), which puts back what earlier lines excluded.
struct Pattern {
    text: String,
    exception: bool,
    segments: Vec<Segment>,
}

/// A pattern is matched segment by segment against a path's `/`-separated parts.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// `**`: any number of whole parts, none included.
    AnyParts,
    /// A glob within one part (`*`, `?`, `[...]`, `\` escapes: Go's filepath.Match).
    Glob(String),
}

/// Go's `filepath.Clean` on a slash path: no empty or `.` parts, `..` resolved, no
/// trailing slash.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

impl Pattern {
    /// The preprocessing of `ignorefile.ReadAll`: trim, `!`, `filepath.Clean`, and a
    /// leading `/` dropped (patterns are relative to the context's root either way).
    fn parse(line: &str) -> Option<Pattern> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (exception, rest) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let mut text = clean(rest);
        if text.len() > 1 && text.starts_with('/') {
            text.remove(0);
        }
        let segments = text
            .split('/')
            .map(|part| {
                if part == "**" {
                    Segment::AnyParts
                } else {
                    Segment::Glob(part.to_string())
                }
            })
            .collect();
        Some(Pattern {
            text,
            exception,
            segments,
        })
    }

    /// Whether the pattern matches `path` itself (not its parents).
    fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        match_segments(&self.segments, &parts)
    }
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> bool {
    match segments.split_first() {
        None => parts.is_empty(),
        // A trailing `**` takes everything below (Docker: "**EOF accepts all").
        Some((Segment::AnyParts, [])) => true,
        Some((Segment::AnyParts, rest)) => {
            (0..=parts.len()).any(|skip| match_segments(rest, &parts[skip..]))
        }
        Some((Segment::Glob(glob), rest)) => match parts.split_first() {
            Some((part, tail)) => glob_match(glob, part) && match_segments(rest, tail),
            None => false,
        },
    }
}

/// Go's `filepath.Match` for one path part.
fn glob_match(glob: &str, name: &str) -> bool {
    let glob: Vec<char> = glob.chars().collect();
    let name: Vec<char> = name.chars().collect();
    glob_from(&glob, &name)
}

fn glob_from(glob: &[char], name: &[char]) -> bool {
    match glob.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|skip| glob_from(rest, &name[skip..])),
        Some(('?', rest)) => !name.is_empty() && glob_from(rest, &name[1..]),
        Some(('[', rest)) => {
            let Some(close) = rest.iter().position(|&c| c == ']') else {
                return false;
            };
            let (class, after) = (&rest[..close], &rest[close + 1..]);
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let (negated, class) = match class.split_first() {
                Some(('^', class)) => (true, class),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negated && glob_from(after, name_rest)
        }
        Some(('\\', rest)) if !rest.is_empty() => {
            name.first() == Some(&rest[0]) && glob_from(&rest[1..], &name[1..])
        }
        Some((c, rest)) => name.first() == Some(c) && glob_from(rest, &name[1..]),
    }
}

/// `.dockerignore` as a whole: `PatternMatcher.MatchesOrParentMatches`. Lines apply in
/// order, the last that matches decides; a pattern that matches a parent folder of the
/// path matches the path.
struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    fn parse(text: &str) -> DockerIgnore {
        DockerIgnore {
            patterns: text
                .trim_start_matches('\u{feff}')
                .lines()
                .filter_map(Pattern::parse)
                .collect(),
        }
    }

    fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for pattern in &self.patterns {
            // An exception can only put back what is excluded, and an exclusion only
            // take what is still in.
            if pattern.exception != excluded {
                continue;
            }
            let matched = pattern.matches(path)
                || (1..parts.len()).any(|n| pattern.matches(&parts[..n].join("/")));
            if matched {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// The exclusion patterns, for messages.
    fn describe(&self) -> String {
        self.patterns
            .iter()
            .map(|p| {
                if p.exception {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---------------------------------------------------------------------------------------
// The context and the Dockerfile
// ---------------------------------------------------------------------------------------

/// The files Cloud Build uploads: those git tracks.
fn tracked_files(root: &Path) -> Vec<String> {
    let output = Command::new("git")
        .args(["ls-files", "-z", "--cached"])
        .current_dir(root)
        .output()
        .expect("run git ls-files");
    assert!(
        output.status.success(),
        "git ls-files failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
        .stdout
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8(name.to_vec()).expect("UTF-8 file name"))
        // A file deleted in the work tree but not yet in the index is not uploaded.
        .filter(|name| root.join(name).exists())
        .collect()
}

fn dockerignore(root: &Path) -> DockerIgnore {
    let path = root.join(".dockerignore");
    DockerIgnore::parse(
        &fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display())),
    )
}

fn build_context(root: &Path) -> Vec<String> {
    let ignore = dockerignore(root);
    tracked_files(root)
        .into_iter()
        .filter(|file| !ignore.excludes(file))
        .collect()
}

/// One Dockerfile instruction per logical line (continuations joined, comments dropped).
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
}

/// The context paths every `COPY`/`ADD` reads (`--from` copies read another stage).
fn copy_sources(dockerfile: &str) -> Vec<String> {
    let mut sources = Vec::new();
    for instruction in instructions(dockerfile) {
        let mut words = instruction.split_whitespace();
        let keyword = words.next().unwrap_or_default().to_ascii_uppercase();
        if keyword != "COPY" && keyword != "ADD" {
            continue;
        }
        let rest: Vec<&str> = words.collect();
        if rest.iter().any(|word| word.starts_with("--from=")) {
            continue;
        }
        let arguments: Vec<String> = if rest.iter().any(|w| w.starts_with('[')) {
            let json = rest
                .iter()
                .skip_while(|w| w.starts_with("--"))
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            serde_json::from_str(&json)
                .unwrap_or_else(|error| panic!("{instruction}: bad JSON form: {error}"))
        } else {
            rest.iter()
                .filter(|w| !w.starts_with("--"))
                .map(|w| w.to_string())
                .collect()
        };
        assert!(arguments.len() >= 2, "{instruction}: no source");
        sources.extend(arguments[..arguments.len() - 1].iter().cloned());
    }
    sources
}

/// A source is in the context when it names a file there or a folder holding one.
fn in_context(context: &BTreeSet<String>, source: &str) -> bool {
    let source = clean(source);
    let source = source.trim_start_matches('/');
    if source == "." || source.is_empty() {
        return !context.is_empty();
    }
    let folder = format!("{source}/");
    context.contains(source) || context.iter().any(|file| file.starts_with(&folder))
}

/// The `--build-arg FUNCTION=...` values cloudbuild.yaml builds the Dockerfile with.
fn built_functions(root: &Path) -> Vec<String> {
    fs::read_to_string(root.join("cloudbuild.yaml"))
        .expect("read cloudbuild.yaml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- FUNCTION="))
        .map(|function| function.trim().to_string())
        .collect()
}

fn copy_into(root: &Path, files: &[String], dir: &Path) {
    for file in files {
        let to = dir.join(file);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(root.join(file), &to)
            .unwrap_or_else(|error| panic!("cannot copy {file}: {error}"));
    }
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// The host's target triple: the image builds for the platform it runs on, and crates for
/// other platforms are neither needed nor, offline, at hand.
fn host_triple() -> String {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// `cargo metadata --locked --offline` in `dir`: every member's manifest loads and
/// Cargo.lock agrees with all of them, as the build's `cargo build --locked` needs.
fn cargo_metadata(dir: &Path, host: &str) -> std::process::Output {
    Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--format-version=1"])
        .args(["--filter-platform", host])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("run cargo metadata")
}

#[test]
fn the_workspace_loads_from_the_docker_build_context() {
    let root = project_root();
    let context = build_context(&root);
    let dir = root.join("target/tmp/docker-context");
    let _ = fs::remove_dir_all(&dir);
    copy_into(&root, &context, &dir);
    let host = host_triple();
    let mut output = cargo_metadata(&dir, &host);
    if String::from_utf8_lossy(&output.stderr).contains("--offline was specified") {
        // A fresh machine may not have downloaded a member's dependencies yet (the bench's,
        // say); fetch them into cargo's cache once and load the workspace offline again.
        let fetch = Command::new(env!("CARGO"))
            .args(["fetch", "--locked", "--target", &host])
            .current_dir(&dir)
            .status()
            .expect("run cargo fetch");
        assert!(
            fetch.success(),
            "cargo fetch --locked failed in the context"
        );
        output = cargo_metadata(&dir, &host);
    }
    assert!(
        output.status.success(),
        "cargo cannot load the workspace from the Docker build context (.dockerignore: \
         {}):\n{}",
        dockerignore(&root).describe(),
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let members: BTreeSet<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|package| package["source"].is_null())
        .filter_map(|package| package["name"].as_str())
        .collect();
    let functions = built_functions(&root);
    assert!(!functions.is_empty(), "cloudbuild.yaml builds no FUNCTION");
    for function in &functions {
        assert!(
            members.contains(function.as_str()),
            "cloudbuild.yaml builds -p {function}, which the context's workspace lacks: \
             {members:?}"
        );
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn every_copy_source_of_the_dockerfile_is_in_the_context() {
    let root = project_root();
    let context: BTreeSet<String> = build_context(&root).into_iter().collect();
    let dockerfile = fs::read_to_string(root.join("Dockerfile")).unwrap();
    let sources = copy_sources(&dockerfile);
    assert!(!sources.is_empty(), "the Dockerfile copies nothing in");
    for source in sources {
        assert!(
            in_context(&context, &source),
            "the Dockerfile copies {source:?}, which is not in the build context"
        );
    }
}

/// Nothing secret, local or bulky may reach the image's build stage, whether or not git
/// tracks it: a local `docker build .` sends untracked files too.
#[test]
fn secrets_local_state_and_bulky_trees_stay_out() {
    let ignore = dockerignore(&project_root());
    let must_stay_out = [
        ".git/config",
        "target/debug/trace-api",
        "bench/target/release/bench",
        ".venv/bin/python",
        ".run/trace-writer.log",
        ".bench-tools/secantusd",
        "clients/js/node_modules/x/index.js",
        "tests/browser/node_modules/.bin/x",
        "fuzz/corpus/push_decode/0a1b",
        "fuzz/target/x",
        ".env",
        ".env.local",
        "deploy/key.pem",
        "sa.key",
        "terraform/terraform.tfvars",
        "terraform/terraform.tfstate",
        "terraform/.terraform/providers/x",
        "terraform/main.tf",
    ];
    let leaked: Vec<&str> = must_stay_out
        .into_iter()
        .filter(|path| !ignore.excludes(path))
        .collect();
    assert!(
        leaked.is_empty(),
        ".dockerignore lets these into the build context: {leaked:?}"
    );
    let must_go_in = [
        "Cargo.toml",
        "Cargo.lock",
        "shared/src/lib.rs",
        "functions/trace-writer/Cargo.toml",
        "functions/trace-api/src/main.rs",
        "cli/Cargo.toml",
        "tests/Cargo.toml",
        "bench/Cargo.toml",
        "bench/src/main.rs",
    ];
    let dropped: Vec<&str> = must_go_in
        .into_iter()
        .filter(|path| ignore.excludes(path))
        .collect();
    assert!(
        dropped.is_empty(),
        ".dockerignore drops what cargo reads: {dropped:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The matcher against Docker's documented and tested behaviour
// ---------------------------------------------------------------------------------------

fn excludes(ignore: &str, path: &str) -> bool {
    DockerIgnore::parse(ignore).excludes(path)
}

#[test]
fn matcher_follows_dockers_rules() {
    // A plain name is anchored at the root and takes its folder's contents.
    assert!(excludes("bench", "bench/Cargo.toml"));
    assert!(!excludes("bench", "tools/bench/Cargo.toml"));
    // A leading or trailing slash changes nothing.
    assert!(excludes("/bench/", "bench/src/main.rs"));
    assert!(excludes("./bench", "bench"));
    // `*` stays within one part; `**` spans any number, none included.
    assert!(excludes("*.md", "README.md"));
    assert!(!excludes("*.md", "terraform/README.md"));
    assert!(excludes("**/*.md", "terraform/README.md"));
    assert!(excludes("**/*.md", "README.md"));
    assert!(excludes("**/target", "target/debug/x"));
    assert!(excludes("**/target", "bench/target/x"));
    assert!(excludes("fuzz/**", "fuzz/corpus/a/b"));
    assert!(excludes("a/**/b", "a/b"));
    assert!(excludes("a/**/b", "a/x/y/b/c"));
    assert!(!excludes("a/**/b", "a/x/yb"));
    assert!(excludes("?.txt", "a.txt"));
    assert!(!excludes("?.txt", "ab.txt"));
    assert!(excludes("[a-c].rs", "b.rs"));
    assert!(!excludes("[^a-c].rs", "b.rs"));
    // `!` puts back what an earlier line took; the last matching line wins.
    assert!(!excludes("*.md\n!README.md", "README.md"));
    assert!(excludes("*.md\n!README.md", "CHANGES.md"));
    assert!(excludes("!README.md\n*.md", "README.md"));
    assert!(!excludes("docs\n!docs/keep.txt", "docs/keep.txt"));
    assert!(excludes("docs\n!docs/keep.txt", "docs/other.txt"));
    // Comments and blank lines are no patterns.
    assert!(!excludes("# bench\n\n", "bench/Cargo.toml"));
}

#[test]
fn dockerfile_reader_finds_context_sources_only() {
    let dockerfile = "FROM rust AS build\n# COPY ignored.txt /\nCOPY --chown=1:1 Cargo.toml \\\n  Cargo.lock ./\nADD [\"shared\", \"/src/shared\"]\nCOPY --from=build /out/function /usr/local/bin/function\n";
    assert_eq!(
        copy_sources(dockerfile),
        ["Cargo.toml", "Cargo.lock", "shared"]
    );
    let context: BTreeSet<String> = ["Cargo.toml", "shared/src/lib.rs"].map(String::from).into();
    assert!(in_context(&context, "Cargo.toml"));
    assert!(in_context(&context, "./shared/"));
    assert!(!in_context(&context, "Cargo.lock"));
    assert!(!in_context(&context, "share"));
}

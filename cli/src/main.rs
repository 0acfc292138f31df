use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use job_trace::ids::MessageId;
use job_trace::model::JobStatus;
use jobtrace::messages::{job_message, StatusReport};
use jobtrace::topology;
use jobtrace::transport::{self, Sink, Target, TargetChoice};
use jobtrace::watch::{describe, status_of, transition_key, Api, LOCAL_API};
use jobtrace::{check_backend, demo, migrate, sweep, Failure};

/// Exit codes of `watch` (and of `demo`), for scripts that wait on a job.
const EXIT_FAILED: u8 = 3;
const EXIT_NOT_FOUND: u8 = 4;

#[derive(Parser)]
#[command(
    name = "jobtrace",
    version,
    about = "Enqueue scrape jobs, report their statuses and watch their traces.",
    long_about = "Enqueue scrape jobs as the API does, report statuses as a worker does, and \
follow a job's trace through trace-api.\n\n\
Where messages go (the first that applies):\n  \
--writer / JOBTRACE_WRITER          post push bodies straight to a trace-writer (no Pub/Sub)\n  \
--emulator / PUBSUB_EMULATOR_HOST   the Pub/Sub emulator (project: --project, else 'demo')\n  \
--project / GOOGLE_CLOUD_PROJECT    real Pub/Sub, with Application Default Credentials\n  \
none of them                        the local stack of `make run`: its emulator on \
127.0.0.1:8085, else its trace-writer on 127.0.0.1:8081\n\n\
Quick start: `make run` in one terminal, then `jobtrace demo` in another.",
    after_help = "Exit codes: 0 done (watch: success), 1 error, 2 bad usage, 3 the job failed, 4 the job was not_found."
)]
struct Cli {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct TargetArgs {
    /// trace-writer's base URL: post push bodies to it directly instead of publishing.
    #[arg(long, env = "JOBTRACE_WRITER", global = true)]
    writer: Option<String>,
    /// The Pub/Sub emulator's HOST:PORT.
    #[arg(long, env = "PUBSUB_EMULATOR_HOST", global = true)]
    emulator: Option<String>,
    /// The Google Cloud project of the topics.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", global = true)]
    project: Option<String>,
    /// trace-api's base URL (watch, demo).
    #[arg(long, env = "JOBTRACE_API", default_value = LOCAL_API, global = true)]
    api: String,
    /// A bearer token for trace-api when it runs with API_AUTH=token or line.
    #[arg(
        long,
        env = "JOBTRACE_API_TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Publish a scrape job as the API does and print its message_id.
    Enqueue {
        /// The listing to scrape; without it the job is a batch check of the user's listings.
        #[arg(long)]
        url: Option<String>,
        /// The LINE user the job belongs to.
        #[arg(long = "user", value_name = "LINE_USER_ID")]
        user: String,
        /// Only check the listing for changes.
        #[arg(long)]
        check_only: bool,
    },
    /// Publish a status event for a job, as a worker does (ordering key = message_id).
    Report {
        /// The job's message_id (what `enqueue` printed).
        message_id: String,
        status: ReportedStatus,
        /// The worker's delivery attempt of the job; a later attempt may reopen a failed job.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        attempt: u32,
        /// What went wrong (failed, not_found).
        #[arg(long)]
        error: Option<String>,
        /// The result as JSON (success), e.g. '{"properties_found": 3}'.
        #[arg(long, value_parser = parse_json)]
        result: Option<serde_json::Value>,
    },
    /// Follow a job's trace live and exit when it is final: 0 success, 3 failed, 4 not_found.
    Watch {
        message_id: String,
        /// How long to wait for a trace that is not recorded yet.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        patience: u64,
    },
    /// Print the completion notifications trace-writer publishes (COMPLETIONS_TOPIC), one
    /// JSON line each, as they arrive.
    Completions {
        /// The pull subscription to read; created on the completions topic if missing
        /// (`make run` creates the default one at start, so nothing published since is
        /// missed).
        #[arg(long, default_value = topology::COMPLETIONS_SUBSCRIPTION)]
        subscription: String,
        /// Exit after this many notifications (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Create the topics and push subscriptions on the emulator, as Terraform declares them.
    Provision {
        /// trace-writer's base URL, where the subscriptions push.
        #[arg(long, default_value = transport::LOCAL_WRITER, value_name = "URL")]
        push_to: String,
        /// Move the emulator's message ids past this one (the largest numeric message_id
        /// already stored), so that a restarted emulator does not reuse old jobs' ids.
        #[arg(long, value_name = "MESSAGE_ID")]
        ids_past: Option<u64>,
    },
    /// Try every database feature the functions rely on (in a scratch collection it
    /// removes; never the traces) and print the STORE_WRITE and API_CHANGE_STREAMS to
    /// deploy with. Exit 0 when that configuration works, 1 otherwise.
    CheckBackend {
        /// The connection string (else MONGO_URI, else the local default).
        #[arg(long, value_name = "URI")]
        mongo_uri: Option<String>,
        /// The database (else MONGO_DATABASE, else mansion_watch).
        #[arg(long, value_name = "NAME")]
        database: Option<String>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print the largest numeric message_id stored (MONGO_URI, MONGO_DATABASE), 0 if none.
    HighestId,
    /// Enqueue a few jobs, play the worker, and show their traces converge.
    Demo {
        /// The LINE user of the demo's jobs (default: a new one).
        #[arg(long = "user", value_name = "LINE_USER_ID")]
        user: Option<String>,
        /// Milliseconds between the worker's steps.
        #[arg(long, default_value_t = 700)]
        pace_ms: u64,
    },
    /// Bring the original system's traces up to this system's fields (dry run by default).
    Migrate(migrate::MigrateArgs),
    /// Mark jobs failed that are queued or processing with nothing recorded for longer
    /// than --stalled-for (dry run by default; MONGO_URI, MONGO_DATABASE, STORE_WRITE).
    Sweep(sweep::SweepArgs),
}

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
enum ReportedStatus {
    Processing,
    Success,
    Failed,
    NotFound,
}

impl From<ReportedStatus> for JobStatus {
    fn from(status: ReportedStatus) -> Self {
        match status {
            ReportedStatus::Processing => JobStatus::Processing,
            ReportedStatus::Success => JobStatus::Success,
            ReportedStatus::Failed => JobStatus::Failed,
            ReportedStatus::NotFound => JobStatus::NotFound,
        }
    }
}

fn parse_json(raw: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))
}

fn message_id(raw: &str) -> Result<String, Failure> {
    MessageId::parse(raw)
        .map(|id| id.as_str().to_owned())
        .map_err(|e| Failure::new(format!("bad message_id: {e}")))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("jobtrace: {failure}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let TargetArgs {
        writer,
        emulator,
        project,
        api,
        token,
    } = cli.target;
    let choice = TargetChoice {
        writer,
        emulator,
        project,
    };
    match cli.command {
        Command::Enqueue {
            url,
            user,
            check_only,
        } => {
            let sink = connect(choice).await?;
            let id = sink
                .publish_job(&job_message(url.as_deref(), &user, check_only))
                .await?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            message_id: raw,
            status,
            attempt,
            error,
            result,
        } => {
            let id = message_id(&raw)?;
            let sink = connect(choice).await?;
            let mut report = StatusReport::new(&id, status.into(), attempt);
            report.error = error;
            report.result = result;
            sink.publish_event(&id, &report.payload()).await?;
            eprintln!(
                "reported {} (attempt {attempt}) for {id}",
                report.status.as_str()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch {
            message_id: raw,
            patience,
        } => {
            let id = message_id(&raw)?;
            let api = Api::new(&api, token)?;
            let mut last = None;
            let trace = api
                .follow(&id, Duration::from_secs(patience), |trace| {
                    let key = transition_key(trace);
                    if last.as_ref() != Some(&key) {
                        println!("{}", describe(trace));
                        last = Some(key);
                    }
                })
                .await?;
            Ok(match status_of(&trace) {
                Some(JobStatus::Success) => ExitCode::SUCCESS,
                Some(JobStatus::NotFound) => ExitCode::from(EXIT_NOT_FOUND),
                _ => ExitCode::from(EXIT_FAILED),
            })
        }
        Command::Completions {
            subscription,
            count,
        } => {
            let target = choice.resolve()?;
            let path = jobtrace::completions::ensure_subscription(&target, &subscription).await?;
            eprintln!("jobtrace: completion notifications from {path} ({target})");
            let mut seen = 0;
            jobtrace::completions::follow(&target, &path, |received| {
                println!("{}", received.line());
                seen += 1;
                count.is_none_or(|count| seen < count)
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Provision { push_to, ids_past } => {
            let target = choice.resolve()?;
            let Target::Emulator { host, project } = &target else {
                return Err(Failure::new(format!(
                    "provision creates the emulator's topics; {target} is not an emulator (a real \
                     project is provisioned by `terraform apply`, see terraform/README.md)"
                )));
            };
            for line in transport::provision(host, project, &push_to).await? {
                println!("{line}");
            }
            if let Some(highest) = ids_past.filter(|&highest| highest > 0) {
                let published = transport::advance_message_ids(host, project, highest).await?;
                println!("message ids moved past {highest} ({published} messages published)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckBackend {
            mongo_uri,
            database,
            json,
        } => {
            let mut config = job_trace::config::DatabaseConfig::from_env().map_err(Failure::of)?;
            if let Some(uri) = mongo_uri {
                config.mongo_uri = uri;
            }
            if let Some(database) = database {
                config.mongo_database = database;
            }
            let config = job_trace::config::DatabaseConfig::checked(config).map_err(Failure::of)?;
            let report = check_backend::run(&config).await?;
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::HighestId => {
            let config = job_trace::config::DatabaseConfig::from_env().map_err(Failure::of)?;
            println!("{}", jobtrace::stored::highest_id(&config).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { user, pace_ms } => {
            let sink = connect(choice).await?;
            let api = Api::new(&api, token)?;
            let user = user.unwrap_or_else(|| format!("Udemo{}", chrono::Utc::now().timestamp()));
            let converged = demo::run(&sink, &api, &user, Duration::from_millis(pace_ms)).await?;
            Ok(if converged {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Migrate(args) => migrate::main(args).await,
        Command::Sweep(args) => sweep::main(args).await,
    }
}

async fn connect(choice: TargetChoice) -> Result<Sink, Failure> {
    let target = choice.resolve()?;
    eprintln!("jobtrace: sending to {target}");
    Sink::connect(&target).await
}

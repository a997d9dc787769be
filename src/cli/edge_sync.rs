//! `dns-handling edge sync`: the agent beside a TLS terminator that reads files. It follows the
//! service's certificate stream (`GET /edge/certificates?after=…&follow=true`) and keeps a
//! directory equal to what the service serves ([`EdgeDirectory`]), running a command (say
//! `nginx -s reload`) once per batch of changes.
//!
//! It resumes from the position its directory recorded; when the service restarts it connects
//! again with backoff. A token or an address the service refuses stops it with a message saying
//! which, since waiting would not mend either.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;

use crate::edge::directory::{DirectoryError, EdgeDirectory};
use crate::edge::line::EdgeLine;

/// `dns-handling edge …`.
#[derive(Debug, clap::Args)]
pub struct EdgeArgs {
    /// What to do
    #[command(subcommand)]
    pub command: EdgeCommand,
}

/// The edge commands.
#[derive(Debug, clap::Subcommand)]
pub enum EdgeCommand {
    /// Keep a directory equal to the certificates the service serves (combined PEMs, .crt and
    /// .key files, a HAProxy crt-list, an nginx map), for terminators that read files
    Sync(SyncArgs),
}

/// The options of `edge sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The service
    #[arg(long, value_name = "URL", env = "DNS_HANDLING_SERVER")]
    pub server: String,
    /// An edge token (or the admin token)
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DNS_HANDLING_TOKEN",
        hide_env_values = true
    )]
    pub token: String,
    /// The directory to keep; it records where to resume in state.json
    #[arg(long, value_name = "DIR")]
    pub dir: std::path::PathBuf,
    /// A command run (by sh -c) once per batch of changes, e.g. "nginx -s reload"; at start too
    /// when the last batch's run did not succeed (say, the agent was killed first)
    #[arg(long, value_name = "CMD")]
    pub on_change: Option<String>,
    /// How long changes are gathered into one batch before the command runs
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
}

/// Runs `edge sync` until it fails for good.
pub fn run(args: EdgeArgs) -> anyhow::Result<ExitCode> {
    let EdgeCommand::Sync(args) = args.command;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let agent = EdgeSync::new(args)?;
        agent.run().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The service refused the token (401 or 403).
    #[error("the service at {server} refused the token ({status}): {message}")]
    TokenRefused {
        /// The service.
        server: String,
        /// Its status.
        status: StatusCode,
        /// What it said.
        message: String,
    },
    /// The address answers, but not as the service's edge stream does.
    #[error("{url} is not a dns-handling certificate stream ({status}): check --server")]
    NotTheService {
        /// The URL asked.
        url: String,
        /// Its status.
        status: StatusCode,
    },
    /// The first connection failed: a wrong address, or the service is not running.
    #[error("cannot reach the service at {server}: check --server")]
    Unreachable {
        /// The service.
        server: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// A line the agent does not understand: the service is newer than this agent. The line
    /// itself is not kept: it may carry a private key.
    #[error("the service sent a line of {bytes} bytes this agent does not understand")]
    UnknownLine {
        /// The line's length.
        bytes: usize,
        /// Why it was not understood.
        #[source]
        source: serde_json::Error,
    },
    /// The directory could not be written.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// What ended one connection to the stream, when it is worth connecting again.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    /// The connection failed or closed (the service restarted, say).
    #[error("{0}")]
    Connection(String),
    /// A status that may pass (a 5xx while the service starts).
    #[error("the service answered {0}")]
    Status(StatusCode),
}

/// The agent: the service, the directory, the change command.
pub struct EdgeSync {
    http: reqwest::Client,
    server: String,
    token: String,
    directory: EdgeDirectory,
    on_change: Option<String>,
    debounce: Duration,
}

impl EdgeSync {
    /// An agent for these options, its directory opened (and tidied).
    pub fn new(args: SyncArgs) -> Result<Self, SyncError> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                // Below the service's keep-alive (actix-web's 5 s): a connection the service
                // is closing that instant would fail the next request.
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .expect("a client without options that can fail"),
            server: args.server.trim_end_matches('/').to_owned(),
            token: args.token,
            directory: EdgeDirectory::open(&args.dir)?,
            on_change: args.on_change,
            debounce: args.debounce,
        })
    }

    /// Follows the stream for good: connects again with backoff (0.2 s doubling to 30 s) after
    /// the connection drops, stops on an answer that waiting cannot mend.
    pub async fn run(mut self) -> Result<(), SyncError> {
        // Killed after writing a batch and before its command ran, the agent finds nothing new
        // to write when it resumes: the terminator would keep its older files.
        if self.directory.reload_pending() {
            self.changed().await?;
        }
        let mut connected_once = false;
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.follow(&mut connected_once).await {
                Ok(interrupted) => {
                    if connected_once {
                        backoff = backoff.min(Duration::from_millis(200));
                    }
                    eprintln!("edge sync: {interrupted}; connecting again in {backoff:?}");
                }
                Err(error) => return Err(error),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// One connection: reads lines until it ends, applying each chunk's lines and running the
    /// change command `debounce` after the first change it has not run for.
    async fn follow(&mut self, connected_once: &mut bool) -> Result<Interrupted, SyncError> {
        let url = format!(
            "{}/edge/certificates?after={}&follow=true",
            self.server,
            self.directory.position()
        );
        let response = match self.http.get(&url).bearer_auth(&self.token).send().await {
            Ok(response) => response,
            Err(source) if !*connected_once => {
                return Err(SyncError::Unreachable {
                    server: self.server.clone(),
                    source,
                })
            }
            Err(error) => return Ok(Interrupted::Connection(error.to_string())),
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let message = response.text().await.unwrap_or_default();
            return Err(SyncError::TokenRefused {
                server: self.server.clone(),
                status,
                message,
            });
        }
        if status.is_server_error() {
            return Ok(Interrupted::Status(status));
        }
        let is_ndjson = (response.headers().get(reqwest::header::CONTENT_TYPE))
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/x-ndjson"));
        if !status.is_success() || !is_ndjson {
            return Err(SyncError::NotTheService { url, status });
        }
        *connected_once = true;
        self.read_lines(response).await
    }

    /// Reads the stream of one connection to its end.
    async fn read_lines(
        &mut self,
        mut response: reqwest::Response,
    ) -> Result<Interrupted, SyncError> {
        let mut pending = Vec::new();
        let mut change_due: Option<Instant> = None;
        loop {
            let settle = async {
                match change_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                () = settle => {
                    change_due = None;
                    self.changed().await?;
                    continue;
                }
            };
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) | Err(_) => {
                    // What was applied is on disk: reload for it before connecting again.
                    if change_due.is_some() {
                        self.changed().await?;
                    }
                    let why = chunk
                        .err()
                        .map_or("the service closed the stream".into(), |e| e.to_string());
                    return Ok(Interrupted::Connection(why));
                }
            };
            pending.extend_from_slice(&chunk);
            let Some(end) = pending.iter().rposition(|byte| *byte == b'\n') else {
                continue;
            };
            let complete: Vec<u8> = pending.drain(..=end).collect();
            let mut lines = Vec::new();
            for text in complete
                .split(|byte| *byte == b'\n')
                .filter(|line| !line.is_empty())
            {
                let line: EdgeLine =
                    serde_json::from_slice(text).map_err(|source| SyncError::UnknownLine {
                        bytes: text.len(),
                        source,
                    })?;
                lines.push(line);
            }
            if self.directory.apply(&lines)? && change_due.is_none() {
                change_due = Some(Instant::now() + self.debounce);
            }
        }
    }

    /// Runs the change command and records its success; a failure is reported (the command
    /// runs again at the next change or start), and the agent goes on.
    async fn changed(&mut self) -> Result<(), SyncError> {
        let Some(command) = &self.on_change else {
            return Ok(());
        };
        match tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .status()
            .await
        {
            Ok(status) if status.success() => self.directory.reloaded()?,
            Ok(status) => eprintln!("edge sync: --on-change {command:?} exited with {status}"),
            Err(error) => eprintln!("edge sync: cannot run --on-change {command:?}: {error}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

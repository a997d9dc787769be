//! Running wrk (`--latency`, a Lua script picking each request) and reading its report, shared by
//! the `readpath` and `edge` benches.

use std::process::Command;

/// The start of every script: each wrk thread seeds Lua's random numbers apart (by the time and
/// its own number), so that the threads do not ask for the same sequence of requests.
pub const SEEDED_THREADS: &str = r#"local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("number", threads)
end
function init(args)
  math.randomseed(os.time() * 100 + number)
end
"#;

/// A script asking `GET /domains/{id}` of a uniformly random one of `domains` seeded domains per
/// request, with `token`; `first_id` is the id of seeded domain 0, whose trailing zeros the
/// domain's number replaces (`bench/seed.rs`'s ids).
pub fn random_domain_script(first_id: &str, domains: usize, token: &str) -> String {
    let prefix = first_id.trim_end_matches('0');
    let digits = first_id.len() - prefix.len();
    format!(
        r#"{SEEDED_THREADS}local headers = {{ ["Authorization"] = "Bearer {token}" }}
request = function()
  local path = string.format("/domains/{prefix}%0{digits}d", math.random(0, {last}))
  return wrk.format("GET", path, headers)
end
"#,
        last = domains - 1,
    )
}

/// What one wrk run measured.
pub struct WrkResult {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// wrk's `Non-2xx` and `Socket errors` lines, if any.
    pub errors: String,
}

/// A wrk latency figure (`812.00us`, `1.23ms`, `2.01s`) in milliseconds.
fn milliseconds(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1e3,
        "ms" => number,
        "s" => number * 1e3,
        "m" => number * 60e3,
        _ => return None,
    })
}

fn parse_wrk(output: &str) -> anyhow::Result<WrkResult> {
    let field = |prefix: &str| {
        output
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.split_whitespace().nth(1))
    };
    let requests_per_second = output
        .lines()
        .find(|line| line.starts_with("Requests/sec:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no Requests/sec in wrk's output:\n{output}"))?;
    let p50_ms = field("50%")
        .and_then(milliseconds)
        .ok_or_else(|| anyhow::anyhow!("no p50 in wrk's output:\n{output}"))?;
    let p99_ms = field("99%")
        .and_then(milliseconds)
        .ok_or_else(|| anyhow::anyhow!("no p99 in wrk's output:\n{output}"))?;
    let requests = output
        .lines()
        .find(|line| line.contains("requests in"))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let errors = output
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("Non-2xx") || line.starts_with("Socket errors"))
        .collect::<Vec<_>>()
        .join("; ");
    Ok(WrkResult {
        requests_per_second,
        p50_ms,
        p99_ms,
        requests,
        errors,
    })
}

/// Runs wrk against `url` with `script`, `--latency`.
pub fn run(
    url: &str,
    script: &std::path::Path,
    threads: u32,
    connections: u32,
    duration: &str,
) -> anyhow::Result<WrkResult> {
    let output = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{duration}"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run wrk ({e}); apt-get install -y wrk"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_wrk(&text)
}

//! The agent against a small HTTP server of the test's that answers as scripted (the service's
//! side of the stream is tested against the service itself, end to end).

use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::Utc;

use super::*;
use crate::edge::line::ServedCertificate;

/// What the scripted server answers each connection, in turn; the last answer repeats.
#[derive(Clone)]
enum Answer {
    /// 200 with these NDJSON lines, then the stream ends.
    Lines(Vec<EdgeLine>),
    /// 200 with these lines, then the stream stays open.
    LinesThenHold(Vec<EdgeLine>),
    /// This status with a JSON error.
    Status(u16),
}

/// The requests the server received: their `after` and their `Authorization`.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, Option<String>)>,
}

struct Script {
    answers: Vec<Answer>,
    seen: Mutex<Seen>,
}

async fn stream(request: HttpRequest, script: web::Data<Arc<Script>>) -> HttpResponse {
    let after = request
        .query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("after="))
        .unwrap_or("")
        .to_owned();
    let authorization = (request.headers().get("authorization"))
        .map(|value| value.to_str().expect("ASCII").to_owned());
    let index = {
        let mut seen = script.seen.lock().expect("lock");
        seen.requests.push((after, authorization));
        seen.requests.len() - 1
    };
    let answer = script.answers[index.min(script.answers.len() - 1)].clone();
    let ndjson = |lines: &[EdgeLine]| -> String {
        lines
            .iter()
            .map(|line| serde_json::to_string(line).expect("JSON") + "\n")
            .collect()
    };
    match answer {
        Answer::Lines(lines) => HttpResponse::Ok()
            .content_type("application/x-ndjson")
            .body(ndjson(&lines)),
        Answer::LinesThenHold(lines) => {
            let first = futures::stream::once(async move {
                Ok::<_, actix_web::Error>(web::Bytes::from(ndjson(&lines)))
            });
            HttpResponse::Ok()
                .content_type("application/x-ndjson")
                .streaming(futures::StreamExt::chain(first, futures::stream::pending()))
        }
        Answer::Status(status) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("a status"))
                .json(serde_json::json!({"error": "scripted"}))
        }
    }
}

/// Starts the scripted server on a loopback port; gives its URL and the script.
fn serve(answers: Vec<Answer>) -> (String, Arc<Script>) {
    let script = Arc::new(Script {
        answers,
        seen: Mutex::default(),
    });
    let data = web::Data::new(script.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/edge/certificates", web::get().to(stream))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("binds");
    let url = format!("http://{}", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    (url, script)
}

fn served(position: i64, domain: &str, certificate: &str) -> EdgeLine {
    EdgeLine::Served(ServedCertificate {
        position,
        domain_id: format!("id-{domain}"),
        domain_name: domain.to_owned(),
        certificate_id: certificate.to_owned(),
        replaces: None,
        names: vec![domain.to_owned()],
        not_before: Utc::now(),
        not_after: Utc::now() + chrono::Duration::days(90),
        chain_pem: format!(
            "-----BEGIN CERTIFICATE-----\n{certificate}\n-----END CERTIFICATE-----\n"
        ),
        key_pem: "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n".into(),
    })
}

fn scratch() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("edge-sync-{}", uuid::Uuid::new_v4()))
}

fn agent(server: &str, dir: &std::path::Path, on_change: Option<String>) -> EdgeSync {
    EdgeSync::new(SyncArgs {
        server: server.to_owned(),
        token: "edge-secret".into(),
        dir: dir.to_owned(),
        on_change,
        debounce: Duration::from_millis(100),
    })
    .expect("an agent")
}

/// Runs an agent that must stop by itself, for at most five seconds.
async fn stopped(agent: EdgeSync) -> SyncError {
    tokio::time::timeout(Duration::from_secs(5), agent.run())
        .await
        .expect("stops by itself")
        .expect_err("stops with an error")
}

/// Waits until `done` holds, for at most five seconds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn the_agent_writes_what_is_served_runs_the_change_command_once_and_resumes_after_a_drop() {
    let (url, script) = serve(vec![
        Answer::Lines(vec![
            EdgeLine::SnapshotBegins { position: 5 },
            served(5, "a.example.test", "a1"),
            served(5, "b.example.test", "b1"),
            EdgeLine::SnapshotEnds { position: 5 },
        ]),
        Answer::LinesThenHold(vec![served(8, "a.example.test", "a2")]),
    ]);
    let dir = scratch();
    let counter = dir.with_extension("changes");
    let command = format!("echo changed >> {}", counter.display());
    let running = actix_web::rt::spawn(agent(&url, &dir, Some(command)).run());
    let changes = || std::fs::read_to_string(&counter).map_or(0, |text| text.lines().count());
    eventually("the renewal written after the reconnection", || {
        std::fs::read_to_string(dir.join("a.example.test.crt")).is_ok_and(|crt| crt.contains("a2"))
    })
    .await;
    eventually("a change command per connection's batch", || changes() == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(changes(), 2, "once per batch, not per line");
    assert!(
        std::fs::read_to_string(dir.join("b.example.test.crt")).is_ok_and(|crt| crt.contains("b1"))
    );
    running.abort();
    let seen = script.seen.lock().expect("lock");
    assert_eq!(
        seen.requests[0],
        ("0".into(), Some("Bearer edge-secret".into()))
    );
    assert_eq!(
        seen.requests[1].0, "5",
        "the second connection resumes after the snapshot"
    );
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_file(&counter).ok();
}

#[actix_web::test]
async fn started_again_the_agent_asks_for_what_came_after_its_recorded_position() {
    let (url, script) = serve(vec![Answer::LinesThenHold(vec![served(
        9,
        "a.example.test",
        "a1",
    )])]);
    let dir = scratch();
    let first = actix_web::rt::spawn(agent(&url, &dir, None).run());
    eventually("the first agent's file", || {
        dir.join("a.example.test.pem").exists()
    })
    .await;
    first.abort();
    let second = actix_web::rt::spawn(agent(&url, &dir, None).run());
    eventually("the second agent's request", || {
        script.seen.lock().expect("lock").requests.len() == 2
    })
    .await;
    second.abort();
    assert_eq!(script.seen.lock().expect("lock").requests[1].0, "9");
    std::fs::remove_dir_all(&dir).ok();
}

#[actix_web::test]
async fn started_again_after_a_batch_whose_command_never_ran_the_agent_runs_it() {
    let (url, _) = serve(vec![Answer::LinesThenHold(Vec::new())]);
    let dir = scratch();
    // The batch was written, then the agent was killed before its command ran.
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    (directory.apply(&[served(3, "a.example.test", "a1")])).expect("applies");
    drop(directory);
    let counter = dir.with_extension("changes");
    let command = format!("echo changed >> {}", counter.display());
    let running = actix_web::rt::spawn(agent(&url, &dir, Some(command)).run());
    let changes = || std::fs::read_to_string(&counter).map_or(0, |text| text.lines().count());
    eventually("the command run at start", || changes() == 1).await;
    running.abort();
    let reopened = EdgeDirectory::open(&dir).expect("opens");
    assert!(!reopened.reload_pending(), "the run is recorded");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_file(&counter).ok();
}

#[actix_web::test]
async fn a_refused_token_stops_the_agent_with_a_message_that_says_so() {
    for status in [401, 403] {
        let (url, _) = serve(vec![Answer::Status(status)]);
        let dir = scratch();
        let error = stopped(agent(&url, &dir, None)).await;
        assert!(matches!(error, SyncError::TokenRefused { .. }), "{error:?}");
        assert!(error.to_string().contains("refused the token"), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[actix_web::test]
async fn an_address_that_is_not_the_service_stops_the_agent_with_a_message_that_says_so() {
    let (url, _) = serve(vec![Answer::Status(404)]);
    let dir = scratch();
    let error = stopped(agent(&format!("{url}/elsewhere"), &dir, None)).await;
    assert!(error.to_string().contains("check --server"), "{error}");
    // Nothing listens there at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let error = stopped(agent(&format!("http://127.0.0.1:{port}"), &dir, None)).await;
    assert!(matches!(error, SyncError::Unreachable { .. }), "{error:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[actix_web::test]
async fn a_service_that_answers_503_is_asked_again_until_it_streams() {
    let (url, script) = serve(vec![
        Answer::Status(503),
        Answer::LinesThenHold(vec![served(3, "a.example.test", "a1")]),
    ]);
    let dir = scratch();
    let running = actix_web::rt::spawn(agent(&url, &dir, None).run());
    eventually("the file after the 503", || {
        dir.join("a.example.test.pem").exists()
    })
    .await;
    running.abort();
    assert_eq!(script.seen.lock().expect("lock").requests.len(), 2);
    std::fs::remove_dir_all(&dir).ok();
}

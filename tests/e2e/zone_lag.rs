//! Two replicas serve the delegation zone, each from its own follower of the feed; the CA may
//! ask either. Replica B's follower is held back honestly: a test transaction locks B's row in
//! `zone_followers`, so B's follower blocks on its next write of it and applies nothing more
//! (as a lock or a slow database would hold it), while B's process and HTTP API run on.
//! Unbound sends the zone to replica A, whose poller then finds its order's values at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dns_handling_testkit::{
    delegate_zone, dig, free_dns_port, CaFront, FrontTarget, Service, StoreKind,
};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, Row};

use crate::delegation::{delegated, verified_by_cname, ZONE};
use crate::BINARY;

/// `GET /readyz`: its status and body.
async fn readyz(service: &Service) -> (u16, Value) {
    let response = reqwest::get(service.url("/readyz")).await.expect("readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Locks replica B's row in `zone_followers` in a transaction of `connection`: B's follower
/// blocks at its next write of it (the next commit it applies, or its heartbeat).
async fn hold_back(connection: &mut PgConnection) {
    sqlx::query("BEGIN")
        .execute(&mut *connection)
        .await
        .expect("begins");
    let locked =
        sqlx::query("SELECT 1 FROM zone_followers WHERE replica_id = 'replica-b' FOR UPDATE")
            .fetch_optional(&mut *connection)
            .await
            .expect("locks");
    assert!(locked.is_some(), "replica B has recorded its zone follower");
}

/// Waits until some session of this database waits for a lock: B's follower writing its row.
async fn wait_until_blocked(url: &str) {
    let mut watcher = PgConnection::connect(url).await.expect("connects");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '%zone_followers%'",
        )
        .fetch_one(&mut watcher)
        .await
        .expect("reads pg_stat_activity")
        .get("n");
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica B's follower never blocked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether replica B counts as live now (its row written within the live window, 10 s).
async fn b_is_live(url: &str) -> bool {
    let mut reader = PgConnection::connect(url).await.expect("connects");
    sqlx::query(
        "SELECT now() - updated_at < interval '10 seconds' AS live FROM zone_followers \
         WHERE replica_id = 'replica-b'",
    )
    .fetch_one(&mut reader)
    .await
    .expect("reads B's row")
    .get("live")
}

/// The domain's current certificate serial.
async fn serial(service: &Service, id: &str) -> String {
    let (code, certificate) = service.get(&format!("/domains/{id}/certificate")).await;
    assert_eq!(code, 200, "{certificate}");
    certificate["serial"].as_str().expect("a serial").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_is_told_a_delegated_order_is_ready_only_once_every_live_replicas_zone_serves_it() {
    let mut setup = delegated(StoreKind::Postgres).await;
    let front = CaFront::start(&setup.pebble);
    setup
        .env
        .insert("ACME_DIRECTORY".into(), front.directory_url());
    let url = setup.env["DATABASE_URL"].clone();
    let mut on_a = setup.env.clone();
    on_a.insert("REPLICA_ID".into(), "replica-a".into());
    let mut on_b = setup.env.clone();
    delegate_zone(
        &mut on_b,
        ZONE,
        SocketAddr::from(([127, 0, 0, 1], free_dns_port())),
    );
    on_b.insert("REPLICA_ID".into(), "replica-b".into());
    let replica_a = Service::start(BINARY, &on_a);
    let replica_b = Service::start(BINARY, &on_b);
    let id = verified_by_cname(&replica_a, &setup.pebble, "lagging.delegated.test", &[]).await;

    // B's follower blocks on its next write: the registration of another domain wakes it.
    let mut lock = PgConnection::connect(&url).await.expect("connects");
    hold_back(&mut lock).await;
    let (code, _) = replica_a
        .post(
            "/domains",
            Some(json!({"domain_name": "nudge.delegated.test"})),
        )
        .await;
    assert_eq!(code, 201);
    wait_until_blocked(&url).await;

    let asked_before = front.requests(FrontTarget::Challenge);
    let (code, started) = replica_a
        .post(&format!("/domains/{id}/issue-certificate"), None)
        .await;
    assert_eq!(code, 202, "{started}");
    assert_eq!(started["validation"], "delegated", "{started}");
    let target = started["challenges"][0]["delegated_to"]
        .as_str()
        .expect("a target")
        .to_owned();
    let value = started["challenges"][0]["expected_txt_value"].clone();
    // A serves the value (where unbound sends the CA and A's poller) within moments.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dig(setup.dns, &["+norecurse", "TXT", &target])
        .txt()
        .iter()
        .any(|txt| json!(txt) == value)
    {
        assert!(
            Instant::now() < deadline,
            "replica A never served the value"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Without the wait, A's poller tells the CA within 100 ms of finding the value.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        b_is_live(&url).await,
        "the scenario needs B live (its row written within 10 s) here"
    );
    assert_eq!(
        front.requests(FrontTarget::Challenge),
        asked_before,
        "the CA was told the order is ready while live replica B's zone had not applied it\n{}",
        replica_a.log()
    );
    let (_, view) = replica_a.get(&format!("/domains/{id}")).await;
    assert_eq!(view["status"], "certificate_pending", "{view}");

    // B's follower moves on once the lock is gone: then A tells the CA, and the order completes.
    sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("releases");
    replica_a
        .wait_for_status(&id, &["active"], Duration::from_secs(60))
        .await;
    assert!(front.requests(FrontTarget::Challenge) > asked_before);

    // Held back again, for longer than the bound: B's /readyz names the zone, its lag shows,
    // and B, no longer live, holds A's next order back no more.
    hold_back(&mut lock).await;
    let (code, _) = replica_a
        .post(
            "/domains",
            Some(json!({"domain_name": "nudge2.delegated.test"})),
        )
        .await;
    assert_eq!(code, 201);
    wait_until_blocked(&url).await;
    let (code, _) = replica_a
        .post(
            "/domains",
            Some(json!({"domain_name": "nudge3.delegated.test"})),
        )
        .await;
    assert_eq!(code, 201);
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = readyz(&replica_b).await;
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "B's /readyz still {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let problem = body["error"].as_str().expect("a message");
    assert!(
        problem.contains(ZONE) && problem.contains("behind"),
        "{problem}"
    );
    let lag = replica_b
        .metric("dns_handling_delegation_zone_lag_events")
        .await;
    assert!(lag.is_some_and(|lag| lag >= 1.0), "{lag:?}");
    assert_eq!(
        replica_a
            .metric("dns_handling_delegation_zone_lag_events")
            .await,
        Some(0.0)
    );
    assert_eq!(readyz(&replica_a).await.0, 200);

    assert!(!b_is_live(&url).await, "B is stale now");
    let first = serial(&replica_a, &id).await;
    let (code, renewing) = replica_a.post(&format!("/domains/{id}/renew"), None).await;
    assert_eq!(code, 202, "{renewing}");
    let renewed_by = Instant::now() + Duration::from_secs(60);
    while serial(&replica_a, &id).await == first {
        assert!(
            Instant::now() < renewed_by,
            "not renewed while stale replica B was held back\n{}",
            replica_a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("releases");
    let deadline = Instant::now() + Duration::from_secs(15);
    while readyz(&replica_b).await.0 != 200 {
        assert!(Instant::now() < deadline, "B's /readyz never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        replica_b
            .metric("dns_handling_delegation_zone_lag_events")
            .await,
        Some(0.0)
    );
}

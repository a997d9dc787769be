use std::collections::BTreeMap;
use std::fs::File;

use cqrs_es::persist::{PersistedEventRepository as _, SerializedEvent};
use cqrs_es::DomainEvent as _;
use parquet::file::reader::{FileReader as _, SerializedFileReader};
use parquet::record::Field;
use serde_json::{json, Value};

use super::*;
use crate::adapters::event_repository::EventRepository;
use crate::domain::aggregate::CustomDomain;

async fn sqlite_store() -> (Store, PathBuf) {
    let path = std::env::temp_dir().join(format!("export-{}.db", uuid::Uuid::new_v4()));
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("store");
    store.migrate().await.expect("migrated");
    (store, path)
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("export-dir-{}", uuid::Uuid::new_v4()))
}

fn args(dir: &Path) -> ExportArgs {
    ExportArgs {
        after: 0,
        format: ExportFormat::Parquet,
        dir: Some(dir.to_owned()),
        follow: false,
        roll_bytes: 64 << 20,
        roll_after: Duration::from_secs(60),
        poll: Duration::from_millis(20),
    }
}

fn registered(name: &str) -> CustomDomainEvent {
    CustomDomainEvent::DomainRegistered {
        domain_name: name.into(),
        verification_token: "token".into(),
        verification_record_name: format!("_dns-handling.{name}."),
        registered_at: chrono::Utc::now(),
        alt_names: vec![],
        tenant: Some("acme".into()),
    }
}

/// Stores `events` (type, version, payload) as the next events of `domain`.
async fn append(store: &Store, domain: &str, from: usize, events: Vec<(String, String, Value)>) {
    let events: Vec<SerializedEvent> = events
        .into_iter()
        .zip(from..)
        .map(
            |((event_type, event_version, payload), sequence)| SerializedEvent {
                aggregate_id: domain.into(),
                sequence,
                aggregate_type: "CustomDomain".into(),
                event_type,
                event_version,
                payload,
                metadata: json!({"actor": "http", "role": "admin", "request_id": "r1"}),
            },
        )
        .collect();
    EventRepository::new(store.clone())
        .persist::<CustomDomain>(&events, None)
        .await
        .expect("stored");
}

fn current(event: &CustomDomainEvent) -> (String, String, Value) {
    (
        event.event_type(),
        event.event_version(),
        serde_json::to_value(event).expect("payload"),
    )
}

/// A registration, then an ownership proof stored as its version 1.0 (no `proof` field).
async fn two_domains(store: &Store) {
    for (domain, name) in [("d1", "shop.example.com"), ("d2", "blog.example.org")] {
        let verified = json!({"OwnershipVerified": {
            "observed_values": ["token"], "verified_at": "2026-11-26T12:00:00Z",
        }});
        append(
            store,
            domain,
            1,
            vec![
                current(&registered(name)),
                ("OwnershipVerified".into(), "1.0".into(), verified),
            ],
        )
        .await;
    }
}

/// Every row of every events file of `dir`, column by column, by position.
fn rows(dir: &Path) -> BTreeMap<i64, BTreeMap<String, Field>> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if positions_in(&name).is_none() {
            continue;
        }
        let reader = SerializedFileReader::new(File::open(&path).expect("file")).expect("parquet");
        for row in reader.get_row_iter(None).expect("rows") {
            let row: BTreeMap<String, Field> = row
                .expect("row")
                .get_column_iter()
                .map(|(name, field)| (name.clone(), field.clone()))
                .collect();
            let Some(Field::Long(position)) = row.get("position").cloned() else {
                panic!("no position: {row:?}");
            };
            assert!(all.insert(position, row).is_none(), "{position} twice");
        }
    }
    all
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The last position of the files in `dir`, leaving a file being written alone.
fn through(dir: &Path) -> i64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| positions_in(&entry.ok()?.file_name().to_string_lossy()))
                .map(|(_, last)| last)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn text(value: &str) -> Field {
    Field::Str(value.to_owned())
}

#[tokio::test]
async fn a_parquet_export_writes_each_event_once_as_its_current_version_with_its_fields_in_columns()
{
    let (store, path) = sqlite_store().await;
    two_domains(&store).await;
    let dir = temp_dir();
    let report = export_parquet(&store, &dir, &args(&dir))
        .await
        .expect("export");
    assert_eq!((report.events, report.files), (4, 1));
    assert_eq!(
        files(&dir),
        [CERTIFICATES_FILE.to_owned(), file_name(1, 4)],
        "one file, named by its positions, and the certificates"
    );
    let rows = rows(&dir);
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    let verified = &rows[&2];
    assert_eq!(verified["event_type"], text("OwnershipVerified"));
    assert_eq!(verified["event_version"], text("2.0"), "upcast");
    assert_eq!(verified["proof"], text("txt"), "a field the upcaster added");
    assert_eq!(verified["domain_name"], text("shop.example.com"));
    assert_eq!(verified["role"], text("admin"));
    assert_eq!(verified["request_id"], text("r1"));
    assert_eq!(verified["token_id"], Field::Null);
    assert!(
        matches!(verified["occurred_at"], Field::TimestampMicros(at) if at == 1_795_694_400_000_000),
        "{:?}",
        verified["occurred_at"]
    );
    assert_eq!(rows[&3]["tenant"], text("acme"));
    assert_eq!(rows[&4]["domain_name"], text("blog.example.org"));
    let Field::Str(payload) = &verified["payload_json"] else {
        panic!("no payload");
    };
    let payload: Value = serde_json::from_str(payload).expect("JSON");
    assert_eq!(payload["OwnershipVerified"]["proof"], "txt");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_second_run_writes_only_what_came_after_the_last_file_and_clears_a_half_written_one() {
    let (store, path) = sqlite_store().await;
    two_domains(&store).await;
    let dir = temp_dir();
    export_parquet(&store, &dir, &args(&dir))
        .await
        .expect("first run");
    let again = export_parquet(&store, &dir, &args(&dir))
        .await
        .expect("nothing new");
    assert_eq!(again.events, 0);
    let leftover = dir.join(crate::analytics::table::temporary_name(&file_name(5, 9)));
    std::fs::write(&leftover, b"half").expect("leftover");
    append(
        &store,
        "d1",
        3,
        vec![current(&CustomDomainEvent::DomainRemoved {
            domain_name: "shop.example.com".into(),
            removed_at: chrono::Utc::now(),
        })],
    )
    .await;
    let report = export_parquet(&store, &dir, &args(&dir))
        .await
        .expect("resumed");
    assert_eq!((report.events, report.files), (1, 1));
    assert!(!leftover.exists(), "the half-written file is gone");
    assert_eq!(
        files(&dir),
        [
            CERTIFICATES_FILE.to_owned(),
            file_name(1, 4),
            file_name(5, 5)
        ]
    );
    let rows = rows(&dir);
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(rows[&5]["domain_name"], text("shop.example.com"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn after_a_position_the_export_starts_there_and_rolls_files_by_size() {
    let (store, path) = sqlite_store().await;
    two_domains(&store).await;
    let dir = temp_dir();
    let mut small = args(&dir);
    small.after = 1;
    small.roll_bytes = 1;
    let report = export_parquet(&store, &dir, &small).await.expect("export");
    assert_eq!((report.events, report.files), (3, 3));
    assert_eq!(rows(&dir).keys().copied().collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(
        rows(&dir)[&2]["domain_name"],
        text("shop.example.com"),
        "the registration before the start is read all the same"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn following_writes_the_events_committed_while_it_runs() {
    let (store, path) = sqlite_store().await;
    two_domains(&store).await;
    let dir = temp_dir();
    let mut follow = args(&dir);
    follow.follow = true;
    follow.roll_after = Duration::ZERO;
    let running = {
        let (store, dir) = (store.clone(), dir.clone());
        tokio::spawn(async move { export_parquet(&store, &dir, &follow).await })
    };
    append(
        &store,
        "d2",
        3,
        vec![current(&CustomDomainEvent::DomainRemoved {
            domain_name: "blog.example.org".into(),
            removed_at: chrono::Utc::now(),
        })],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while through(&dir) < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!running.is_finished(), "still following");
    running.abort();
    assert_eq!(
        rows(&dir).keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(path);
}

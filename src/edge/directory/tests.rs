use std::os::unix::fs::PermissionsExt as _;

use chrono::{Duration, Utc};

use super::*;

/// A fresh directory under the system's temporary one.
fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("edge-directory-{}", uuid::Uuid::new_v4()))
}

fn served(position: i64, domain: &str, certificate: &str, names: &[&str]) -> EdgeLine {
    EdgeLine::Served(ServedCertificate {
        position,
        domain_id: format!("id-{domain}"),
        domain_name: domain.to_owned(),
        certificate_id: certificate.to_owned(),
        replaces: None,
        names: names.iter().map(|name| (*name).to_owned()).collect(),
        not_before: Utc::now(),
        not_after: Utc::now() + Duration::days(90),
        chain_pem: format!("-----BEGIN CERTIFICATE-----\n{certificate}\n-----END CERTIFICATE-----"),
        key_pem: format!(
            "-----BEGIN PRIVATE KEY-----\n{certificate}-key\n-----END PRIVATE KEY-----\n"
        ),
    })
}

fn withdrawn(position: i64, domain: &str, certificate: &str) -> EdgeLine {
    EdgeLine::Withdrawn {
        position,
        domain_id: format!("id-{domain}"),
        certificate_id: certificate.to_owned(),
    }
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn mode(dir: &Path, name: &str) -> u32 {
    fs::metadata(dir.join(name))
        .expect(name)
        .permissions()
        .mode()
        & 0o777
}

/// The names of the files in the directory, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("lists")
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

fn snapshot(position: i64, lines: Vec<EdgeLine>) -> Vec<EdgeLine> {
    let mut all = vec![EdgeLine::SnapshotBegins { position }];
    all.extend(lines);
    all.push(EdgeLine::SnapshotEnds { position });
    all
}

#[test]
fn a_served_certificate_becomes_a_combined_pem_a_crt_and_a_key_only_its_owner_may_read() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    let changed = directory
        .apply(&snapshot(
            7,
            vec![served(7, "shop.example.test", "c1", &["shop.example.test"])],
        ))
        .expect("applies");
    assert!(changed);
    let crt = read(&dir, "shop.example.test.crt");
    let key = read(&dir, "shop.example.test.key");
    assert!(
        crt.contains("c1\n") && crt.ends_with("-----END CERTIFICATE-----\n"),
        "{crt}"
    );
    assert!(key.contains("c1-key"), "{key}");
    assert_eq!(read(&dir, "shop.example.test.pem"), format!("{crt}{key}"));
    assert_eq!(mode(&dir, "shop.example.test.key"), 0o600);
    assert_eq!(mode(&dir, "shop.example.test.pem"), 0o600);
    assert_eq!(mode(&dir, "shop.example.test.crt"), 0o644);
    assert_eq!(directory.position(), 7);
    fs::remove_dir_all(dir).ok();
}

#[test]
fn the_crt_list_and_the_nginx_map_name_every_name_and_a_wildcard_covers_one_label() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    let names = [
        "shop.example.test",
        "www.shop.example.test",
        "*.shop.example.test",
    ];
    directory
        .apply(&snapshot(
            3,
            vec![served(3, "shop.example.test", "c1", &names)],
        ))
        .expect("applies");
    let resolved = directory.path().to_owned();
    assert_eq!(
        read(&dir, CRT_LIST_FILE),
        format!(
            "{}/shop.example.test.pem shop.example.test www.shop.example.test *.shop.example.test\n",
            resolved.display()
        )
    );
    assert_eq!(
        read(&dir, NGINX_MAP_FILE),
        "shop.example.test shop.example.test;\n\
         www.shop.example.test shop.example.test;\n\
         ~*^[^.]+\\.shop\\.example\\.test$ shop.example.test;\n"
    );
    fs::remove_dir_all(dir).ok();
}

#[test]
fn a_renewal_rewrites_the_same_files_and_a_withdrawal_removes_them_and_their_lines() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    directory
        .apply(&snapshot(
            1,
            vec![
                served(1, "a.example.test", "a1", &["a.example.test"]),
                served(1, "b.example.test", "b1", &["b.example.test"]),
            ],
        ))
        .expect("applies");
    assert!(directory
        .apply(&[served(5, "a.example.test", "a2", &["a.example.test"])])
        .expect("applies"));
    assert!(read(&dir, "a.example.test.crt").contains("a2"));
    assert!(read(&dir, "a.example.test.pem").contains("a2-key"));

    assert!(directory
        .apply(&[withdrawn(6, "b.example.test", "b1")])
        .expect("applies"));
    let left = files(&dir);
    assert!(
        !left.iter().any(|f| f.starts_with("b.example.test")),
        "{left:?}"
    );
    assert!(!read(&dir, CRT_LIST_FILE).contains("b.example.test"));
    assert!(!read(&dir, NGINX_MAP_FILE).contains("b.example.test"));
    assert_eq!(directory.position(), 6);
    fs::remove_dir_all(dir).ok();
}

#[test]
fn the_withdrawal_of_a_certificate_already_replaced_leaves_its_successor_served() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    directory
        .apply(&[
            served(1, "a.example.test", "a1", &["a.example.test"]),
            served(2, "a.example.test", "a2", &["a.example.test"]),
            withdrawn(3, "a.example.test", "a1"),
        ])
        .expect("applies");
    assert!(read(&dir, "a.example.test.crt").contains("a2"));
    assert!(read(&dir, CRT_LIST_FILE).contains("a.example.test"));
    fs::remove_dir_all(dir).ok();
}

#[test]
fn the_end_of_a_snapshot_removes_what_the_snapshot_did_not_name() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    directory
        .apply(&[
            served(1, "a.example.test", "a1", &["a.example.test"]),
            served(2, "b.example.test", "b1", &["b.example.test"]),
        ])
        .expect("applies");
    // The service could not resume from 2: a snapshot that no longer names b.
    directory
        .apply(&snapshot(
            40,
            vec![served(40, "a.example.test", "a1", &["a.example.test"])],
        ))
        .expect("applies");
    let left = files(&dir);
    assert!(left.contains(&"a.example.test.pem".to_owned()), "{left:?}");
    assert!(
        !left.iter().any(|f| f.starts_with("b.example.test")),
        "{left:?}"
    );
    assert_eq!(directory.position(), 40);
    fs::remove_dir_all(dir).ok();
}

#[test]
fn the_same_lines_applied_again_change_nothing() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    let lines = [served(1, "a.example.test", "a1", &["a.example.test"])];
    assert!(directory.apply(&lines).expect("applies"));
    assert!(!directory.apply(&lines).expect("applies"));
    fs::remove_dir_all(dir).ok();
}

#[test]
fn a_change_awaits_its_reload_until_one_is_recorded_even_across_a_crash() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    assert!(!directory.reload_pending(), "nothing to reload for yet");
    let lines = [served(1, "a.example.test", "a1", &["a.example.test"])];
    directory.apply(&lines).expect("applies");
    assert!(directory.reload_pending());
    drop(directory);
    let mut directory = EdgeDirectory::open(&dir).expect("opens again");
    assert!(
        directory.reload_pending(),
        "the crash came before the reload"
    );
    directory.reloaded().expect("recorded");
    directory.apply(&lines).expect("applies");
    assert!(!directory.reload_pending(), "the same lines change nothing");
    drop(directory);
    assert!(!EdgeDirectory::open(&dir).expect("opens").reload_pending());
    fs::remove_dir_all(dir).ok();
}

#[test]
fn reopening_after_a_crash_removes_unrecorded_files_and_resumes_from_the_recorded_position() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    directory
        .apply(&[served(4, "a.example.test", "a1", &["a.example.test"])])
        .expect("applies");
    drop(directory);
    // A crash after b's files were written and before the batch was recorded, and one in the
    // middle of a write.
    for name in [
        "b.example.test.pem",
        "b.example.test.crt",
        "b.example.test.key",
        ".crt-list.txt.partial",
    ] {
        fs::write(dir.join(name), "left by a crash").expect("writes");
    }
    let directory = EdgeDirectory::open(&dir).expect("opens again");
    assert_eq!(directory.position(), 4);
    assert_eq!(
        files(&dir),
        [
            "a.example.test.crt",
            "a.example.test.key",
            "a.example.test.pem",
            CRT_LIST_FILE,
            NGINX_MAP_FILE,
            STATE_FILE
        ]
    );
    fs::remove_dir_all(dir).ok();
}

#[test]
fn two_domains_whose_files_would_share_a_name_keep_apart() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    let mut other = served(2, "a.example.test", "x1", &["a.example.test"]);
    if let EdgeLine::Served(served) = &mut other {
        served.domain_id = "id-other".into();
    }
    directory
        .apply(&[
            served(1, "a.example.test", "a1", &["a.example.test"]),
            other,
        ])
        .expect("applies");
    assert!(read(&dir, "a.example.test.crt").contains("a1"));
    assert!(read(&dir, "a.example.test~id-other.crt").contains("x1"));
    fs::remove_dir_all(dir).ok();
}

#[test]
fn a_snapshot_cut_short_is_asked_for_again_from_the_position_before_it() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    directory
        .apply(&[served(2, "a.example.test", "a1", &["a.example.test"])])
        .expect("applies");
    directory
        .apply(&[
            EdgeLine::SnapshotBegins { position: 50 },
            served(50, "b.example.test", "b1", &["b.example.test"]),
        ])
        .expect("applies");
    assert_eq!(
        directory.position(),
        2,
        "not past a snapshot before its end"
    );
    drop(directory);
    let mut directory = EdgeDirectory::open(&dir).expect("opens again");
    assert_eq!(directory.position(), 2);
    // Asked again, the whole snapshot no longer names a.
    directory
        .apply(&snapshot(
            50,
            vec![served(50, "b.example.test", "b1", &["b.example.test"])],
        ))
        .expect("applies");
    assert_eq!(directory.position(), 50);
    assert!(!read(&dir, CRT_LIST_FILE).contains("a.example.test"));
    fs::remove_dir_all(dir).ok();
}

#[test]
fn a_snapshot_s_batches_are_recorded_once_at_its_end_and_a_cut_short_one_leaves_no_file() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    directory
        .apply(&[served(2, "a.example.test", "a1", &["a.example.test"])])
        .expect("applies");
    let recorded = read(&dir, STATE_FILE);
    // A snapshot of many certificates comes in many batches: none of them rewrites the
    // record (it would grow with every certificate held, each batch writing it whole).
    for n in 0..3 {
        let mut batch = Vec::new();
        if n == 0 {
            batch.push(EdgeLine::SnapshotBegins { position: 50 });
        }
        let name = format!("b{n}.example.test");
        batch.push(served(50, &name, &format!("b{n}"), &[name.as_str()]));
        directory.apply(&batch).expect("applies");
        assert_eq!(
            read(&dir, STATE_FILE),
            recorded,
            "batch {n} rewrote the record"
        );
    }
    // Cut short: the files of the batches received are not in the record, and go at the
    // next start.
    drop(directory);
    let directory = EdgeDirectory::open(&dir).expect("opens again");
    assert!(
        files(&dir).iter().all(|file| !file.starts_with("b")),
        "{:?}",
        files(&dir)
    );
    drop(directory);
    // Whole, the snapshot is recorded at its end.
    let mut directory = EdgeDirectory::open(&dir).expect("opens again");
    directory
        .apply(&snapshot(
            50,
            vec![served(50, "b0.example.test", "b0", &["b0.example.test"])],
        ))
        .expect("applies");
    let state = read(&dir, STATE_FILE);
    assert!(
        state.contains("b0.example.test") && !state.contains("a.example.test"),
        "{state}"
    );
    assert_eq!(directory.position(), 50);
    fs::remove_dir_all(dir).ok();
}

/// What reached the disk since the last look, in order.
fn journal(directory: &EdgeDirectory) -> Vec<String> {
    std::mem::take(&mut *directory.journal.lock().expect("journal"))
}

#[test]
fn new_certificates_reach_the_disk_in_one_sync_before_the_record_and_a_renewal_file_by_file() {
    let dir = scratch();
    let mut directory = EdgeDirectory::open(&dir).expect("opens");
    journal(&directory);
    let names = ["a.example.test", "b.example.test"];
    let lines = names
        .iter()
        .enumerate()
        .map(|(n, name)| served(10, name, &format!("c{n}"), &[name]))
        .collect();
    directory.apply(&snapshot(10, lines)).expect("applies");
    let written = journal(&directory);
    let sync = written.iter().position(|w| w == "syncfs");
    let record = written.iter().position(|w| w == "synced state.json");
    let certificate_files: Vec<&String> = (written.iter())
        .filter(|w| [".pem", ".crt", ".key"].iter().any(|e| w.ends_with(e)))
        .collect();
    assert_eq!(certificate_files.len(), 6, "{written:?}");
    assert!(
        certificate_files.iter().all(|w| w.starts_with("unsynced ")),
        "a new certificate's file was synced on its own: {written:?}"
    );
    assert!(
        matches!((sync, record), (Some(sync), Some(record)) if sync < record),
        "the record was written before its files were synced: {written:?}"
    );
    assert_eq!(written.iter().filter(|w| *w == "syncfs").count(), 1);
    // A renewal rewrites files the record names: each is synced before its rename.
    directory
        .apply(&[served(11, "a.example.test", "c9", &["a.example.test"])])
        .expect("applies");
    let written = journal(&directory);
    assert!(
        written.contains(&"synced a.example.test.pem".to_owned())
            && !written
                .iter()
                .any(|w| w.starts_with("unsynced") || w == "syncfs"),
        "{written:?}"
    );
    fs::remove_dir_all(dir).ok();
}

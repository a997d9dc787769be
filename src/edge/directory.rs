//! The directory `dns-handling edge sync` keeps equal to what the service serves, for TLS
//! terminators that read files: per certificate a combined PEM (chain then key: HAProxy's form)
//! and a separate `.crt` and `.key` (nginx's), a HAProxy `crt-list` and an nginx map of names to
//! files. Every file is written atomically (a temporary file, then a rename), keys mode `0600`.
//!
//! What the directory holds is recorded in `state.json`, written last in every batch (a
//! snapshot's batches once, at its end), with the feed position to resume from. Opening the directory removes whatever that record does not
//! name (a crash between writing a certificate and recording it): the files then match the
//! record, and the stream, resumed from the recorded position, sends the rest again.
//!
//! So the files of a domain the record does not name yet need not reach the disk one by one:
//! they are synced all at once (`syncfs`) just before the record that names them is written.
//! A snapshot of many certificates then costs one sync, not six per certificate (a temporary
//! file and the directory for each of three files); a file the record already names (a
//! renewal's) is synced before its rename, as a crash must not leave it half written.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::line::{EdgeLine, ServedCertificate};

/// The record of what the directory serves, and where the stream resumes.
const STATE_FILE: &str = "state.json";
/// HAProxy's list of certificates and the names each serves (`crt-list`).
pub const CRT_LIST_FILE: &str = "crt-list.txt";
/// nginx's map from a handshake's name to the stem of the files that serve it.
pub const NGINX_MAP_FILE: &str = "nginx-names.map";
/// The suffix of a file being written, before its rename.
const TEMPORARY_SUFFIX: &str = ".partial";

/// A failure to read or write the directory.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A file could not be read, written, renamed or removed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// `state.json` is not what this agent writes.
    #[error("{path} is not an edge sync state file")]
    State {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: serde_json::Error,
    },
}

/// One certificate the directory serves, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    certificate_id: String,
    stem: String,
    names: Vec<String>,
}

/// The record kept in `state.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The feed position to resume from.
    position: i64,
    /// What is served, by domain id.
    served: BTreeMap<String, Held>,
    /// While a snapshot is being received: the domains it named so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot: Option<BTreeSet<String>>,
    /// What is served changed since the terminator was last reloaded: an agent killed between a
    /// batch and its change command runs the command when it starts again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    reload_pending: bool,
}

/// A directory kept equal to the certificates the service serves.
#[derive(Debug)]
pub struct EdgeDirectory {
    dir: PathBuf,
    state: State,
    /// What is served changed since the lists were last written.
    lists_stale: bool,
    /// The stems of the files held, to find a free one without a walk through every domain.
    stems: HashSet<String>,
    /// Files were written unsynced (their domains not yet recorded): sync before the record.
    unsynced: bool,
    /// What reached the disk, in order (`synced <file>`, `unsynced <file>`, `syncfs`): for the
    /// tests of that order.
    #[cfg(test)]
    journal: std::sync::Mutex<Vec<String>>,
}

impl EdgeDirectory {
    /// Opens (creating it if need be) the directory, reads what it recorded, and removes every
    /// file the record does not name.
    pub fn open(dir: &Path) -> Result<Self, DirectoryError> {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let dir = dir.canonicalize().map_err(io("resolve", dir))?;
        let state_path = dir.join(STATE_FILE);
        let mut state: State = match fs::read(&state_path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| DirectoryError::State {
                    path: state_path.clone(),
                    source,
                })?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(error) => return Err(io("read", &state_path)(error)),
        };
        // A snapshot cut short is received again from the start: the recorded position is still
        // the one before it.
        state.snapshot = None;
        let stems = state
            .served
            .values()
            .map(|held| held.stem.clone())
            .collect();
        let mut directory = Self {
            dir,
            state,
            lists_stale: true,
            stems,
            unsynced: false,
            #[cfg(test)]
            journal: std::sync::Mutex::default(),
        };
        directory.remove_unrecorded()?;
        // The lists may be newer than the record (a crash between the two): write them from it.
        directory.write_lists()?;
        Ok(directory)
    }

    /// The feed position to resume the stream from (`0`: from a snapshot).
    pub fn position(&self) -> i64 {
        self.state.position
    }

    /// The directory's path, resolved.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Applies a batch of lines, then records them; says whether what is served changed (a
    /// terminator must reload). Inside a snapshot the lists and the record wait for its end, so
    /// that a snapshot cut short is asked for again rather than taken as whole (and so that a
    /// snapshot of many certificates does not rewrite the whole record at every batch).
    pub fn apply(&mut self, lines: &[EdgeLine]) -> Result<bool, DirectoryError> {
        let mut changed = false;
        for line in lines {
            match line {
                EdgeLine::SnapshotBegins { .. } => self.state.snapshot = Some(BTreeSet::new()),
                EdgeLine::SnapshotEnds { .. } => {
                    let named = self.state.snapshot.take().unwrap_or_default();
                    let gone: Vec<String> = (self.state.served.keys())
                        .filter(|domain_id| !named.contains(*domain_id))
                        .cloned()
                        .collect();
                    for domain_id in gone {
                        changed |= self.forget(&domain_id)?;
                    }
                }
                EdgeLine::Served(served) => changed |= self.serve(served)?,
                EdgeLine::Withdrawn {
                    domain_id,
                    certificate_id,
                    ..
                } => {
                    let held = self.state.served.get(domain_id);
                    if held.is_some_and(|held| &held.certificate_id == certificate_id) {
                        changed |= self.forget(domain_id)?;
                    }
                }
            }
            if self.state.snapshot.is_none() {
                self.state.position = self.state.position.max(line.position());
            }
        }
        self.lists_stale |= changed;
        self.state.reload_pending |= changed;
        if self.state.snapshot.is_none() {
            if self.lists_stale {
                self.write_lists()?;
            }
            self.write_state()?;
        }
        Ok(changed)
    }

    /// Whether what is served changed since [`EdgeDirectory::reloaded`] was last called (say,
    /// before a crash): the terminator may still hold older files.
    pub fn reload_pending(&self) -> bool {
        self.state.reload_pending
    }

    /// Records that the terminator was reloaded for what the directory holds.
    pub fn reloaded(&mut self) -> Result<(), DirectoryError> {
        if !self.state.reload_pending {
            return Ok(());
        }
        self.state.reload_pending = false;
        self.write_state()
    }

    /// Writes `state.json`, once every file it names is on the disk.
    fn write_state(&mut self) -> Result<(), DirectoryError> {
        if self.unsynced {
            let dir = fs::File::open(&self.dir).map_err(io("open", &self.dir))?;
            rustix::fs::syncfs(&dir)
                .map_err(|errno| io("sync the file system of", &self.dir)(errno.into()))?;
            self.note("syncfs".to_owned());
            self.unsynced = false;
        }
        let state = serde_json::to_vec_pretty(&self.state).expect("the state serializes");
        self.write(STATE_FILE, &state, 0o600, WhenSynced::Now)
    }

    /// Writes the HAProxy crt-list and the nginx map of what is served.
    fn write_lists(&mut self) -> Result<(), DirectoryError> {
        self.write(
            CRT_LIST_FILE,
            self.crt_list().as_bytes(),
            0o644,
            WhenSynced::Now,
        )?;
        self.write(
            NGINX_MAP_FILE,
            self.nginx_map().as_bytes(),
            0o644,
            WhenSynced::Now,
        )?;
        self.lists_stale = false;
        Ok(())
    }

    /// Writes a served certificate's files and records it.
    /// Writes a domain's files for `served` and records it; says whether anything changed.
    fn serve(&mut self, served: &ServedCertificate) -> Result<bool, DirectoryError> {
        if let Some(snapshot) = &mut self.state.snapshot {
            snapshot.insert(served.domain_id.clone());
        }
        let stem = match self.state.served.get(&served.domain_id) {
            Some(held) => held.stem.clone(),
            None => self.free_stem(&served.domain_name, &served.domain_id),
        };
        let held = Held {
            certificate_id: served.certificate_id.clone(),
            stem: stem.clone(),
            names: served.names.clone(),
        };
        if self.state.served.get(&served.domain_id) == Some(&held) {
            return Ok(false);
        }
        let chain = with_final_newline(&served.chain_pem);
        let key = with_final_newline(&served.key_pem);
        // Files the record does not name yet: a crash before it removes them (`open`).
        let sync = match self.state.served.contains_key(&served.domain_id) {
            true => WhenSynced::Now,
            false => WhenSynced::BeforeTheRecord,
        };
        self.write(&format!("{stem}.crt"), chain.as_bytes(), 0o644, sync)?;
        self.write(&format!("{stem}.key"), key.as_bytes(), 0o600, sync)?;
        let combined = format!("{chain}{key}");
        self.write(&format!("{stem}.pem"), combined.as_bytes(), 0o600, sync)?;
        self.stems.insert(stem);
        self.state.served.insert(served.domain_id.clone(), held);
        Ok(true)
    }

    /// Removes a domain's files and its record; says whether it held any.
    fn forget(&mut self, domain_id: &str) -> Result<bool, DirectoryError> {
        let Some(held) = self.state.served.remove(domain_id) else {
            return Ok(false);
        };
        for extension in ["pem", "crt", "key"] {
            remove(&self.dir.join(format!("{}.{extension}", held.stem)))?;
        }
        self.stems.remove(&held.stem);
        Ok(true)
    }

    /// The stem of a domain's files: its name (`*` as `_wildcard`), or with its id appended
    /// where another domain's files have that name still.
    fn free_stem(&self, domain_name: &str, domain_id: &str) -> String {
        let stem = domain_name.replace('*', "_wildcard");
        if self.stems.contains(&stem) {
            format!("{stem}~{domain_id}")
        } else {
            stem
        }
    }

    /// HAProxy's `crt-list`: each combined PEM with the names it serves as SNI filters (a
    /// wildcard filter covers exactly one label, as the service matches).
    fn crt_list(&self) -> String {
        let mut list = String::new();
        for held in self.by_stem() {
            let path = self.dir.join(format!("{}.pem", held.stem));
            list += &format!("{} {}\n", path.display(), held.names.join(" "));
        }
        list
    }

    /// nginx's map from `$ssl_server_name` to a stem: exact names as they are, a wildcard as a
    /// case-insensitive expression for exactly one more label.
    fn nginx_map(&self) -> String {
        let mut map = String::new();
        for held in self.by_stem() {
            for name in &held.names {
                match name.strip_prefix("*.") {
                    Some(parent) => {
                        let parent = parent.replace('.', "\\.");
                        map += &format!("~*^[^.]+\\.{parent}$ {};\n", held.stem);
                    }
                    None => map += &format!("{name} {};\n", held.stem),
                }
            }
        }
        map
    }

    /// What is served, in the order of the files' names (so the lists do not depend on ids).
    fn by_stem(&self) -> Vec<&Held> {
        let mut held: Vec<&Held> = self.state.served.values().collect();
        held.sort_by(|a, b| a.stem.cmp(&b.stem));
        held
    }

    /// Removes certificate files the record does not name, and unfinished writes.
    fn remove_unrecorded(&self) -> Result<(), DirectoryError> {
        let recorded: BTreeSet<&str> = (self.state.served.values())
            .map(|held| held.stem.as_str())
            .collect();
        for entry in fs::read_dir(&self.dir).map_err(io("list", &self.dir))? {
            let path = entry.map_err(io("list", &self.dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let certificate_file = ["pem", "crt", "key"]
                .iter()
                .find_map(|extension| name.strip_suffix(&format!(".{extension}")));
            let unrecorded = certificate_file.is_some_and(|stem| !recorded.contains(stem));
            if unrecorded || name.ends_with(TEMPORARY_SUFFIX) {
                remove(&path)?;
            }
        }
        Ok(())
    }

    /// Writes `name` atomically with `mode`: a temporary file created with that mode, renamed
    /// over the old one. With [`WhenSynced::Now`] the file is synced before the rename and the
    /// directory after it, so the rename survives a crash; with [`WhenSynced::BeforeTheRecord`] both
    /// wait for the one sync before the next record.
    fn write(
        &mut self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        sync: WhenSynced,
    ) -> Result<(), DirectoryError> {
        let path = self.dir.join(name);
        let temporary = self.dir.join(format!(".{name}{TEMPORARY_SUFFIX}"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)
            .map_err(io("create", &temporary))?;
        // A temporary file left by a crash keeps its old mode: set it again.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("set the mode of", &temporary))?;
        file.write_all(bytes).map_err(io("write", &temporary))?;
        if sync == WhenSynced::BeforeTheRecord {
            fs::rename(&temporary, &path).map_err(io("rename", &temporary))?;
            self.unsynced = true;
            self.note(format!("unsynced {name}"));
            return Ok(());
        }
        file.sync_all().map_err(io("sync", &temporary))?;
        fs::rename(&temporary, &path).map_err(io("rename", &temporary))?;
        fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io("sync", &self.dir))?;
        self.note(format!("synced {name}"));
        Ok(())
    }

    /// Notes what reached the disk, for the tests.
    #[cfg(test)]
    fn note(&self, what: String) {
        self.journal.lock().expect("journal").push(what);
    }

    #[cfg(not(test))]
    fn note(&self, _: String) {}
}

/// When a written file must be on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenSynced {
    /// Before it replaces the file of its name.
    Now,
    /// Before the next record (`state.json`), which is the first to name it.
    BeforeTheRecord,
}

/// Removes a file; one already gone is fine.
fn remove(path: &Path) -> Result<(), DirectoryError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(io("remove", path)(error))
        }
        _ => Ok(()),
    }
}

/// A PEM text ending in a newline, so that two concatenate into valid PEM.
fn with_final_newline(pem: &str) -> String {
    if pem.ends_with('\n') {
        pem.to_owned()
    } else {
        format!("{pem}\n")
    }
}

/// The error of `action` on `path`.
fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DirectoryError {
    let path = path.to_owned();
    move |source| DirectoryError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests;

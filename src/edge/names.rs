//! Which certificate serves a TLS handshake's name: the in-memory index an edge's question is
//! answered from (`GET /edge/certificate?server_name=…`), without a query.
//!
//! An exact name of a domain (its name or an alt name) wins; else a wildcard `*.<parent>`
//! covering exactly one more label, as a certificate's wildcard does (RFC 6125 §6.4.3). Names
//! are matched as the service parses a domain's name: case-insensitively, a trailing dot
//! ignored, internationalised names in their A-label form (`bücher.example` is
//! `xn--bcher-kva.example`).
//!
//! # Representation, and why
//!
//! Every replica holds every served name, a million certificates' worth included, so the index
//! is laid out for bytes per name: 74 at a million domains of three names, where two maps of
//! boxed names to `Arc`'d entries, and each domain's names kept again to withdraw them, took
//! 279 (`bench/README.md`, edge part 1). So:
//! - each domain served is one slot of a slab (`Vec` and a free list; a withdrawn domain's slot
//!   is taken by the next one served), holding its ids, the certificate's end and its names
//!   packed in one allocation (each a length byte and its text): a name is stored once, and
//!   the domain's withdrawal finds its names there;
//! - ids are 16-byte [`Uuid`]s when they are a UUID's canonical text (what the service makes),
//!   else kept as text, so that what was given is what is handed back;
//! - one hash table of 8-byte references (slot, offset of the name in the slot) holds the
//!   names, exact and wildcard (a wildcard keyed by its parent), and another of 4-byte slot
//!   numbers the domains by id: the keys are read in the slab, not copied into the tables.
//!
//! A table's entry is a name's only link to its domain, and is removed only through the slot
//! and offset it holds: a name that another domain has taken since points at that domain's
//! slot, so the first domain's withdrawal leaves it, and no entry points at a freed slot.
//! [`ServedEntry`] is made from the slot at each lookup (two short strings), as the edge route
//! has always been handed a copy of its own.

use std::hash::{BuildHasher, RandomState};

use chrono::{DateTime, Utc};
use hashbrown::hash_table::{Entry, HashTable};
use uuid::Uuid;

use crate::domain::domain_name::DomainName;

/// The certificate a domain serves now, as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedEntry {
    /// The domain.
    pub domain_id: String,
    /// The certificate served for its names.
    pub certificate_id: String,
    /// Its end: past it, nothing is served.
    pub not_after: DateTime<Utc>,
}

/// A `server_name` that is not a host name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("server_name {0:?} is not a host name")]
pub struct NotAHostName(pub String);

/// The longest name indexed: a host name's limit. A longer stored name could never be asked
/// for (a handshake's name is parsed as a host name first), and this one fits a length byte.
const LONGEST_NAME: u8 = 253;

/// The index: every served name, exact and wildcard, to its domain's slot.
#[derive(Debug, Default)]
pub struct NameIndex {
    /// One slot per domain served.
    slab: Slab,
    /// Every served name (a wildcard `*.<parent>` keyed by its parent, as a wildcard).
    names: HashTable<NameRef>,
    /// Every domain served, by its id.
    domains: HashTable<u32>,
    /// The tables' hashes: SipHash, keyed at random, since names and ids come from outside.
    hasher: RandomState,
}

/// The domains served, one slot each: a withdrawn domain's slot is handed to the next one.
#[derive(Debug, Default)]
struct Slab {
    /// `None` once withdrawn, until [`Self::take`] hands it out again.
    slots: Vec<Option<Served>>,
    /// The emptied slots, taken before the slab grows.
    free: Vec<u32>,
}

/// What a slot holds: one domain's entry and names.
#[derive(Debug)]
struct Served {
    domain_id: Id,
    certificate_id: Id,
    not_after: DateTime<Utc>,
    /// Its names as indexed (lower case, no trailing dot, `*.` kept), each a length byte
    /// followed by its text: one allocation for all of them.
    names: Box<[u8]>,
}

/// A name in the index: the slot of its domain, and where the name is in the slot's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameRef {
    slot: u32,
    at: u32,
}

/// An id as stored: 16 bytes when it is a UUID's canonical text, else the text itself.
#[derive(Debug, PartialEq, Eq)]
enum Id {
    Uuid(Uuid),
    Text(Box<str>),
}

/// An id as hashed and compared: the same whether stored or asked for.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum IdRef<'a> {
    Uuid(Uuid),
    Text(&'a str),
}

/// A name as the names table keys it: an exact name, or a wildcard by its parent.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Key<'a> {
    Exact(&'a str),
    Wildcard(&'a str),
}

impl NameIndex {
    /// Serves `names` (lower case A-labels, wildcards as `*.<parent>`) with `entry`, in place
    /// of what the domain served before. A name another domain served is this one's from now on.
    pub fn serve(&mut self, names: &[String], entry: ServedEntry) {
        self.withdraw(&entry.domain_id);
        let slot = self.slab.take(Served {
            domain_id: Id::new(&entry.domain_id),
            certificate_id: Id::new(&entry.certificate_id),
            not_after: entry.not_after,
            names: pack(names),
        });
        let (slab, hasher) = (&self.slab, &self.hasher);
        let served = slab.get(slot);
        self.domains
            .insert_unique(hasher.hash_one(served.domain_id.as_ref()), slot, |&slot| {
                hasher.hash_one(slab.get(slot).domain_id.as_ref())
            });
        for (at, name) in unpack(&served.names) {
            let key = key_of(name);
            let new = NameRef { slot, at };
            match self.names.entry(
                hasher.hash_one(key),
                |reference| key_of(slab.name(reference)) == key,
                |reference| hasher.hash_one(key_of(slab.name(reference))),
            ) {
                // Another domain's until now (or a name this one lists twice).
                Entry::Occupied(mut taken) => *taken.get_mut() = new,
                Entry::Vacant(vacant) => {
                    vacant.insert(new);
                }
            }
        }
    }

    /// Serves nothing more for the domain, and frees its slot and names.
    pub fn withdraw(&mut self, domain_id: &str) {
        let id = IdRef::new(domain_id);
        let slab = &self.slab;
        let Ok(entry) = self.domains.find_entry(self.hasher.hash_one(id), |&slot| {
            slab.get(slot).domain_id.as_ref() == id
        }) else {
            return;
        };
        let (slot, _) = entry.remove();
        let served = self.slab.release(slot);
        for (at, name) in unpack(&served.names) {
            // Only if it is still this domain's: another may have taken the name since, and
            // its entry then points at that domain's slot.
            let here = NameRef { slot, at };
            let hash = self.hasher.hash_one(key_of(name));
            if let Ok(entry) = self.names.find_entry(hash, |reference| *reference == here) {
                entry.remove();
            }
        }
    }

    /// Serves nothing more for the domain if it serves `certificate_id` now (a certificate it
    /// replaced may be revoked, or its key destroyed, without touching the one in service).
    pub fn withdraw_certificate(&mut self, domain_id: &str, certificate_id: &str) {
        let serves_it = self
            .served_slot(domain_id)
            .is_some_and(|served| served.certificate_id.as_ref() == IdRef::new(certificate_id));
        if serves_it {
            self.withdraw(domain_id);
        }
    }

    /// What the domain serves now, if anything.
    pub fn served(&self, domain_id: &str) -> Option<ServedEntry> {
        self.served_slot(domain_id).map(Served::entry)
    }

    /// The certificate serving `server_name` at `now`: `Ok(None)` when none does (not ours, or
    /// past its end).
    pub fn lookup(
        &self,
        server_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ServedEntry>, NotAHostName> {
        let name = host_name(server_name)?;
        let found = self.find(Key::Exact(&name)).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.find(Key::Wildcard(parent))
        });
        Ok(found
            .filter(|served| served.not_after > now)
            .map(Served::entry))
    }

    /// How many names are served.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The domain serving `key`.
    fn find(&self, key: Key<'_>) -> Option<&Served> {
        let reference = self.names.find(self.hasher.hash_one(key), |reference| {
            key_of(self.slab.name(reference)) == key
        })?;
        Some(self.slab.get(reference.slot))
    }

    /// What the domain `domain_id` serves, if anything.
    fn served_slot(&self, domain_id: &str) -> Option<&Served> {
        let id = IdRef::new(domain_id);
        let slot = self.domains.find(self.hasher.hash_one(id), |&slot| {
            self.slab.get(slot).domain_id.as_ref() == id
        })?;
        Some(self.slab.get(*slot))
    }
}

impl Slab {
    /// Puts `served` in an emptied slot, or a new one.
    fn take(&mut self, served: Served) -> u32 {
        if let Some(slot) = self.free.pop() {
            self.slots[slot as usize] = Some(served);
            return slot;
        }
        // Beyond 4 billion domains one process holds nothing anyway.
        let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 domains");
        self.slots.push(Some(served));
        slot
    }

    /// Empties `slot` for the next domain, and hands back what it held.
    fn release(&mut self, slot: u32) -> Served {
        let served = self.slots[slot as usize]
            .take()
            .expect("a domain's slot is in use");
        self.free.push(slot);
        served
    }

    /// The slot `slot`. The tables point at slots in use only: a slot is emptied by
    /// `withdraw` alone, which takes out of the tables the domain's entry and its names'
    /// (those other domains took since point at their slots).
    fn get(&self, slot: u32) -> &Served {
        self.slots[slot as usize]
            .as_ref()
            .expect("the tables point at slots in use")
    }

    /// The name `reference` points at.
    fn name(&self, reference: &NameRef) -> &str {
        let names = &self.get(reference.slot).names;
        let at = reference.at as usize;
        let end = at + 1 + usize::from(names[at]);
        std::str::from_utf8(&names[at + 1..end]).expect("packed from strings")
    }
}

impl Served {
    fn entry(&self) -> ServedEntry {
        ServedEntry {
            domain_id: self.domain_id.to_string(),
            certificate_id: self.certificate_id.to_string(),
            not_after: self.not_after,
        }
    }
}

impl Id {
    /// `id` as stored: a UUID only when `id` is its canonical text (lower case, hyphenated,
    /// as the service makes them), so that turning it back into text gives `id` again.
    fn new(id: &str) -> Self {
        match IdRef::new(id) {
            IdRef::Uuid(uuid) => Self::Uuid(uuid),
            IdRef::Text(text) => Self::Text(text.into()),
        }
    }

    fn as_ref(&self) -> IdRef<'_> {
        match self {
            Self::Uuid(uuid) => IdRef::Uuid(*uuid),
            Self::Text(text) => IdRef::Text(text),
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uuid(uuid) => uuid.hyphenated().fmt(f),
            Self::Text(text) => f.write_str(text),
        }
    }
}

impl<'a> IdRef<'a> {
    fn new(id: &'a str) -> Self {
        match Uuid::try_parse(id) {
            Ok(uuid) if uuid.hyphenated().encode_lower(&mut Uuid::encode_buffer()) == id => {
                Self::Uuid(uuid)
            }
            _ => Self::Text(id),
        }
    }
}

/// The key of a name as stored (`*.shop.example` is the wildcard of `shop.example`).
fn key_of(name: &str) -> Key<'_> {
    match name.strip_prefix("*.") {
        Some(parent) => Key::Wildcard(parent),
        None => Key::Exact(name),
    }
}

/// `names` as a slot keeps them: normalised, each a length byte and its text. A name longer
/// than a host name is left out: no handshake's name could match it.
fn pack(names: &[String]) -> Box<[u8]> {
    let mut packed = Vec::with_capacity(names.iter().map(|name| name.len() + 1).sum());
    for name in names {
        let name = normalise(name);
        if let Ok(len @ ..=LONGEST_NAME) = u8::try_from(name.len()) {
            packed.push(len);
            packed.extend_from_slice(name.as_bytes());
        }
    }
    packed.into_boxed_slice()
}

/// Each name of a slot's packed names, with where it starts (its length byte).
fn unpack(packed: &[u8]) -> impl Iterator<Item = (u32, &str)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let start = at;
        at += 1 + usize::from(*packed.get(start)?);
        let name = std::str::from_utf8(&packed[start + 1..at]).expect("packed from strings");
        // A slot holds one certificate's names: far under 4 GiB.
        Some((
            u32::try_from(start).expect("a slot's names fit u32 offsets"),
            name,
        ))
    })
}

/// A stored name as the index keys it: lower case, no trailing dot.
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A handshake's name as the index keys it: parsed as the service parses a domain's name (an
/// A-label, lower case, no trailing dot), so that what was registered is what is found.
fn host_name(server_name: &str) -> Result<String, NotAHostName> {
    DomainName::parse(server_name)
        .map(DomainName::into_string)
        .map_err(|_| NotAHostName(server_name.chars().take(300).collect()))
}

#[cfg(test)]
mod tests;

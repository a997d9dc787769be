//! A fault-injecting HTTPS front for Pebble: a CA that rate-limits, falls over, lists
//! certificate profiles and (optionally) gives ACME Renewal Information, which Pebble 2.4 does
//! not, so the service's CA etiquette can be tested against a real ACME server.
//!
//! The front is a reverse proxy: every URL the client uses is on the front, which forwards each
//! request to Pebble over HTTPS. What the front changes relative to Pebble, and nothing else:
//!
//! - requests of a [`FrontTarget`] the test chose are answered by the front itself, with a `429
//!   rateLimited` ([`CaFront::answer_rate_limited`]) or `503 serverInternal`
//!   ([`CaFront::answer_unavailable`]) problem, `Retry-After` and a fresh `Replay-Nonce` of
//!   Pebble's (the client may sign its next request with it, as it may with any error's), or
//!   with a `400` policy problem of the kind the test names ([`CaFront::answer_refused`]);
//! - requests of a [`FrontTarget`] the test chose go to Pebble, which acts on them, and their
//!   answer is lost: the front closes the connection instead ([`CaFront::lose_answers`]), or
//!   they wait a while the test chose before they go ([`CaFront::slow_down`]);
//! - answers to requests of a [`FrontTarget`] the test holds ([`CaFront::hold_answers`]) wait,
//!   Pebble having acted on the request, until the test releases them;
//! - while [`CaFront::down`], nothing listens on the front's port: connections are refused, as
//!   at a CA that is gone, until [`CaFront::up`];
//! - with profiles set ([`CaFront::profiles`]) the directory's `meta.profiles` lists them, as
//!   Let's Encrypt's does; a newOrder naming another profile gets a `400 invalidProfile`
//!   problem, one naming a listed profile has it echoed in the order Pebble answered;
//! - with CAA identities set ([`CaFront::caa_identities`]) the directory's
//!   `meta.caaIdentities` lists them;
//! - with ARI ([`CaFront::start_with_ari`]) the directory lists `renewalInfo`, `GET
//!   /renewal-info/{certid}` answers the window the test set ([`CaFront::set_window`]), and a
//!   newOrder response echoes the request's `replaces` (RFC 9773 §5);
//! - when Pebble does not answer, the front answers a 502 problem (a 400 one when it could not
//!   read the client's request).
//!
//! The `profile` of a newOrder goes to Pebble as the client signed it: a JWS signs its payload,
//! so the front cannot take the field out, and it need not: Pebble 2.4 decodes the payload into
//! its own struct and ignores fields it does not know (its order then has no `profile`).
//!
//! Every other request and response passes through unchanged: method, path and query, headers
//! (`Host` included), body; status, headers (`Replay-Nonce`, `Location`, `Link`, `Retry-After`),
//! body. Only the hop-by-hop headers belong to each connection rather than pass, and a body the
//! front changed gets its own `Content-Length`. Signed requests are never altered.
//!
//! Why the front's URLs work: Pebble builds every URL it answers (the directory's, `Location`,
//! `Link`, the order's, authorization's, challenge's, finalize and certificate URLs, the account
//! URL it expects as `kid`) from the request's `Host` (`relativeEndpoint` in its `wfe/wfe.go`),
//! and it checks a JWS's `url` against `https://` + `Host` + the request's path. With the
//! client's `Host` forwarded (the front's `127.0.0.1:{port}`), Pebble answers URLs on the front
//! and accepts the signatures the client made for the front's URLs (an External Account
//! Binding's too).
//!
//! The front serves Pebble's own HTTPS certificate (`localhost`/`127.0.0.1`, from the test CA),
//! so a client that trusts Pebble through `pebble.ca_bundle()` trusts the front too.

mod answer;
mod renewal_info;
mod reply;
mod server;
#[cfg(test)]
mod tests;
mod upstream;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hyper::StatusCode;

use crate::pebble::Pebble;
use renewal_info::Window;
use server::Control;

/// Where the renewal information lives on the front (with ARI); a certid follows after a `/`.
const RENEWAL_INFO_PATH: &str = "/renewal-info";

/// A kind of request the front tells apart, by the request's path: the paths the directory
/// names (`newAccount`, `newOrder`), and those Pebble's answers name (an order's `finalize`,
/// an authorization's `challenges[].url`), as they passed through the front. The method does
/// not matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrontTarget {
    /// The directory's `newOrder`.
    NewOrder,
    /// An order's `finalize` URL.
    Finalize,
    /// The directory's `newAccount`.
    NewAccount,
    /// A challenge's URL (the client's "ready" and any POST-as-GET of it).
    Challenge,
    /// Every request, whatever its path (the directory, `newNonce`, renewal information, ...).
    Any,
}

/// An error the test chose for the next requests of a kind.
#[derive(Clone)]
struct Fault {
    status: StatusCode,
    /// The ACME problem type after `urn:ietf:params:acme:error:`.
    kind: &'static str,
    detail: String,
    retry_after: Duration,
    /// Requests still to answer so.
    remaining: usize,
}

/// The paths the front learned from what passed through it, to tell [`FrontTarget`]s apart.
#[derive(Default)]
struct Paths {
    new_nonce: Option<String>,
    new_account: Option<String>,
    new_order: Option<String>,
    finalize: HashSet<String>,
    challenges: HashSet<String>,
}

/// What the test chose, and what the front saw.
#[derive(Default)]
struct State {
    paths: Paths,
    faults: HashMap<FrontTarget, Fault>,
    /// Requests of a kind still to pass to Pebble whose answer is then lost (the connection
    /// closed instead).
    lost_answers: HashMap<FrontTarget, usize>,
    requests: HashMap<FrontTarget, usize>,
    /// newOrder requests Pebble answered `201 Created`: the orders it placed.
    orders_created: usize,
    /// How long requests of a kind wait before they go to Pebble.
    delays: HashMap<FrontTarget, Duration>,
    /// `meta.profiles` of the directory: name, description; empty lists none (Pebble's own).
    profiles: Vec<(String, String)>,
    /// `meta.caaIdentities` of the directory; empty lists none (Pebble's own).
    caa_identities: Vec<String>,
    /// The `profile` of every newOrder request, in order.
    orders_profiles: Vec<Option<String>>,
    /// The `replaces` of newOrder requests that had one, in order.
    replaces: Vec<String>,
    /// The window of every certid without one of its own.
    window: Option<Window>,
    /// Windows of single certids, over `window`.
    windows_for: HashMap<String, Window>,
    /// The status every renewal-info request answers, until a window is set again.
    renewal_info_error: Option<StatusCode>,
    /// The certids asked for at `/renewal-info/{certid}`.
    renewal_info_requests: Vec<String>,
    /// The certificate chains (PEM) Pebble answered through the front, in order.
    certificate_chains: Vec<String>,
    /// The kinds of request whose answers wait, Pebble having acted on them already.
    held: HashSet<FrontTarget>,
}

/// What the server's connections share with the test's handle.
struct Shared {
    /// Pebble's ACME address, and the path of its directory.
    pebble: std::net::SocketAddr,
    directory_path: String,
    /// Whether the front gives ACME Renewal Information.
    ari: bool,
    /// The front's own origin (`https://127.0.0.1:{port}`), for URLs of a request without
    /// `Host`.
    origin: String,
    /// Trusts the test CA only: the one Pebble's HTTPS certificate comes from.
    pebble_tls: tokio_rustls::TlsConnector,
    state: Mutex<State>,
}

impl Shared {
    /// The state; a test that panicked while holding it leaves it usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the answer to a request at `path` is to be lost, counted.
    fn take_lost_answer(&self, path: &str) -> bool {
        let mut state = self.state();
        let Some(target) = state.paths.target(path) else {
            return false;
        };
        let Some(remaining) = state.lost_answers.get_mut(&target) else {
            return false;
        };
        *remaining -= 1;
        if *remaining == 0 {
            state.lost_answers.remove(&target);
        }
        true
    }
}

/// An HTTPS reverse proxy for Pebble that injects the CA behaviour a test chooses (rate limits,
/// outages, profiles, renewal information); stops on drop.
pub struct CaFront {
    port: u16,
    shared: Arc<Shared>,
    /// Tells the server to go down or up; dropped, it stops the server.
    control: Option<tokio::sync::mpsc::UnboundedSender<Control>>,
    /// Whether the test took the CA down (and has not brought it up).
    is_down: AtomicBool,
    thread: Option<JoinHandle<()>>,
}

impl CaFront {
    /// Starts a front for `pebble` on a free loopback port, on a thread and tokio runtime of its
    /// own (a test's runtime may end before the front does). Listening when it returns. No
    /// renewal information: the directory lists Pebble's endpoints only.
    pub fn start(pebble: &Pebble) -> CaFront {
        CaFront::start_as(pebble, false)
    }

    /// Starts a front for `pebble` that gives ACME Renewal Information as well: `renewalInfo`
    /// in the directory, the windows the test sets, `replaces` echoed.
    pub fn start_with_ari(pebble: &Pebble) -> CaFront {
        CaFront::start_as(pebble, true)
    }

    /// Starts a front, with or without ARI.
    fn start_as(pebble: &Pebble, ari: bool) -> CaFront {
        let ca = std::fs::read(pebble.ca_bundle()).expect("read the test CA");
        let (cert, key) = pebble.https_identity();
        let tls = server::server_tls(&cert, &key);
        let (listener, port) = server::bind();
        let directory_url = pebble.directory_url();
        let shared = Arc::new(Shared {
            pebble: std::net::SocketAddr::from(([127, 0, 0, 1], pebble.acme_port)),
            directory_path: answer::url_path(&directory_url).to_owned(),
            ari,
            origin: format!("https://127.0.0.1:{port}"),
            pebble_tls: server::client_tls(&ca),
            state: Mutex::new(State::default()),
        });
        let (control, controls) = tokio::sync::mpsc::unbounded_channel();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("ca-front-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the CA front's runtime");
                runtime.block_on(server::serve(listener, tls, serving, controls));
            })
            .expect("spawn the CA front's thread");
        CaFront {
            port,
            shared,
            control: Some(control),
            is_down: AtomicBool::new(false),
            thread: Some(thread),
        }
    }

    /// The directory URL to give the client under test (`ACME_DIRECTORY`).
    pub fn directory_url(&self) -> String {
        format!("{}{}", self.shared.origin, self.shared.directory_path)
    }

    /// The front's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answers the next `times` requests of kind `what` with `429 Too Many Requests`, a
    /// `urn:ietf:params:acme:error:rateLimited` problem and `Retry-After` (whole seconds,
    /// rounded up), as Let's Encrypt answers a rate limit; over any injection for `what` set
    /// before (`times` 0 ends it). Requests of another kind pass.
    pub fn answer_rate_limited(&self, what: FrontTarget, times: usize, retry_after: Duration) {
        let detail = format!(
            "too many {} recently (injected by the test front)",
            match what {
                FrontTarget::NewOrder => "new orders",
                FrontTarget::Finalize => "finalizations",
                FrontTarget::NewAccount => "new accounts",
                FrontTarget::Challenge => "challenge responses",
                FrontTarget::Any => "requests",
            }
        );
        self.inject(
            what,
            times,
            retry_after,
            StatusCode::TOO_MANY_REQUESTS,
            "rateLimited",
            detail,
        );
    }

    /// Answers the next `times` requests of kind `what` with `503 Service Unavailable`, a
    /// `urn:ietf:params:acme:error:serverInternal` problem and `Retry-After`, as a CA in
    /// maintenance does; over any injection for `what` set before (`times` 0 ends it).
    /// `answer_unavailable(FrontTarget::Any, usize::MAX, ..)` is an outage that still answers.
    pub fn answer_unavailable(&self, what: FrontTarget, times: usize, retry_after: Duration) {
        let detail = "the CA is unavailable (injected by the test front)".to_owned();
        self.inject(
            what,
            times,
            retry_after,
            StatusCode::SERVICE_UNAVAILABLE,
            "serverInternal",
            detail,
        );
    }

    /// Answers the next `times` requests of kind `what` with `400 Bad Request` and a
    /// `urn:ietf:params:acme:error:<kind>` problem, no `Retry-After`: a final refusal on policy,
    /// as a CA refuses names it will not issue for (`rejectedIdentifier`, `caa`).
    pub fn answer_refused(&self, what: FrontTarget, times: usize, kind: &'static str) {
        let detail = format!("the CA will not do this ({kind}, injected by the test front)");
        self.inject(
            what,
            times,
            Duration::ZERO,
            StatusCode::BAD_REQUEST,
            kind,
            detail,
        );
    }

    /// Passes the next `times` requests of kind `what` to Pebble, which acts on them, and then
    /// loses the answer: the front closes the connection instead of answering, as a network
    /// that fails after the CA got the request does. The client cannot know whether it acted.
    pub fn lose_answers(&self, what: FrontTarget, times: usize) {
        let mut state = self.shared.state();
        if times == 0 {
            state.lost_answers.remove(&what);
        } else {
            state.lost_answers.insert(what, times);
        }
    }

    /// Holds every request of kind `what` for `delay` before passing it to Pebble (zero ends
    /// it): a CA that answers slowly.
    pub fn slow_down(&self, what: FrontTarget, delay: Duration) {
        let mut state = self.shared.state();
        if delay.is_zero() {
            state.delays.remove(&what);
        } else {
            state.delays.insert(what, delay);
        }
    }

    /// Sets (or, `times` 0, ends) the error the next `times` requests of kind `what` get.
    fn inject(
        &self,
        what: FrontTarget,
        times: usize,
        retry_after: Duration,
        status: StatusCode,
        kind: &'static str,
        detail: String,
    ) {
        let mut state = self.shared.state();
        if times == 0 {
            state.faults.remove(&what);
            return;
        }
        let fault = Fault {
            status,
            kind,
            detail,
            retry_after,
            remaining: times,
        };
        state.faults.insert(what, fault);
    }

    /// How many orders Pebble placed through the front (newOrder answered `201 Created`, the
    /// answer lost or not): unlike [`CaFront::requests`], a request Pebble refused (a rejected
    /// nonce, which the client sends again) is not one.
    pub fn orders_created(&self) -> usize {
        self.shared.state().orders_created
    }

    /// How many requests of kind `what` reached the front so far, answered by the front or
    /// passed to Pebble (none while it was [`CaFront::down`]).
    pub fn requests(&self, what: FrontTarget) -> usize {
        self.shared
            .state()
            .requests
            .get(&what)
            .copied()
            .unwrap_or(0)
    }

    /// Takes the CA down: the front stops listening and closes every open connection, so
    /// connections are refused until [`CaFront::up`]. Done when it returns.
    pub fn down(&self) {
        if self.is_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        self.send(Control::Down(done));
        // A plain channel: the test may call this from inside its own runtime.
        finished.recv().expect("the CA front went down");
    }

    /// Brings the CA back on the same port after [`CaFront::down`]; listening when it returns.
    /// Nothing to do while it is up.
    pub fn up(&self) {
        if !self.is_down.swap(false, Ordering::SeqCst) {
            return;
        }
        let listener = server::rebind(self.port);
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        self.send(Control::Up(listener, done));
        finished.recv().expect("the CA front came up");
    }

    /// Tells the server, which runs until the front is dropped.
    fn send(&self, control: Control) {
        self.control
            .as_ref()
            .and_then(|sender| sender.send(control).ok())
            .expect("the CA front is running");
    }

    /// Lists these profiles (name, description) in the directory's `meta.profiles`, as Let's
    /// Encrypt does (Pebble 2.4 lists none), for directories fetched from now on; empty lists
    /// none again. While profiles are listed, a newOrder asking for another profile gets a `400
    /// urn:ietf:params:acme:error:invalidProfile` problem from the front.
    pub fn profiles(&self, profiles: &[(&str, &str)]) {
        self.shared.state().profiles = profiles
            .iter()
            .map(|(name, description)| ((*name).to_owned(), (*description).to_owned()))
            .collect();
    }

    /// Lists these issuer domain names in the directory's `meta.caaIdentities` (RFC 8555
    /// §7.1.1), as Let's Encrypt lists `letsencrypt.org` (Pebble 2.4 lists none), for
    /// directories fetched from now on.
    pub fn caa_identities(&self, identities: &[&str]) {
        self.shared.state().caa_identities = identities.iter().map(|i| (*i).to_owned()).collect();
    }

    /// The `profile` each newOrder request asked for (`None`: it named none), in order,
    /// whatever it was answered.
    pub fn orders_profiles(&self) -> Vec<Option<String>> {
        self.shared.state().orders_profiles.clone()
    }

    /// Answers this renewal window (with ARI) for every certid without a window of its own,
    /// with `Retry-After: retry_after_secs`; ends [`CaFront::answer_renewal_info_error`].
    pub fn set_window(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        explanation_url: Option<&str>,
        retry_after_secs: u64,
    ) {
        let mut state = self.shared.state();
        state.window = Some(Window::new(start, end, explanation_url, retry_after_secs));
        state.renewal_info_error = None;
    }

    /// Answers this renewal window (with ARI) for `certid` alone, over
    /// [`CaFront::set_window`]'s; ends [`CaFront::answer_renewal_info_error`].
    pub fn set_window_for(
        &self,
        certid: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        explanation_url: Option<&str>,
        retry_after_secs: u64,
    ) {
        let window = Window::new(start, end, explanation_url, retry_after_secs);
        let mut state = self.shared.state();
        state.windows_for.insert(certid.to_owned(), window);
        state.renewal_info_error = None;
    }

    /// Answers every renewal-info request with `status` (e.g. 500) and an ACME problem, until a
    /// window is set again. Panics on a status that is no HTTP error.
    pub fn answer_renewal_info_error(&self, status: u16) {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|status| status.is_client_error() || status.is_server_error())
            .unwrap_or_else(|| panic!("{status} is no HTTP error status"));
        self.shared.state().renewal_info_error = Some(status);
    }

    /// The certids asked for at `/renewal-info/{certid}`, in order, answered or not.
    pub fn renewal_info_requests(&self) -> Vec<String> {
        self.shared.state().renewal_info_requests.clone()
    }

    /// The `replaces` certids of the newOrder requests that had one, in order, whatever they
    /// were answered.
    pub fn replaces_seen(&self) -> Vec<String> {
        self.shared.state().replaces.clone()
    }

    /// Holds the answers to requests of kind `what` (not `Any`) from now on: each request is
    /// passed to Pebble, which acts on it, and its answer waits until
    /// [`CaFront::release_answers`], as a CA that is slow to answer does.
    pub fn hold_answers(&self, what: FrontTarget) {
        self.shared.state().held.insert(what);
    }

    /// Lets the answers held for `what` go, and the next ones pass at once.
    pub fn release_answers(&self, what: FrontTarget) {
        self.shared.state().held.remove(&what);
    }

    /// Every certificate chain (PEM, leaf first) a client downloaded through the front, in
    /// order: what the CA issued, whether or not the client recorded it.
    pub fn certificate_chains(&self) -> Vec<String> {
        self.shared.state().certificate_chains.clone()
    }
}

impl Drop for CaFront {
    fn drop(&mut self) {
        // The server stops when its control channel closes.
        drop(self.control.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

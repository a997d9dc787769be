//! The delegation zone's DNS server over TCP, with its own accept loop rather than
//! hickory-server's `register_listener`, which holds every connection a client opens (one task
//! and one file descriptor each, the idle timer reset by every query): about a thousand held
//! connections took every descriptor of the process, and with them the HTTP API, the database
//! pool and webhook sends, while the accept loop spun on `EMFILE`.
//!
//! Here a connection takes a slot before it is served: at most [`TcpLimits::max_connections`]
//! at once, and [`TcpLimits::max_per_source`] from one source (an IPv4 address, an IPv6 /64,
//! what one client usually holds); a connection over either is closed at once. Each connection
//! lives at most [`TcpLimits::lifetime`] whatever it sends, so a slow trickle of queries cannot
//! hold a slot for good, and closes after [`TcpLimits::idle`] without a query. Accept errors
//! (`EMFILE` above all) back off, up to a second, instead of spinning. The framing (two bytes
//! of length before each message), the answer's encoding and the request handler are
//! hickory's, the same as over UDP.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use hickory_server::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::tcp::TcpStream;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::BufDnsStreamHandle;
use hickory_server::proto::op::{Header, MessageType, ResponseCode, SerialMessage};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::server::{
    Request, RequestHandler, ResponseHandle, ResponseHandler, TimeoutStream,
};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use tokio::task::JoinSet;

use crate::metrics::METRICS;

/// Outgoing buffer per TCP connection, in messages.
const TCP_RESPONSE_BUFFER: usize = 16;

/// The longest wait between two accepts after an error (`EMFILE`, `ENFILE`, `ENOBUFS`): long
/// enough not to spin, short enough to serve again soon after descriptors are freed.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The first wait after an accept error, doubled at each further error.
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// How many TCP connections the server holds, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections held at once, all sources together (`DNS_TCP_MAX_CONNECTIONS`, lowered at
    /// start to half the process's limit of open files: see [`cap_to_descriptors`]).
    pub max_connections: usize,
    /// Connections held at once from one source (`DNS_TCP_MAX_CONNECTIONS_PER_ADDRESS`): an
    /// IPv4 address, or an IPv6 /64.
    pub max_per_source: usize,
    /// How long a connection may wait for its next query before it is closed.
    pub idle: Duration,
    /// How long a connection lives at most, however often it asks: a query every few seconds
    /// would otherwise reset the idle timer for ever.
    pub lifetime: Duration,
}

impl TcpLimits {
    /// The idle timeout of a connection: RFC 7766 asks for seconds, not minutes.
    pub const IDLE: Duration = Duration::from_secs(5);
    /// The lifetime of a connection: a resolver that falls back to TCP for a truncated answer
    /// needs one or two queries, well within it.
    pub const LIFETIME: Duration = Duration::from_secs(30);
}

/// The process's limit of open files, raised to its hard limit (a service under systemd
/// starts with a soft limit of 1,024 and a hard one far above), and the TCP cap it allows:
/// at most half the descriptors go to DNS connections, the other half stays for the HTTP
/// API, the database pool, webhook sends and files. Returns the cap and the limit it read.
pub fn cap_to_descriptors(configured: usize) -> (usize, Option<u64>) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = match (limit.current, limit.maximum) {
        (Some(current), maximum) if maximum.is_none_or(|maximum| maximum > current) => {
            let wanted = Rlimit {
                current: maximum,
                maximum,
            };
            match setrlimit(Resource::Nofile, wanted) {
                Ok(()) => maximum,
                Err(error) => {
                    tracing::warn!(%error, current, ?maximum, "could not raise the limit of open files");
                    Some(current)
                }
            }
        }
        (current, _) => current,
    };
    let cap = match raised {
        Some(files) => configured.min(usize::try_from(files / 2).unwrap_or(usize::MAX)),
        None => configured,
    };
    (cap.max(1), raised)
}

/// The source a connection counts against: an IPv4 address (IPv4-mapped IPv6 included), or
/// the /64 of an IPv6 address, since one IPv6 client usually holds a whole /64.
fn source_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// The connections held now, by source.
#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// The slots of the server's connections: taken before a connection is served, given back when
/// its [`Slot`] drops, however its task ends.
#[derive(Debug)]
struct Slots {
    limits: TcpLimits,
    held: Mutex<Held>,
}

/// Why a connection was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The server holds `max_connections` already.
    Total,
    /// The source holds `max_per_source` already.
    PerSource,
}

impl Slots {
    fn new(limits: TcpLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            held: Mutex::new(Held::default()),
        })
    }

    /// A slot for a connection from `peer`, or why there is none.
    fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let source = source_of(peer);
        let mut held = self.lock();
        if held.total >= self.limits.max_connections {
            return Err(Refusal::Total);
        }
        let from_source = held.by_source.entry(source).or_default();
        if *from_source >= self.limits.max_per_source {
            return Err(Refusal::PerSource);
        }
        *from_source += 1;
        held.total += 1;
        METRICS.dns_tcp_connections.set(held.total as i64);
        Ok(Slot {
            slots: self.clone(),
            source,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One held connection's slot, given back on drop.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        held.total = held.total.saturating_sub(1);
        if let Some(from_source) = held.by_source.get_mut(&self.source) {
            *from_source -= 1;
            if *from_source == 0 {
                held.by_source.remove(&self.source);
            }
        }
        METRICS.dns_tcp_connections.set(held.total as i64);
    }
}

/// Accepts connections on `listener` for as long as the task runs, serving each that gets a
/// slot with `handler` and closing the others at once.
pub(super) async fn serve<H: RequestHandler>(
    listener: tokio::net::TcpListener,
    handler: Arc<H>,
    limits: TcpLimits,
) {
    let slots = Slots::new(limits);
    let mut connections = JoinSet::new();
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = FIRST_ACCEPT_BACKOFF;
                match slots.take(peer.ip()) {
                    Ok(slot) => {
                        connections.spawn(serve_connection(
                            stream,
                            peer,
                            handler.clone(),
                            limits,
                            slot,
                        ));
                    }
                    Err(refusal) => {
                        tracing::debug!(%peer, ?refusal, "DNS over TCP: over the cap, closed");
                        let reason = match refusal {
                            Refusal::Total => "total",
                            Refusal::PerSource => "per_source",
                        };
                        METRICS.dns_tcp_refusal(reason);
                        drop(stream);
                    }
                }
            }
            // The client gave up before the accept: nothing to wait for.
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(error) => {
                tracing::warn!(%error, ?backoff, "DNS over TCP: accept failed; waiting");
                METRICS.dns_tcp_refusal("accept_error");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

/// Serves one connection until the client closes it, it stays idle for `limits.idle`, or it
/// has lived `limits.lifetime`; the slot goes back when this ends.
async fn serve_connection<H: RequestHandler>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    limits: TcpLimits,
    _slot: Slot,
) {
    let (messages, responses) = TcpStream::from_stream_with_buffer_size(
        AsyncIoTokioAsStd(stream),
        peer,
        TCP_RESPONSE_BUFFER,
    );
    let mut messages = TimeoutStream::new(messages, limits.idle);
    let queries = async {
        while let Some(message) = messages.next().await {
            match message {
                // Answered one after the other, as hickory does: one client, one task.
                Ok(message) => answer(&*handler, message, responses.clone()).await,
                Err(error) => {
                    tracing::debug!(%peer, %error, "DNS over TCP: connection closed");
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(limits.lifetime, queries)
        .await
        .is_err()
    {
        tracing::debug!(%peer, "DNS over TCP: connection closed at the end of its lifetime");
    }
}

/// Answers one message as hickory's server does for UDP: nothing for a runt (under a header's
/// 12 bytes) or a response, FORMERR for a message that does not parse, else the handler's
/// answer.
async fn answer<H: RequestHandler>(
    handler: &H,
    message: SerialMessage,
    responses: BufDnsStreamHandle,
) {
    let (bytes, peer) = message.into_parts();
    let mut response_handle = ResponseHandle::new(peer, responses, Protocol::Tcp);
    let Ok(header) = Header::read(&mut BinDecoder::new(&bytes)) else {
        return;
    };
    match Request::from_bytes(bytes, peer, Protocol::Tcp) {
        Ok(request) if request.metadata.message_type == MessageType::Response => {}
        Ok(request) => {
            handler
                .handle_request::<_, TokioTime>(&request, response_handle)
                .await;
        }
        Err(error) => {
            tracing::debug!(%peer, %error, "DNS over TCP: malformed query");
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return;
            };
            let response = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            if let Err(error) = response_handle.send_response(response).await {
                tracing::debug!(%peer, %error, "DNS over TCP: could not send FORMERR");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_per_source: usize) -> TcpLimits {
        TcpLimits {
            max_connections,
            max_per_source,
            idle: TcpLimits::IDLE,
            lifetime: TcpLimits::LIFETIME,
        }
    }

    #[test]
    fn a_slot_is_refused_over_either_cap_and_given_back_on_drop() {
        let slots = Slots::new(limits(3, 2));
        let a: IpAddr = "192.0.2.1".parse().expect("an address");
        let b: IpAddr = "192.0.2.2".parse().expect("an address");
        let first = slots.take(a).expect("a slot");
        let _second = slots.take(a).expect("a slot");
        assert_eq!(slots.take(a).err(), Some(Refusal::PerSource));
        let _third = slots.take(b).expect("a slot");
        assert_eq!(slots.take(b).err(), Some(Refusal::Total));
        drop(first);
        assert!(slots.take(a).is_ok(), "the slot went back when dropped");
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_its_ipv4() {
        let slots = Slots::new(limits(10, 1));
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("an address");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("an address");
        let other_64: IpAddr = "2001:db8:1:3::1".parse().expect("an address");
        let _held = slots.take(one).expect("a slot");
        assert_eq!(slots.take(same_64).err(), Some(Refusal::PerSource));
        let _other = slots.take(other_64).expect("another /64");
        let v4: IpAddr = "192.0.2.7".parse().expect("an address");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("an address");
        let _v4 = slots.take(v4).expect("a slot");
        assert_eq!(slots.take(mapped).err(), Some(Refusal::PerSource));
    }

    #[test]
    fn the_cap_leaves_half_the_descriptors_to_the_rest_of_the_process() {
        let (cap, files) = cap_to_descriptors(usize::MAX);
        let files = files.expect("Linux has a limit of open files");
        assert_eq!(cap as u64, files / 2);
        let (small, _) = cap_to_descriptors(7);
        assert_eq!(small, 7);
    }
}

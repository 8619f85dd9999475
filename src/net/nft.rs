//! The kernel data path (`data-path kernel`): instead of relaying a data connection,
//! ftpgate writes three elements into the maps of its nftables table and the kernel
//! forwards the connection itself, like the FTP conntrack helper does, but only for
//! the connection ftpgate approved:
//!
//! - `data_dnat4`/`6`: (peer . announced address . announced port) → onward address
//!   and port: the connection the peer makes to what ftpgate announced goes on to
//!   where the relay would have connected.
//! - `data_snat4`/`6`: (peer . onward address . onward port) → the address the relay
//!   would have connected from, when that is not the peer's own. Two holes can share
//!   this key (a server reuses its passive ports), so ftpgate counts the holes that use
//!   each one and deletes it with the last.
//! - `data_pass4`/`6`: (peer . announced address . announced port), the key of the DNAT
//!   element: the prerouting chain `data_pass` lets one new connection with this key
//!   through, before DNAT, and deletes the element as it does (one-shot, invariant 3).
//!   The announced port is ftpgate's own, reserved until the hole is gone, so no two
//!   holes share it. Every element also expires with the expectation.
//!
//! The relay path (every `listen transparent` listener) writes one element per data
//! connection it announces, into `relay4`/`6`: (peer . announced address . announced
//! port). The ruleset hands exactly these connections to ftpgate (REDIRECT or TPROXY)
//! and marks them for the operator's input chain, so nothing else that crosses the
//! router, traffic to the same port range included, is touched.
//!
//! The table, maps and rules are the operator's (`deploy/nftables/*.nft`); ftpgate only
//! adds and deletes elements, over one netlink socket, one batch per change.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netlink_packet_core::{
    Emitable, ErrorBuffer, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, Nla,
};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

// From <linux/netfilter/nfnetlink.h> and <linux/netfilter/nf_tables.h>.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
/// Deletes an element, and is no error when there is none (Linux 6.3 and later).
const NFT_MSG_DESTROYSETELEM: u16 = 30;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const _: () = assert!(NFTA_SET_TABLE == NFTA_SET_ELEM_LIST_TABLE);
const _: () = assert!(NFTA_SET_NAME == NFTA_SET_ELEM_LIST_SET);
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
/// The end of an interval element of a concatenation (Linux 5.6 and later).
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFPROTO_INET: u8 = 1;
const AF_UNSPEC: u8 = 0;
const ENOENT: i32 = 2;
const EPERM: i32 = 1;
const DEL: u16 = NLM_F_REQUEST | NLM_F_ACK;
const NEW: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;

/// The table ftpgate's maps live in (family `inet`).
pub const TABLE: &str = "ftpgate";

/// The names of the maps and the set of one address family.
fn names(v4: bool) -> [&'static str; 3] {
    if v4 {
        ["data_dnat4", "data_snat4", "data_pass4"]
    } else {
        ["data_dnat6", "data_snat6", "data_pass6"]
    }
}

/// The set of a family's announced relay connections.
fn relay_set(v4: bool) -> &'static str {
    if v4 { "relay4" } else { "relay6" }
}

/// The map of a family's sessions passed through (`tls passthrough`).
fn passthrough_set(v4: bool) -> &'static str {
    if v4 { "passthrough4" } else { "passthrough6" }
}

/// Every set and map the rulesets declare for ftpgate to write.
fn every_name() -> impl Iterator<Item = &'static str> {
    names(true)
        .into_iter()
        .chain(names(false))
        .chain([relay_set(true), relay_set(false)])
        .chain([passthrough_set(true), passthrough_set(false)])
}

/// A session passed through (`tls passthrough`): the ruleset lets `client` open
/// connections to `server` on `ports` (the server's passive ports), marks them as
/// ftpgate's and makes them leave from `from`, the address of ftpgate's control
/// connection to the server, until the session ends. An interval element of the map
/// `passthrough4`/`6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passage {
    client: IpAddr,
    server: IpAddr,
    from: IpAddr,
    ports: crate::vocab::PortRange,
}

impl Passage {
    /// `None` across families: such a connection cannot exist.
    pub fn new(
        client: IpAddr,
        server: IpAddr,
        from: IpAddr,
        ports: crate::vocab::PortRange,
    ) -> Option<Passage> {
        let [client, server, from] = [client, server, from].map(|ip| ip.to_canonical());
        let v4 = client.is_ipv4();
        (server.is_ipv4() == v4 && from.is_ipv4() == v4).then_some(Passage {
            client,
            server,
            from,
            ports,
        })
    }

    /// The first and the last key of the interval.
    fn keys(&self) -> (Key, Key) {
        let key = |port| {
            concat(&[
                Field::Ip(self.client),
                Field::Ip(self.server),
                Field::Port(port),
            ])
        };
        (key(self.ports.lo), key(self.ports.hi))
    }

    fn element(&self, message: u16) -> NftMessage {
        let (key, end) = self.keys();
        let value = (message == NFT_MSG_NEWSETELEM).then(|| concat(&[Field::Ip(self.from)]));
        let element = Element {
            key,
            key_end: Some(end),
            value,
            timeout: None,
        };
        list(message, passthrough_set(self.client.is_ipv4()), element)
    }
}

/// A data connection the relay announced: the ruleset hands the connection from
/// `peer` to `dst` to ftpgate, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    pub peer: IpAddr,
    pub dst: SocketAddr,
}

impl Announced {
    /// `None` across families: such a connection cannot exist.
    pub fn new(peer: IpAddr, dst: SocketAddr) -> Option<Announced> {
        let (peer, ip) = (peer.to_canonical(), dst.ip().to_canonical());
        (peer.is_ipv4() == ip.is_ipv4() && !peer.is_unspecified()).then_some(Announced {
            peer,
            dst: SocketAddr::new(ip, dst.port()),
        })
    }

    fn key(&self) -> Key {
        concat(&[
            Field::Ip(self.peer),
            Field::Ip(self.dst.ip()),
            Field::Port(self.dst.port()),
        ])
    }

    fn set(&self) -> &'static str {
        relay_set(self.peer.is_ipv4())
    }
}

/// One approved data connection, as the kernel is to forward it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hole {
    /// The only peer that may connect.
    pub peer: IpAddr,
    /// What the peer was told to connect to.
    pub dst: SocketAddr,
    /// Where the connection goes on to.
    pub onward: SocketAddr,
    /// The source the onward side sees, when it is not the peer's own address.
    pub snat: Option<IpAddr>,
}

impl Hole {
    /// The hole for a connection from `peer` to `dst`, going on to `onward` from
    /// `from` (unspecified: wherever the peer's packets come from, as the relay lets
    /// the routing choose). `None` when the addresses are not all of one family: NAT
    /// does not translate between IPv4 and IPv6, so such a connection needs the relay.
    pub fn new(peer: IpAddr, dst: SocketAddr, onward: SocketAddr, from: IpAddr) -> Option<Hole> {
        let v4 = peer.is_ipv4();
        let same = [dst.ip(), onward.ip()]
            .iter()
            .all(|ip| ip.is_ipv4() == v4 && !ip.is_unspecified());
        let from_ok = from.is_unspecified() || from.is_ipv4() == v4;
        (same && from_ok && !peer.is_unspecified()).then(|| Hole {
            peer,
            dst,
            onward,
            snat: (from != peer && !from.is_unspecified()).then_some(from),
        })
    }

    fn v4(&self) -> bool {
        self.peer.is_ipv4()
    }

    /// The `dnat` element: key and value.
    fn dnat(&self) -> (Key, Key) {
        (
            concat(&[
                Field::Ip(self.peer),
                Field::Ip(self.dst.ip()),
                Field::Port(self.dst.port()),
            ]),
            concat(&[Field::Ip(self.onward.ip()), Field::Port(self.onward.port())]),
        )
    }

    /// The key of the `snat` element: the connection after DNAT.
    fn forwarded(&self) -> Key {
        concat(&[
            Field::Ip(self.peer),
            Field::Ip(self.onward.ip()),
            Field::Port(self.onward.port()),
        ])
    }
}

enum Field {
    Ip(IpAddr),
    Port(u16),
}

/// A key or value of a set element: a concatenation of at most two IPv6 addresses and
/// a port, held inline so that writing a hole allocates nothing for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    bytes: [u8; 40],
    len: usize,
}

impl Key {
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    fn push(&mut self, field: &[u8]) {
        if let Some(to) = self.bytes.get_mut(self.len..self.len + field.len()) {
            to.copy_from_slice(field);
            self.len += field.len();
        }
    }
}

/// nftables' encoding of a concatenation: each field in network byte order, padded
/// to a multiple of four bytes (one 32-bit register each).
fn concat(fields: &[Field]) -> Key {
    let mut out = Key {
        bytes: [0; 40],
        len: 0,
    };
    for field in fields {
        match field {
            Field::Ip(IpAddr::V4(ip)) => out.push(&ip.octets()),
            Field::Ip(IpAddr::V6(ip)) => out.push(&ip.octets()),
            Field::Port(port) => {
                out.push(&port.to_be_bytes());
                out.push(&[0, 0]);
            }
        }
    }
    out
}

/// One element of a set or map, as a set-element message carries it.
#[derive(Debug, Clone, Copy)]
struct Element {
    key: Key,
    /// The last key of an interval element.
    key_end: Option<Key>,
    /// A map element's value.
    value: Option<Key>,
    timeout: Option<Duration>,
}

/// What an nf_tables message says after its `nfgenmsg` header.
#[derive(Debug, Clone, Copy)]
enum Body {
    /// Nothing (the batch markers).
    Empty,
    /// Table and set (`GETSET`; a `DELSETELEM` with nothing more empties the set).
    /// `NFTA_SET_TABLE`/`NAME` and `NFTA_SET_ELEM_LIST_TABLE`/`SET` are the same
    /// numbers, so one encoding serves both.
    Set(&'static str),
    /// Table, set and one element.
    Element(&'static str, Element),
}

/// One netlink attribute, written in place: attributes borrow their values and nest
/// by reference, so a message is built on the stack and emitted straight into the
/// datagram, with no buffer per attribute and no copy per nesting level.
#[derive(Debug, Clone, Copy)]
enum Attr<'a> {
    /// A NUL-terminated string.
    Str(u16, &'a str),
    Bytes(u16, &'a [u8]),
    /// Made by [`Attr::nested`], which works out the length once: the crate asks an
    /// attribute for it three times per emit, which, recomputed through every level
    /// of nesting, was most of the cost of writing a hole.
    Nested(u16, &'a [Attr<'a>], usize),
}

impl<'a> Attr<'a> {
    fn nested(kind: u16, inner: &'a [Attr<'a>]) -> Attr<'a> {
        Attr::Nested(kind, inner, inner.buffer_len())
    }
}

impl Nla for Attr<'_> {
    fn value_len(&self) -> usize {
        match self {
            Attr::Str(_, s) => s.len() + 1,
            Attr::Bytes(_, b) => b.len(),
            Attr::Nested(_, _, len) => *len,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::Str(kind, _) | Attr::Bytes(kind, _) => *kind,
            Attr::Nested(kind, ..) => kind | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attr::Str(_, s) => {
                let (text, nul) = buffer.split_at_mut(s.len());
                text.copy_from_slice(s.as_bytes());
                nul.fill(0);
            }
            Attr::Bytes(_, b) => buffer.copy_from_slice(b),
            Attr::Nested(_, inner, _) => inner.emit(buffer),
        }
    }
}

/// One nf_tables message: `nfgenmsg` header and attributes.
#[derive(Debug, Clone, Copy)]
struct NftMessage {
    message_type: u16,
    family: u8,
    res_id: u16,
    body: Body,
}

impl NftMessage {
    /// Runs `emit` with the message's attributes.
    fn with_attrs<R>(&self, emit: impl FnOnce(&[Attr]) -> R) -> R {
        let (set, element) = match &self.body {
            Body::Empty => return emit(&[]),
            Body::Set(set) => {
                return emit(&[
                    Attr::Str(NFTA_SET_ELEM_LIST_TABLE, TABLE),
                    Attr::Str(NFTA_SET_ELEM_LIST_SET, set),
                ]);
            }
            Body::Element(set, element) => (set, element),
        };
        fn data(key: &Key) -> [Attr<'_>; 1] {
            [Attr::Bytes(NFTA_DATA_VALUE, key.as_slice())]
        }
        let key = data(&element.key);
        let key_end = element.key_end.as_ref().map(data);
        let value = element.value.as_ref().map(data);
        let timeout = element.timeout.map(|t| {
            u64::try_from(t.as_millis())
                .unwrap_or(u64::MAX)
                .to_be_bytes()
        });
        let parts = [
            Some(Attr::nested(NFTA_SET_ELEM_KEY, &key)),
            key_end
                .as_ref()
                .map(|end| Attr::nested(NFTA_SET_ELEM_KEY_END, end)),
            value.as_ref().map(|v| Attr::nested(NFTA_SET_ELEM_DATA, v)),
            timeout
                .as_ref()
                .map(|ms| Attr::Bytes(NFTA_SET_ELEM_TIMEOUT, ms)),
        ];
        let mut attrs = [Attr::Bytes(0, &[]); 4];
        let mut len = 0;
        for (slot, part) in attrs.iter_mut().zip(parts.into_iter().flatten()) {
            *slot = part;
            len += 1;
        }
        let one = [Attr::nested(
            NFTA_LIST_ELEM,
            attrs.get(..len).unwrap_or_default(),
        )];
        emit(&[
            Attr::Str(NFTA_SET_ELEM_LIST_TABLE, TABLE),
            Attr::Str(NFTA_SET_ELEM_LIST_SET, set),
            Attr::nested(NFTA_SET_ELEM_LIST_ELEMENTS, &one),
        ])
    }
}

impl NetlinkSerializable for NftMessage {
    fn message_type(&self) -> u16 {
        self.message_type
    }

    fn buffer_len(&self) -> usize {
        4 + self.with_attrs(|attrs| attrs.buffer_len())
    }

    fn serialize(&self, buffer: &mut [u8]) {
        let (header, attrs) = buffer.split_at_mut(4);
        header.copy_from_slice(&[
            self.family,
            0, // NFNETLINK_V0
            (self.res_id >> 8) as u8,
            self.res_id as u8,
        ]);
        self.with_attrs(|list| list.emit(attrs));
    }
}

/// A `NEWSETELEM`/`DELSETELEM` for one element of `set`.
fn element(
    message: u16,
    set: &'static str,
    key: Key,
    value: Option<Key>,
    timeout: Option<Duration>,
) -> NftMessage {
    let element = Element {
        key,
        key_end: None,
        value,
        timeout,
    };
    list(message, set, element)
}

/// A set-element message for the one element of `set`.
fn list(message: u16, set: &'static str, element: Element) -> NftMessage {
    NftMessage {
        message_type: NFNL_SUBSYS_NFTABLES << 8 | message,
        family: NFPROTO_INET,
        res_id: 0,
        body: Body::Element(set, element),
    }
}

/// A message about a whole set of ftpgate's table.
fn set_message(message: u16, set: &'static str) -> NftMessage {
    NftMessage {
        message_type: NFNL_SUBSYS_NFTABLES << 8 | message,
        family: NFPROTO_INET,
        res_id: 0,
        body: Body::Set(set),
    }
}

fn batch_marker(message_type: u16) -> NftMessage {
    NftMessage {
        message_type,
        family: AF_UNSPEC,
        res_id: NFNL_SUBSYS_NFTABLES,
        body: Body::Empty,
    }
}

/// The netlink side of the kernel data path and of the relay's announcements.
///
/// Each exchange runs inline on the task that needs it, on a non-blocking socket taken
/// from a small pool: nf_tables handles a batch inside `sendmsg` and queues every ACK
/// before it returns, so the `recvmsg` that follows never waits. No thread hop, no
/// lock held across a syscall, and two exchanges of different sessions do not queue
/// behind each other (the removal of a used hole stays off the next hole's path).
pub struct Nft {
    /// Idle sockets; one is taken for each exchange and given back after it.
    sockets: Mutex<Vec<Socket>>,
    seq: AtomicU32,
    /// How many installed holes use each `snat` key.
    snat_users: Mutex<HashMap<Key, usize>>,
    /// The kernel knows `DESTROYSETELEM`, so a delete of what may be gone already
    /// needs no lookup first.
    destroy: bool,
}

/// A pooled socket, given back when dropped (unless the exchange left it in doubt).
struct Pooled<'a> {
    pool: &'a Mutex<Vec<Socket>>,
    socket: Option<Socket>,
}

impl Pooled<'_> {
    fn get(&self) -> io::Result<&Socket> {
        self.socket
            .as_ref()
            .ok_or_else(|| io::Error::other("netlink socket gone"))
    }

    /// Closes the socket instead of pooling it: an answer may still be on its way.
    fn discard(&mut self) {
        self.socket = None;
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            self.pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(socket);
        }
    }
}

fn new_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.set_non_blocking(true)?;
    Ok(socket)
}

impl Nft {
    /// Opens the netlink socket and checks that table `inet ftpgate` has every map and
    /// set the kernel path writes to, so a missing ruleset is an error at start-up,
    /// not at the first transfer. Then empties them: holes a previous ftpgate left
    /// belong to sessions that are gone (one ftpgate per table).
    pub fn open() -> io::Result<Nft> {
        // An exchange holds its socket only while it runs on a worker thread, so one
        // socket per thread that can run tasks is as many as are ever in use at once:
        // opened now, the process's descriptors stay as they are under load.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(64));
        let sockets = (0..workers)
            .map(|_| new_socket())
            .collect::<io::Result<_>>()?;
        let mut nft = Nft {
            sockets: Mutex::new(sockets),
            seq: AtomicU32::new(1),
            snat_users: Mutex::new(HashMap::new()),
            destroy: false,
        };
        for name in every_name() {
            let get = set_message(NFT_MSG_GETSET, name);
            nft.exchange(vec![get], false, NLM_F_REQUEST | NLM_F_ACK)
                .map_err(|e| {
                    let what = match e.raw_os_error() {
                        Some(EPERM) => {
                            "reading and writing it needs CAP_NET_ADMIN: run as \
                                        root, or under systemd with the drop-in \
                                        deploy/ftpgate-edge.conf"
                        }
                        _ => "load deploy/nftables/ftpgate-*.nft first; see deploy/README.md",
                    };
                    io::Error::new(
                        e.kind(),
                        format!("nftables set or map `inet {TABLE} {name}`: {e} ({what})"),
                    )
                })?;
        }
        // A DELSETELEM without elements empties the set.
        let flush = every_name()
            .map(|name| set_message(NFT_MSG_DELSETELEM, name))
            .collect();
        nft.exchange(flush, true, DEL)?;
        // An element no hole can have (port 0): older kernels refuse the message type.
        let probe = Hole {
            peer: IpAddr::from([0, 0, 0, 0]),
            dst: SocketAddr::from(([0, 0, 0, 0], 0)),
            onward: SocketAddr::from(([0, 0, 0, 0], 0)),
            snat: None,
        };
        let [_, _, pass] = names(true);
        let destroy = element(NFT_MSG_DESTROYSETELEM, pass, probe.dnat().0, None, None);
        nft.destroy = nft.exchange(vec![destroy], true, DEL).is_ok();
        tracing::debug!(
            destroy = nft.destroy,
            "nf_tables deletes missing elements without error"
        );
        Ok(nft)
    }

    /// Lets `hole` through for `timeout` (or until [`Nft::remove`]).
    pub fn install(&self, hole: &Hole, timeout: Duration) -> io::Result<()> {
        let [dnat, snat, pass] = names(hole.v4());
        let (key, value) = hole.dnat();
        let mut messages = vec![
            element(NFT_MSG_NEWSETELEM, dnat, key, Some(value), Some(timeout)),
            element(NFT_MSG_NEWSETELEM, pass, key, None, Some(timeout)),
        ];
        let Some(from) = hole.snat else {
            return self.exchange(messages, true, NEW);
        };
        let shared = self.snat_use(hole.forwarded(), 1) > 1;
        let value = concat(&[Field::Ip(from)]);
        let add = element(
            NFT_MSG_NEWSETELEM,
            snat,
            hole.forwarded(),
            Some(value),
            Some(timeout),
        );
        // An element another hole uses is written again, in the same transaction, so
        // that it lasts as long as this hole needs it.
        let mut again = messages.clone();
        if shared {
            again.push(element(
                NFT_MSG_DELSETELEM,
                snat,
                hole.forwarded(),
                None,
                None,
            ));
        }
        again.push(add);
        let result = match self.exchange(again, true, NEW) {
            // It expired meanwhile: it is simply added.
            Err(e) if shared && e.raw_os_error() == Some(ENOENT) => {
                messages.push(add);
                self.exchange(messages, true, NEW)
            }
            other => other,
        };
        if result.is_err() {
            self.snat_use(hole.forwarded(), -1);
        }
        result
    }

    /// Lets a passed-through session's client reach its server's passive ports, until
    /// [`Nft::close_passage`] (or a restart, which empties the set). No timeout: the
    /// session's length is unknown, and its end is seen.
    pub fn open_passage(&self, passage: &Passage) -> io::Result<()> {
        self.exchange(vec![passage.element(NFT_MSG_NEWSETELEM)], true, NEW)
    }

    pub fn close_passage(&self, passage: &Passage) -> io::Result<()> {
        let message = passage.element(self.delete_message());
        gone(self.exchange(vec![message], true, DEL)).map(|_| ())
    }

    /// The message that deletes an element: one that tolerates its absence where the
    /// kernel has it.
    fn delete_message(&self) -> u16 {
        if self.destroy {
            NFT_MSG_DESTROYSETELEM
        } else {
            NFT_MSG_DELSETELEM
        }
    }

    /// Hands the connections `legs` to ftpgate for `timeout` (or until
    /// [`Nft::withdraw`]), in one transaction.
    pub fn announce(&self, legs: &[Announced], timeout: Duration) -> io::Result<()> {
        if legs.is_empty() {
            return Ok(());
        }
        let add = |leg: &Announced| {
            element(
                NFT_MSG_NEWSETELEM,
                leg.set(),
                leg.key(),
                None,
                Some(timeout),
            )
        };
        self.exchange(legs.iter().map(add).collect(), true, NEW)
    }

    /// Withdraws announcements, in one transaction; one that expired already is no
    /// error.
    pub fn withdraw(&self, legs: &[Announced]) -> io::Result<()> {
        if legs.is_empty() {
            return Ok(());
        }
        let message = self.delete_message();
        let del = |leg: &Announced| element(message, leg.set(), leg.key(), None, None);
        match self.exchange(legs.iter().map(del).collect(), true, DEL) {
            // One expired meanwhile and failed the batch: the rest goes one by one.
            Err(e) if e.raw_os_error() == Some(ENOENT) => legs
                .iter()
                .try_for_each(|leg| gone(self.exchange(vec![del(leg)], true, DEL)).map(|_| ())),
            other => other,
        }
    }

    /// Changes the number of holes that use the `snat` element `key` by `by`; the
    /// count after the change.
    fn snat_use(&self, key: Key, by: isize) -> usize {
        let mut users = self.snat_users.lock().unwrap_or_else(|e| e.into_inner());
        let count = users.entry(key).or_insert(0);
        *count = count.saturating_add_signed(by);
        let now = *count;
        if now == 0 {
            users.remove(&key);
        }
        now
    }

    /// Closes `hole`. `true` when its one connection went through: the `data_pass`
    /// chain had deleted the pass element already. `completed` says the server
    /// reported the transfer over that connection done; then, on a kernel that has
    /// `DESTROYSETELEM`, the hole closes in one transaction without asking the kernel
    /// first, and a pass element that is somehow still there goes with the rest.
    pub fn remove(&self, hole: &Hole, completed: bool) -> io::Result<bool> {
        let [dnat, snat, pass] = names(hole.v4());
        let key = hole.dnat().0;
        let mut left = vec![(dnat, key)];
        if hole.snat.is_some() && self.snat_use(hole.forwarded(), -1) == 0 {
            left.push((snat, hole.forwarded()));
        }
        let delete = |message| {
            move |&(set, key): &(&'static str, Key)| element(message, set, key, None, None)
        };
        if self.destroy && completed {
            left.push((pass, key));
            let destroy = delete(NFT_MSG_DESTROYSETELEM);
            self.exchange(left.iter().map(destroy).collect(), true, DEL)?;
            return Ok(true);
        }
        // Asked first rather than deleted blindly: a batch that fails costs the kernel
        // an RCU grace period to abort (about 15 ms here), a lookup microseconds.
        let get = element(NFT_MSG_GETSETELEM, pass, key, None, None);
        let used = gone(self.exchange(vec![get], false, DEL))?;
        if !used {
            left.push((pass, key));
        }
        let del = delete(NFT_MSG_DELSETELEM);
        match self.exchange(left.iter().map(del).collect(), true, DEL) {
            // Something expired meanwhile (ftpgate was held up past the grace): the
            // rest goes one by one.
            Err(e) if e.raw_os_error() == Some(ENOENT) => {
                for one in &left {
                    gone(self.exchange(vec![del(one)], true, DEL))?;
                }
                Ok(used)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(used),
        }
    }

    /// Sends `messages` (inside a batch when `batch`) and waits for the answer.
    ///
    /// Only the last message asks for an ACK: nf_tables goes on through a batch after
    /// a failed message, answers every failure and every ACK asked for, and queues all
    /// of it before `sendmsg` returns, so the last message's ACK comes after anything
    /// else the exchange is answered with. One `recvmsg` instead of one per message.
    fn exchange(&self, messages: Vec<NftMessage>, batch: bool, flags: u16) -> io::Result<()> {
        let count = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        if count == 0 {
            return Ok(());
        }
        let markers = if batch { 2 } else { 0 };
        let first = self
            .seq
            .fetch_add(count.saturating_add(markers), Ordering::Relaxed);
        // The last message's, whose ACK ends the exchange.
        let acked = first.wrapping_add(markers / 2).wrapping_add(count - 1);
        let ours = |s: u32| s.wrapping_sub(first) < count.saturating_add(markers);
        let mut wire = Vec::with_capacity(512);
        let mut seq = first;
        let mut push = |message: NftMessage, flags: u16| {
            let mut header = NetlinkHeader::default();
            header.flags = flags;
            header.sequence_number = seq;
            seq = seq.wrapping_add(1);
            let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
            msg.finalize();
            let start = wire.len();
            wire.resize(start + msg.buffer_len(), 0);
            if let Some(buffer) = wire.get_mut(start..) {
                msg.serialize(buffer);
            }
        };
        if batch {
            push(batch_marker(NFNL_MSG_BATCH_BEGIN), NLM_F_REQUEST);
        }
        let last = messages.len() - 1;
        for (i, message) in messages.into_iter().enumerate() {
            push(message, if i == last { flags } else { flags & !NLM_F_ACK });
        }
        if batch {
            push(batch_marker(NFNL_MSG_BATCH_END), NLM_F_REQUEST);
        }
        let idle = self.sockets.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut pooled = Pooled {
            pool: &self.sockets,
            socket: Some(match idle {
                Some(socket) => socket,
                None => new_socket()?,
            }),
        };
        let socket = pooled.get()?;
        socket.send(&wire, 0)?;
        // nf_tables handles the batch inside send(), so every answer is queued by now:
        // a recv that would block means the kernel will not answer this exchange.
        let mut buffer = Vec::with_capacity(8192);
        let mut first_error = None;
        loop {
            buffer.clear();
            if let Err(e) = socket.recv(&mut buffer, 0) {
                pooled.discard();
                return Err(match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        io::Error::other("nf_tables left a netlink request unanswered")
                    }
                    _ => e,
                });
            }
            let mut rest = buffer.as_slice();
            let mut done = false;
            // The end is seen before the parser is asked: its error for an empty rest
            // is a formatted message, which cost more than the answer's own parsing.
            while let Some(message) = (!rest.is_empty())
                .then(|| NetlinkBuffer::new_checked(rest).ok())
                .flatten()
            {
                let len = message.length() as usize;
                let seq = message.sequence_number();
                // An answer to an earlier exchange on this pooled socket is not ours.
                if message.message_type() == netlink_packet_core::NLMSG_ERROR && ours(seq) {
                    let code = ErrorBuffer::new_checked(message.payload())
                        .ok()
                        .and_then(|e| e.code());
                    // A failed commit is answered at the batch's first message.
                    if let (Some(code), None) = (code, &first_error) {
                        first_error = Some(io::Error::from_raw_os_error(-code.get()));
                    }
                    done |= seq == acked;
                }
                let next = (len + 3) & !3;
                rest = rest.get(next..).unwrap_or_default();
            }
            if done {
                break;
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// `Ok(true)` when the element was gone already.
fn gone(result: io::Result<()>) -> io::Result<bool> {
    match result {
        Ok(()) => Ok(false),
        Err(e) if e.raw_os_error() == Some(ENOENT) => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keys_pad_ports_to_a_register() {
        let hole = Hole::new(
            "198.51.100.2".parse().unwrap(),
            sa("203.0.113.2:40001"),
            sa("203.0.113.2:30000"),
            "203.0.113.1".parse().unwrap(),
        )
        .unwrap();
        let (key, value) = hole.dnat();
        assert_eq!(
            key.as_slice(),
            [198, 51, 100, 2, 203, 0, 113, 2, 0x9c, 0x41, 0, 0]
        );
        assert_eq!(value.as_slice(), [203, 0, 113, 2, 0x75, 0x30, 0, 0]);
        assert_eq!(
            hole.forwarded().as_slice(),
            [198, 51, 100, 2, 203, 0, 113, 2, 0x75, 0x30, 0, 0]
        );
        assert_eq!(hole.snat, Some("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn ipv6_keys_are_forty_bytes() {
        let hole = Hole::new(
            "2001:db8:1::2".parse().unwrap(),
            sa("[2001:db8:2::2]:40001"),
            sa("[2001:db8:2::2]:30000"),
            "2001:db8:1::2".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(hole.dnat().0.as_slice().len(), 36);
        assert_eq!(hole.dnat().1.as_slice().len(), 20);
        assert_eq!(hole.snat, None, "the peer's own address needs no SNAT");
    }

    #[test]
    fn an_unspecified_source_needs_no_snat() {
        let hole = Hole::new(
            "203.0.113.2".parse().unwrap(),
            sa("203.0.113.1:40001"),
            sa("198.51.100.2:50000"),
            "0.0.0.0".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(hole.snat, None);
    }

    #[test]
    fn no_hole_across_families() {
        let hole = Hole::new(
            "2001:db8:1::2".parse().unwrap(),
            sa("[2001:db8:2::2]:40001"),
            sa("203.0.113.2:30000"),
            "203.0.113.1".parse().unwrap(),
        );
        assert_eq!(hole, None);
    }

    #[test]
    fn a_passage_is_one_interval_element_from_the_first_port_to_the_last() {
        let ports = crate::vocab::PortRange {
            lo: 30000,
            hi: 30999,
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let from = ip("203.0.113.1");
        let p = Passage::new(ip("::ffff:198.51.100.2"), ip("203.0.113.2"), from, ports).unwrap();
        let (start, end) = p.keys();
        assert_eq!(
            start.as_slice(),
            [198, 51, 100, 2, 203, 0, 113, 2, 0x75, 0x30, 0, 0]
        );
        assert_eq!(
            end.as_slice(),
            [198, 51, 100, 2, 203, 0, 113, 2, 0x79, 0x17, 0, 0]
        );
        let msg = p.element(NFT_MSG_NEWSETELEM);
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        assert!(buf.windows(13).any(|w| w == b"passthrough4\0"));
        // The start under NFTA_SET_ELEM_KEY, the end under NFTA_SET_ELEM_KEY_END.
        let nested = |kind: u16, key: &[u8]| {
            let mut attr = ((4 + 4 + key.len()) as u16).to_ne_bytes().to_vec();
            attr.extend((kind | NLA_F_NESTED).to_ne_bytes());
            attr.extend(((4 + key.len()) as u16).to_ne_bytes());
            attr.extend(NFTA_DATA_VALUE.to_ne_bytes());
            attr.extend(key);
            attr
        };
        for (kind, key) in [(NFTA_SET_ELEM_KEY, &start), (NFTA_SET_ELEM_KEY_END, &end)] {
            let attr = nested(kind, key.as_slice());
            assert!(buf.windows(attr.len()).any(|w| w == attr), "{kind}");
        }
        // The value: the address the data connections leave from.
        assert!(buf.windows(4).any(|w| w == [203, 0, 113, 1]));
        assert!(Passage::new(ip("198.51.100.2"), ip("2001:db8::2"), from, ports).is_none());
        assert!(Passage::new(ip("198.51.100.2"), ip("203.0.113.2"), ip("::1"), ports).is_none());
    }

    #[test]
    fn an_element_message_nests_key_value_and_timeout() {
        let key = |b: &[u8]| {
            let mut k = concat(&[]);
            k.push(b);
            k
        };
        let msg = element(
            NFT_MSG_NEWSETELEM,
            "data_pass4",
            key(&[1, 2, 3, 4]),
            Some(key(&[5, 6, 7, 8])),
            Some(Duration::from_secs(30)),
        );
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        assert_eq!(&buf[..4], &[NFPROTO_INET, 0, 0, 0]);
        // table "ftpgate\0" (8 bytes + 4 header), set "data_pass4\0" (11 + 4, padded)
        assert_eq!(&buf[4..6], &12u16.to_ne_bytes());
        assert_eq!(&buf[8..16], b"ftpgate\0");
        assert!(buf.windows(8).any(|w| w == 30_000u64.to_be_bytes()));
        assert!(buf.windows(4).any(|w| w == [5, 6, 7, 8]));
    }

    /// The encoding this module used before it wrote attributes in place, with the
    /// crate's owned attributes: every message must come out byte for byte the same.
    mod reference {
        use super::super::*;
        use netlink_packet_core::DefaultNla;

        fn string(kind: u16, s: &str) -> DefaultNla {
            let mut value = s.as_bytes().to_vec();
            value.push(0);
            DefaultNla::new(kind, value)
        }

        fn nested(kind: u16, inner: &[DefaultNla]) -> DefaultNla {
            let mut value = vec![0; inner.buffer_len()];
            inner.emit(&mut value);
            DefaultNla::new(kind | NLA_F_NESTED, value)
        }

        fn data(kind: u16, value: &Key) -> DefaultNla {
            nested(
                kind,
                &[DefaultNla::new(NFTA_DATA_VALUE, value.as_slice().to_vec())],
            )
        }

        pub fn encode(message: &NftMessage) -> Vec<u8> {
            let attrs = match &message.body {
                Body::Empty => Vec::new(),
                Body::Set(set) => vec![string(NFTA_SET_TABLE, TABLE), string(NFTA_SET_NAME, set)],
                Body::Element(set, e) => {
                    let mut inner = vec![data(NFTA_SET_ELEM_KEY, &e.key)];
                    if let Some(end) = &e.key_end {
                        inner.push(data(NFTA_SET_ELEM_KEY_END, end));
                    }
                    if let Some(value) = &e.value {
                        inner.push(data(NFTA_SET_ELEM_DATA, value));
                    }
                    if let Some(t) = e.timeout {
                        let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
                        inner.push(DefaultNla::new(
                            NFTA_SET_ELEM_TIMEOUT,
                            ms.to_be_bytes().to_vec(),
                        ));
                    }
                    vec![
                        string(NFTA_SET_ELEM_LIST_TABLE, TABLE),
                        string(NFTA_SET_ELEM_LIST_SET, set),
                        nested(
                            NFTA_SET_ELEM_LIST_ELEMENTS,
                            &[nested(NFTA_LIST_ELEM, &inner)],
                        ),
                    ]
                }
            };
            let mut out = vec![
                message.family,
                0,
                (message.res_id >> 8) as u8,
                message.res_id as u8,
            ];
            let start = out.len();
            out.resize(start + attrs.as_slice().buffer_len(), 0);
            attrs.as_slice().emit(&mut out[start..]);
            out
        }
    }

    fn encoded(message: &NftMessage) -> Vec<u8> {
        let mut buf = vec![0xaa; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    fn ips() -> impl Strategy<Value = (IpAddr, IpAddr, IpAddr)> {
        prop_oneof![
            any::<([u8; 4], [u8; 4], [u8; 4])>().prop_map(|(a, b, c)| (
                IpAddr::from(a),
                IpAddr::from(b),
                IpAddr::from(c)
            )),
            any::<([u8; 16], [u8; 16], [u8; 16])>().prop_map(|(a, b, c)| (
                IpAddr::from(a),
                IpAddr::from(b),
                IpAddr::from(c)
            )),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn messages_are_written_as_the_owned_attributes_wrote_them(
            (peer, dst, onward) in ips(),
            ports in any::<(u16, u16, u16)>(),
            timeout in proptest::option::of(0u64..10_000_000),
            kind in prop::sample::select(vec![
                NFT_MSG_NEWSETELEM,
                NFT_MSG_DELSETELEM,
                NFT_MSG_DESTROYSETELEM,
                NFT_MSG_GETSETELEM,
            ]),
        ) {
            let hole = Hole {
                peer,
                dst: SocketAddr::new(dst, ports.0),
                onward: SocketAddr::new(onward, ports.1),
                snat: Some(onward),
            };
            let [dnat, snat, pass] = names(peer.is_ipv4());
            let (key, value) = hole.dnat();
            let timeout = timeout.map(Duration::from_millis);
            let lo = ports.2.min(ports.1);
            let passage = Passage::new(
                peer,
                dst,
                onward,
                crate::vocab::PortRange { lo, hi: ports.2.max(ports.1) },
            );
            let mut messages = vec![
                element(kind, dnat, key, Some(value), timeout),
                element(kind, pass, key, None, timeout),
                element(kind, snat, hole.forwarded(), Some(concat(&[Field::Ip(onward)])), None),
                set_message(NFT_MSG_GETSET, snat),
                set_message(NFT_MSG_DELSETELEM, pass),
                batch_marker(NFNL_MSG_BATCH_BEGIN),
            ];
            messages.extend(passage.map(|p| p.element(kind)));
            for message in &messages {
                prop_assert_eq!(encoded(message), reference::encode(message));
            }
        }
    }
}

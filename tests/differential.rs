//! The differential test of invariant 5: ftpgate must see every command exactly as the
//! server will. Control-channel byte streams (random and adversarial: Telnet
//! sequences, CR/LF/NUL placements, case, aliases, spacing, pipelining, splits into
//! segments) go through ftpgate's own framer and parser, and what ftpgate would
//! forward goes to vsftpd, pure-ftpd and ProFTPD, each with its protocol log on, in
//! whole lines grouped as the client's segments were (ftpgate never writes part of a
//! line: ProFTPD misses a CRLF whose CR and LF arrive in different reads). The commands each server logs must be, in order, exactly the
//! commands ftpgate parsed; a line ftpgate refuses never reaches the server, so its
//! refusal can only remove commands, never hide one.
//!
//! The only tolerated difference is the Telnet prefix before `ABOR` (`IAC IP IAC DM`):
//! pure-ftpd ignores such a line, and ignoring an abort opens nothing.
//!
//! Sessions stay before login, where every server parses lines as it does after it,
//! and no command can block on a data connection. `FTPGATE_DIFF_CASES` sets the number
//! of random cases (default 150), `FTPGATE_DIFF_SECONDS` turns the test into a
//! time-bounded run with fresh seeds (`fuzz/differential.sh`). Every stream that ever
//! disagreed is kept in `tests/differential/regressions.txt` and replayed first.

mod support;

use std::cell::RefCell;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ftpgate::codec::{Frame, LineFramer, command_words, parse_line};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use support::{LOCALHOST, Vsftpd, free_port};

/// The limit ftpgate runs with by default (`set max-line`).
fn max_line() -> usize {
    ftpgate::rules::Settings::default().max_line
}

/// One command as a server executed it, or as ftpgate parsed it: the verb
/// upper-cased and the argument (empty when there is none).
#[derive(Clone, PartialEq, Eq)]
struct Seen {
    verb: String,
    arg: Vec<u8>,
}

/// Short enough to read in a failure message.
impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let arg = String::from_utf8_lossy(&self.arg);
        let arg: String = arg.escape_debug().take(60).collect();
        let more = if self.arg.len() > 60 { "…" } else { "" };
        write!(f, "{} {arg:?}{more}", self.verb.escape_debug())
    }
}

/// What ftpgate makes of a stream.
struct Parsed {
    /// The lines it forwards (each as received, whole: ftpgate never forwards part
    /// of a line), with the offset in the stream where each ends.
    forwarded: Vec<(Vec<u8>, usize)>,
    /// The commands in them, and whether each carried the Telnet abort prefix.
    commands: Vec<(Seen, bool)>,
    lines: usize,
}

fn ftpgate_parse(chunks: &[&[u8]]) -> Parsed {
    let mut framer = LineFramer::new(max_line());
    let mut frames = Vec::new();
    for chunk in chunks {
        framer.push(chunk, &mut frames);
    }
    let mut parsed = Parsed {
        forwarded: Vec::new(),
        commands: Vec::new(),
        lines: frames.len(),
    };
    let mut end = 0;
    for frame in frames {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::TooLong { len } => {
                end += len;
                continue;
            }
        };
        end += line.raw.len();
        if parse_line(&line).is_err() {
            continue;
        }
        let Ok((verb, arg)) = command_words(&line.text) else {
            unreachable!("parse_line accepted a line command_words refuses: {line:?}");
        };
        let seen = Seen {
            verb,
            arg: arg.unwrap_or_default().to_vec(),
        };
        parsed.commands.push((seen, line.signals.any()));
        parsed.forwarded.push((line.raw, end));
    }
    parsed
}

/// A real server with a log of the commands it executed.
trait Witness {
    fn name(&self) -> &'static str;
    fn addr(&self) -> SocketAddr;
    /// The commands logged since the last call, once the session that just ended
    /// has been logged whole.
    fn commands(&mut self) -> Vec<Seen>;
    /// What this server's log makes of a command (vsftpd masks unprintable bytes).
    fn as_logged(&self, seen: &Seen) -> Seen {
        seen.clone()
    }
}

/// The bytes appended to a log file since `offset`, which moves past them.
fn tail(path: &Path, offset: &mut usize) -> Vec<u8> {
    let all = fs::read(path).unwrap_or_default();
    let new = all.get(*offset..).unwrap_or_default().to_vec();
    *offset = all.len();
    new
}

struct VsftpdWitness {
    server: Vsftpd,
    offset: usize,
}

impl Witness for VsftpdWitness {
    fn name(&self) -> &'static str {
        "vsftpd"
    }
    fn addr(&self) -> SocketAddr {
        self.server.addr
    }
    fn commands(&mut self) -> Vec<Seen> {
        let log = self.server.log_path();
        let new = tail(&log, &mut self.offset);
        // `... FTP command: Client "127.0.0.1", "VERB ARG"`
        let marker: &[u8] = b"FTP command: Client \"";
        new.split(|b| *b == b'\n')
            .filter_map(|l| {
                let at = l.windows(marker.len()).position(|w| w == marker)?;
                let rest = &l[at + marker.len()..];
                let start = rest.windows(4).position(|w| w == b"\", \"")? + 4;
                let text = rest.get(start..rest.len().checked_sub(1)?)?;
                let (verb, arg) = match text.iter().position(|b| *b == b' ') {
                    Some(i) => (&text[..i], &text[i + 1..]),
                    None => (text, &[][..]),
                };
                Some(Seen {
                    verb: String::from_utf8_lossy(verb).into_owned(),
                    arg: arg.to_vec(),
                })
            })
            .collect()
    }
    fn as_logged(&self, seen: &Seen) -> Seen {
        let mask = |b: &u8| if (0x20..0x7f).contains(b) { *b } else { b'?' };
        Seen {
            verb: seen.verb.clone(),
            arg: seen.arg.iter().map(mask).collect(),
        }
    }
}

use support::server_root;

fn wait_greeting(addr: SocketAddr, child: &mut Child, what: &str) {
    support::eventually(what, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what}: the server exited with {status}");
        }
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 3];
        let greeted = s.read_exact(&mut buf).is_ok() && &buf == b"220";
        let _ = s.write_all(b"QUIT\r\n");
        let _ = s.read_to_end(&mut Vec::new());
        greeted
    });
}

/// pure-ftpd logs commands to syslog only (`-d`), so it runs in a mount namespace
/// whose `/dev/log` is a datagram socket of the test's.
struct PureFtpd {
    addr: SocketAddr,
    child: Child,
    messages: Arc<Mutex<Vec<Vec<u8>>>>,
    taken: usize,
    _dir: tempfile::TempDir,
}

impl PureFtpd {
    fn start() -> PureFtpd {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("dev");
        fs::create_dir(&dev).expect("mkdir dev");
        let socket = UnixDatagram::bind(dev.join("log")).expect("bind the syslog socket");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = socket.recv(&mut buf) {
                let mut m = sink.lock().unwrap_or_else(|e| e.into_inner());
                m.push(buf[..n].to_vec());
            }
        });
        for node in ["null", "zero", "urandom", "random"] {
            fs::write(dev.join(node), b"").expect("device placeholder");
        }
        let port = free_port(LOCALHOST.parse().expect("ip"));
        let script = format!(
            "for n in null zero urandom random; do mount --bind /dev/$n '{dev}'/$n; done; \
             mount --rbind '{dev}' /dev && exec '{bin}' -S {LOCALHOST},{port} -d -H",
            dev = dev.display(),
            bin = server_root().join("pure-ftpd").display(),
        );
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pure-ftpd");
        let addr = SocketAddr::new(LOCALHOST.parse().expect("ip"), port);
        wait_greeting(addr, &mut child, "pure-ftpd to greet");
        let mut server = PureFtpd {
            addr,
            child,
            messages,
            taken: 0,
            _dir: dir,
        };
        server.wait_logout();
        server.commands();
        server
    }

    fn messages_since(&self, from: usize) -> Vec<Vec<u8>> {
        let m = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        m.get(from..).unwrap_or_default().to_vec()
    }

    /// Each session ends with `Logout.` (every stream ends with QUIT).
    fn wait_logout(&self) {
        let from = self.taken;
        support::eventually("pure-ftpd to log the logout", || {
            self.messages_since(from)
                .iter()
                .any(|m| m.ends_with(b"[INFO] Logout."))
        });
    }
}

impl Drop for PureFtpd {
    fn drop(&mut self) {
        // `unshare` and `sh` exec, so the child is pure-ftpd's master itself; the
        // session processes end with their sessions.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Witness for PureFtpd {
    fn name(&self) -> &'static str {
        "pure-ftpd"
    }
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn commands(&mut self) -> Vec<Seen> {
        self.wait_logout();
        let new = self.messages_since(self.taken);
        self.taken += new.len();
        // `<95>Nov 29 15:45:00 pure-ftpd: (?@127.0.0.1) [DEBUG] Command [pasv] [x]`
        let marker: &[u8] = b"[DEBUG] Command [";
        new.iter()
            .filter_map(|m| {
                let at = m.windows(marker.len()).position(|w| w == marker)?;
                let rest = &m[at + marker.len()..];
                let verb_end = rest.iter().position(|b| *b == b']')?;
                let arg = rest.get(verb_end + 3..rest.len().checked_sub(1)?)?;
                Some(Seen {
                    verb: String::from_utf8_lossy(&rest[..verb_end]).to_ascii_uppercase(),
                    arg: arg.to_vec(),
                })
            })
            .collect()
    }
}

/// ProFTPD writes every command to an ExtendedLog as `VERB<TAB>ARGS`.
struct Proftpd {
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
    offset: usize,
    _dir: tempfile::TempDir,
}

impl Proftpd {
    fn start() -> Proftpd {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port(LOCALHOST.parse().expect("ip"));
        let d = dir.path().display();
        let log = dir.path().join("commands.log");
        let conf = format!(
            "ServerType standalone\nDefaultServer on\nPort {port}\nDefaultAddress {LOCALHOST}\n\
             SocketBindTight on\n\
             User nobody\nGroup nogroup\nUseIPv6 off\nWtmpLog off\nUseReverseDNS off\n\
             ScoreboardFile {d}/scoreboard\nPidFile {d}/proftpd.pid\nDelayTable none\n\
             TransferLog none\nSystemLog {d}/system.log\nMaxInstances 64\n\
             LogFormat diff \"%m\t%J\"\nExtendedLog {log} ALL diff\n",
            log = log.display(),
        );
        let conf_path = dir.path().join("proftpd.conf");
        fs::write(&conf_path, conf).expect("write proftpd.conf");
        let mut child = Command::new(server_root().join("proftpd"))
            .args(["-n", "-c"])
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start proftpd");
        let addr = SocketAddr::new(LOCALHOST.parse().expect("ip"), port);
        wait_greeting(addr, &mut child, "proftpd to greet");
        let mut server = Proftpd {
            addr,
            child,
            log,
            offset: 0,
            _dir: dir,
        };
        server.commands();
        server
    }
}

impl Drop for Proftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Witness for Proftpd {
    fn name(&self) -> &'static str {
        "proftpd"
    }
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn commands(&mut self) -> Vec<Seen> {
        tail(&self.log, &mut self.offset)
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            // `OPTS X` is dispatched (and logged) a second time as `OPTS_X`.
            .filter(|l| !l.starts_with(b"OPTS_"))
            .filter_map(|l| {
                // ftpgate forwards no TAB, so the first one is the separator.
                let bar = l.iter().position(|b| *b == b'\t')?;
                Some(Seen {
                    verb: String::from_utf8_lossy(&l[..bar]).into_owned(),
                    arg: l[bar + 1..].to_vec(),
                })
            })
            .collect()
    }
    /// ProFTPD dispatches `SITE X` as the command `SITE_X` and logs it as `SITE X`
    /// (a `SITE` without a sub-command, with no name at all).
    fn as_logged(&self, seen: &Seen) -> Seen {
        let sub = seen.arg.split(|b| *b == b' ').next().unwrap_or_default();
        let verb = match (seen.verb.as_str(), sub) {
            ("SITE", []) => String::new(),
            ("SITE", sub) => format!("SITE {}", String::from_utf8_lossy(sub).to_ascii_uppercase()),
            (verb, _) => verb.to_string(),
        };
        Seen {
            verb,
            arg: seen.arg.clone(),
        }
    }
}

/// Sends `chunks` (then QUIT) as separate segments and reads until the server closes.
fn converse(addr: SocketAddr, chunks: &[Vec<u8>]) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        s.write_all(chunk).map_err(|e| format!("send: {e}"))?;
        // Lets the server read each segment on its own: this paces the sender, it
        // does not wait for anything.
        std::thread::sleep(Duration::from_millis(1));
    }
    s.write_all(b"QUIT\r\n").map_err(|e| format!("send: {e}"))?;
    let mut replies = Vec::new();
    match s.read_to_end(&mut replies) {
        Ok(_) => Ok(()),
        // A reset after QUIT's reply still ends the session.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Err(e) => Err(format!(
            "the server did not end the session: {e}; replies so far:\n{}",
            String::from_utf8_lossy(&replies)
        )),
    }
}

/// The servers' logs against ftpgate's commands, for one stream split into `cuts`.
fn check(witnesses: &mut [Box<dyn Witness>], stream: &[u8], cuts: &[usize]) -> Result<(), String> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut slices: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for &p in &points {
        slices.push(&stream[start..p]);
        start = p;
    }
    slices.push(&stream[start..]);
    let parsed = ftpgate_parse(&slices);
    let whole = ftpgate_parse(&[stream]);
    if parsed.forwarded != whole.forwarded {
        return Err("ftpgate's framing depends on the segmentation".into());
    }
    // ftpgate writes only whole lines, several at once when the client sent them
    // together: a segment of the client's ends after the line it cut.
    let mut chunks = vec![Vec::new()];
    let mut cuts = points.iter().peekable();
    for (raw, end) in &parsed.forwarded {
        if let Some(chunk) = chunks.last_mut() {
            chunk.extend_from_slice(raw);
        }
        let mut cut = false;
        while cuts.next_if(|p| **p <= *end).is_some() {
            cut = true;
        }
        if cut {
            chunks.push(Vec::new());
        }
    }
    let mut expected = parsed.commands.clone();
    expected.push((
        Seen {
            verb: "QUIT".into(),
            arg: Vec::new(),
        },
        false,
    ));
    for w in witnesses.iter_mut() {
        converse(w.addr(), &chunks).map_err(|e| format!("{}: {e}", w.name()))?;
        let logged = w.commands();
        compare(w.as_ref(), &expected, &logged)?;
    }
    Ok(())
}

fn compare(w: &dyn Witness, expected: &[(Seen, bool)], logged: &[Seen]) -> Result<(), String> {
    let mut logged_iter = logged.iter().peekable();
    for (seen, telnet_abort) in expected {
        let want = w.as_logged(seen);
        match logged_iter.peek() {
            Some(got) if **got == want => {
                logged_iter.next();
            }
            // vsftpd keeps the Telnet bytes in the verb (and masks them in its log).
            Some(got) if *telnet_abort && got.verb.ends_with("ABOR") && got.arg == want.arg => {
                logged_iter.next();
            }
            _ if *telnet_abort => {}
            other => {
                return Err(format!(
                    "{} disagrees: ftpgate forwarded {want:?}, the server logged {other:?}\n\
                     ftpgate: {expected:?}\nserver:  {logged:?}",
                    w.name()
                ));
            }
        }
    }
    match logged_iter.next() {
        None => Ok(()),
        Some(extra) => Err(format!(
            "{} executed {extra:?}, which ftpgate never forwarded\nftpgate: {expected:?}\n\
             server:  {logged:?}",
            w.name()
        )),
    }
}

// ----- the generator ---------------------------------------------------------------

const IAC: u8 = 255;
const IP: u8 = 244;
const DM: u8 = 242;
const WILL: u8 = 251;

/// Verbs that end the session or make a server treat the stream as another protocol
/// (ProFTPD disconnects on HTTP and SMTP verbs), or log a password.
const AVOIDED: &[&str] = &[
    "QUIT", "PASS", "AUTH", "REIN", "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST",
    "PUT", "DATA", "EHLO", "HELO", "MAIL", "RCPT", "SSH",
];

fn verb() -> impl Strategy<Value = Vec<u8>> {
    let known = prop::sample::select(vec![
        "NOOP", "PASV", "EPSV", "PORT", "EPRT", "LPRT", "LPSV", "SPSV", "RETR", "STOR", "LIST",
        "NLST", "MLSD", "CWD", "XCWD", "CDUP", "XCUP", "PWD", "XPWD", "MKD", "XMKD", "RMD", "DELE",
        "SITE", "STAT", "HELP", "SYST", "TYPE", "MODE", "FEAT", "OPTS", "ABOR", "USER", "P@SW",
        "ESTA", "ESTP", "SIZE", "MDTM", "ALLO", "REST", "RNFR", "HOST", "LANG", "XSHA1",
    ]);
    let known = (known, any::<u32>()).prop_map(|(v, mask)| {
        // Any mixture of case.
        v.bytes()
            .enumerate()
            .map(|(i, b)| {
                if mask >> (i % 32) & 1 == 1 {
                    b.to_ascii_lowercase()
                } else {
                    b
                }
            })
            .collect::<Vec<u8>>()
    });
    let random = prop::collection::vec(prop::sample::select(b"aAzZpPsSvV@09_-.".to_vec()), 0..7);
    prop_oneof![12 => known, 2 => random]
}

fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        40 => "[a-zA-Z0-9._/,|]{1,10}".prop_map(String::into_bytes),
        8 => Just(b" ".to_vec()),
        1 => Just(b"  ".to_vec()),
        1 => Just(b"\t".to_vec()),
        1 => Just(b"\r".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"\0".to_vec()),
        1 => Just(vec![IAC]),
        1 => Just(vec![IAC, IAC]),
        1 => Just(vec![IAC, IP, IAC, DM]),
        1 => Just(vec![IAC, WILL]),
        1 => Just(vec![0xf4]),
        1 => Just("caf\u{e9} \u{2603}".as_bytes().to_vec()),
        1 => Just(b"PORT 127,0,0,2,4,1".to_vec()),
        1 => Just(b"P@SW".to_vec()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ]
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop_oneof![
        40 => Just(Vec::new()),
        1 => Just(vec![IAC, IP, IAC, DM]),
        1 => Just(vec![IAC, IP, IAC]),
        1 => Just(vec![IAC, IP]),
        1 => Just(vec![IAC, DM]),
        1 => Just(vec![IAC]),
        1 => Just(vec![IAC, WILL, 1]),
        1 => Just(b" ".to_vec()),
    ];
    let separator = prop_oneof![
        20 => Just(b" ".to_vec()),
        3 => Just(Vec::new()),
        1 => Just(b"  ".to_vec()),
        1 => Just(b"\t".to_vec()),
    ];
    let terminator = prop_oneof![
        30 => Just(b"\r\n".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\r\r\n".to_vec()),
        1 => Just(vec![IAC, b'\n']),
        1 => Just(vec![IAC, b'\r', b'\n']),
    ];
    (
        prefix,
        verb(),
        separator,
        prop::collection::vec(piece(), 0..4),
        terminator,
    )
        .prop_filter("a verb that ends the session", |(_, verb, ..)| {
            let v = String::from_utf8_lossy(verb).to_ascii_uppercase();
            !AVOIDED.iter().any(|a| v.starts_with(a))
        })
        .prop_map(|(prefix, verb, separator, pieces, terminator)| {
            let mut line = prefix;
            line.extend(verb);
            if !pieces.is_empty() {
                line.extend(separator);
            }
            line.extend(pieces.concat());
            line.extend(terminator);
            line
        })
}

/// An argument long enough to cross the servers' and ftpgate's line limits.
fn long_line() -> impl Strategy<Value = Vec<u8>> {
    (max_line() - 12..max_line() + 40).prop_map(|len| {
        let mut line = b"NOOP ".to_vec();
        line.resize(len - 2, b'x');
        line.extend_from_slice(b"\r\n");
        line
    })
}

fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let lines = prop::collection::vec(prop_oneof![30 => line(), 1 => long_line()], 1..8);
    (lines, prop::collection::vec(any::<usize>(), 0..6))
        .prop_map(|(lines, cuts)| (lines.concat(), cuts))
        .prop_filter("a session-ending line hidden in an argument", |(s, _)| {
            // A bare LF inside an argument is a line of its own to vsftpd.
            !s.split(|b| *b == b'\n').any(|l| {
                let l = l.strip_prefix(&[IAC, IP, IAC, DM][..]).unwrap_or(l);
                let upper = String::from_utf8_lossy(l).to_ascii_uppercase();
                AVOIDED.iter().any(|a| upper.starts_with(a))
            })
        })
}

// ----- the test --------------------------------------------------------------------

fn witnesses() -> Option<Vec<Box<dyn Witness>>> {
    if !support::prerequisites(&["vsftpd", "unshare"]) {
        return None;
    }
    let root = server_root();
    let present = root.join("pure-ftpd").exists() && root.join("proftpd").exists();
    if !present {
        assert!(
            !support::ci(),
            "pure-ftpd and proftpd are not unpacked in {}: run tests/support/ftp-servers.sh",
            root.display()
        );
        eprintln!("SKIPPED: run tests/support/ftp-servers.sh to unpack pure-ftpd and proftpd");
        return None;
    }
    let mut vsftpd = VsftpdWitness {
        server: Vsftpd::start(LOCALHOST),
        offset: 0,
    };
    vsftpd.commands();
    Some(vec![
        Box::new(vsftpd),
        Box::new(PureFtpd::start()),
        Box::new(Proftpd::start()),
    ])
}

fn regressions() -> Vec<(String, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential/regressions.txt");
    let text = fs::read_to_string(&path).expect("regressions.txt");
    let mut cases = Vec::new();
    let mut comment = String::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix('#') {
            comment = c.trim().to_string();
        } else if !line.trim().is_empty() {
            let hex = line.trim();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            cases.push((comment.clone(), bytes));
        }
    }
    cases
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn ftpgate_forwards_exactly_the_commands_each_server_executes() {
    let Some(witnesses) = witnesses() else { return };
    let witnesses = RefCell::new(witnesses);
    for (what, stream) in regressions() {
        let outcome = check(&mut witnesses.borrow_mut(), &stream, &[]);
        assert!(outcome.is_ok(), "regression case {what}: {outcome:?}");
    }
    let seconds = env_number("FTPGATE_DIFF_SECONDS");
    let cases = env_number("FTPGATE_DIFF_CASES").unwrap_or(150) as u32;
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut runs = 0u64;
    let counts = RefCell::new((0usize, 0usize));
    loop {
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 256,
            ..Config::default()
        };
        // CI replays one fixed seed; a time-bounded run draws a fresh one each round.
        let mut runner = match deadline {
            None => {
                TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
            }
            Some(_) => TestRunner::new(config),
        };
        let result = runner.run(&stream(), |(stream, cuts)| {
            let parsed = ftpgate_parse(&[&stream]);
            let mut c = counts.borrow_mut();
            c.0 += parsed.lines;
            c.1 += parsed.commands.len();
            drop(c);
            check(&mut witnesses.borrow_mut(), &stream, &cuts).map_err(|e| {
                TestCaseError::fail(format!(
                    "{e}\nstream (hex, for regressions.txt): {}",
                    hex(&stream)
                ))
            })
        });
        match result {
            Ok(()) => {}
            // The value is printed as hex, short enough for a log and ready for
            // regressions.txt; proptest's own message would list every byte.
            Err(TestError::Fail(why, (stream, cuts))) => panic!(
                "{why}\nshrunk to (hex, for regressions.txt): {}\ncut at {cuts:?}",
                hex(&stream)
            ),
            Err(TestError::Abort(why)) => panic!("{why}"),
        }
        runs += u64::from(cases);
        if deadline.is_none_or(|d| Instant::now() >= d) {
            break;
        }
    }
    let (total_lines, forwarded_lines) = *counts.borrow();
    eprintln!(
        "differential: {runs} streams, {total_lines} lines, {forwarded_lines} forwarded, \
         the rest refused; vsftpd, pure-ftpd and ProFTPD agreed on every forwarded line"
    );
    // A generator whose lines ftpgate mostly refuses would prove little (judged
    // over enough lines to mean something).
    assert!(
        total_lines < 200 || forwarded_lines * 3 >= total_lines,
        "only {forwarded_lines} of {total_lines} generated lines were forwarded"
    );
}

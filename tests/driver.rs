//! The session driver in-process, without root or a real FTP server: ftpgate's shell
//! on `127.0.0.1:0` in front of a scripted server task. What is checked is what only
//! the driver can get wrong: urgent data, and peers that stop reading while timers,
//! drain and shutdown must go on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ftpgate::proxy::{self, Shared};
use ftpgate::rules::parse_str;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Telnet IAC, Interrupt Process and Data Mark.
const IAC: u8 = 255;
const IP: u8 = 244;
const DM: u8 = 242;
/// Far longer than anything here should take; only a hang reaches it.
const HANG: Duration = Duration::from_secs(20);

/// ftpgate serving `rules` (whose listener is on port 0), in this process.
struct Gate {
    shared: Arc<Shared>,
    addr: SocketAddr,
    serving: JoinHandle<std::io::Result<()>>,
}

impl Gate {
    fn start(rules: &str) -> Gate {
        let config = parse_str("driver.rules", rules).expect("rules");
        let listeners = proxy::bind(&config).expect("bind");
        let addr = listeners[0].1.local_addr().expect("addr");
        let shared = Shared::new(config, None);
        let serving = tokio::spawn(proxy::serve(shared.clone(), listeners));
        Gate {
            shared,
            addr,
            serving,
        }
    }

    fn reverse(upstream: SocketAddr, extra: &str) -> Gate {
        Gate::start(&format!(
            "listen reverse 127.0.0.1:0 upstream {upstream}\n{extra}\npass\n"
        ))
    }

    /// SIGTERM's first step, then waits for every session to end.
    async fn drain(self) {
        self.shared.draining.cancel();
        let served = tokio::time::timeout(HANG, self.serving).await;
        served
            .expect("the sessions end")
            .expect("join")
            .expect("serve");
    }
}

/// A server task: accepts one control connection, greets it, then runs `script`.
async fn server<F, Fut>(script: F) -> (SocketAddr, JoinHandle<()>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        stream.write_all(b"220 scripted\r\n").await.expect("greet");
        script(stream).await;
    });
    (addr, task)
}

async fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    tokio::time::timeout(HANG, reader.read_line(&mut line))
        .await
        .expect("a reply in time")
        .expect("read");
    line
}

/// The server's side of the Synch: the DM arrives apart, as urgent data, and the
/// line without it. A normal read past the urgent mark loses it, so it is awaited
/// first.
fn urgent_abor(mut s: std::net::TcpStream) {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    s.set_nonblocking(false).expect("blocking");
    let mut fds = [nix::poll::PollFd::new(
        s.as_fd(),
        nix::poll::PollFlags::POLLPRI,
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20_000u16));
    assert_eq!(ready.expect("poll"), 1, "no urgent data arrived");
    let mut urgent = [std::mem::MaybeUninit::new(0u8); 1];
    let n = socket2::SockRef::from(&s)
        .recv_out_of_band(&mut urgent)
        .expect("urgent data");
    assert_eq!(n, 1);
    // SAFETY: recv wrote the byte it reports.
    assert_eq!(unsafe { urgent[0].assume_init() }, DM);
    let mut got = Vec::new();
    while !got.ends_with(b"ABOR\r\n") {
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, [&[IAC, IP, IAC][..], b"ABOR\r\n"].concat());
    s.write_all(b"226 aborted\r\n").expect("reply");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[tokio::test]
async fn abor_goes_to_the_server_with_its_data_mark_as_urgent_data() {
    let (upstream, task) = server(|s| async move {
        let s = s.into_std().expect("std stream");
        // Blocking, on its own thread: tokio's sockets do not wait for urgent data.
        let script = tokio::task::spawn_blocking(move || urgent_abor(s));
        script.await.expect("server script");
    })
    .await;
    let gate = Gate::reverse(upstream, "");
    let client = TcpStream::connect(gate.addr).await.expect("connect");
    let mut client = BufReader::new(client);
    assert!(line(&mut client).await.starts_with("220"));
    let raw = client.get_mut();
    raw.write_all(&[IAC, IP, IAC]).await.expect("synch");
    // The client sends its DM as urgent data, as RFC 959 clients do.
    socket2::SockRef::from(&*raw)
        .send_out_of_band(&[DM])
        .expect("urgent");
    raw.write_all(b"ABOR\r\n").await.expect("abor");
    assert_eq!(line(&mut client).await, "226 aborted\r\n");
    drop(client);
    task.await.expect("server script");
    gate.drain().await;
}

#[tokio::test]
async fn a_server_that_stops_reading_does_not_stop_the_login_timer() {
    let (upstream, task) = server(|s| async move {
        // Never reads: the client's commands pile up in front of it.
        tokio::time::sleep(HANG).await;
        drop(s);
    })
    .await;
    let gate = Gate::reverse(upstream, "set login-timeout 2s");
    let client = TcpStream::connect(gate.addr).await.expect("connect");
    let (rd, mut wr) = client.into_split();
    let mut rd = BufReader::new(rd);
    let mut greeting = String::new();
    rd.read_line(&mut greeting).await.expect("greeting");
    // Megabytes of commands: more than the server's socket buffers hold.
    let flood = tokio::spawn(async move {
        let noop = format!("NOOP {}\r\n", "x".repeat(500));
        for _ in 0..20_000 {
            if wr.write_all(noop.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let mut last = String::new();
    loop {
        let mut l = String::new();
        let n = tokio::time::timeout(HANG, rd.read_line(&mut l))
            .await
            .expect("the session ends in time")
            .expect("read");
        if n == 0 {
            break;
        }
        last = l;
    }
    assert_eq!(
        last, "421 Login timeout: closing the control connection.\r\n",
        "the timer fired while the server did not read"
    );
    flood.abort();
    task.abort();
    gate.drain().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_hold_up_the_drain() {
    let (blocked, is_blocked) = tokio::sync::oneshot::channel();
    let (upstream, task) = server(|mut s| async move {
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf).await;
        // Endless replies toward a client that reads nothing. The proxy stops
        // reading it once the client's side is full; a write that then cannot finish
        // is the sign that every buffer on the way is full.
        let line = format!("200 {}\r\n", "y".repeat(1000));
        let mut blocked = Some(blocked);
        loop {
            let write =
                tokio::time::timeout(Duration::from_millis(200), s.write_all(line.as_bytes()));
            match write.await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    if let Some(tx) = blocked.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }
    })
    .await;
    let gate = Gate::reverse(upstream, "set drain-timeout 60s");
    let mut client = TcpStream::connect(gate.addr).await.expect("connect");
    let mut greeting = [0u8; 14];
    client.read_exact(&mut greeting).await.expect("greeting");
    client.write_all(b"STAT\r\n").await.expect("stat");
    tokio::time::timeout(HANG, is_blocked)
        .await
        .expect("the path fills up")
        .expect("signal");
    gate.drain().await;
    task.abort();
    // The proxy closed the connection: after what it had queued, the end.
    let mut sink = Vec::new();
    let read = tokio::time::timeout(HANG, client.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the connection was closed");
}

#[tokio::test]
async fn a_silent_forward_client_gets_421_as_soon_as_the_drain_starts() {
    let gate = Gate::start(
        "set drain-timeout 60s\nset login-timeout 60s\nlisten forward 127.0.0.1:0\npass\n",
    );
    let client = TcpStream::connect(gate.addr).await.expect("connect");
    let mut client = BufReader::new(client);
    assert!(line(&mut client).await.starts_with("220 ftpgate"));
    gate.shared.draining.cancel();
    assert_eq!(
        line(&mut client).await,
        "421 Service not available: the proxy is shutting down.\r\n"
    );
    gate.drain().await;
}

#[tokio::test]
async fn a_server_that_accepts_but_never_greets_is_connected_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        // The first connection is accepted and left silent, as a server whose accept
        // queue overflowed leaves the proxy's; the second one greets.
        let (silent, _) = listener.accept().await.expect("first");
        let (mut s, _) = listener.accept().await.expect("second");
        s.write_all(b"220 second try\r\n").await.expect("greet");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"USER early\r\n", "the client's line, once");
        s.write_all(b"331 go on\r\n").await.expect("reply");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        drop(silent);
    });
    let gate = Gate::reverse(upstream, "set greeting-timeout 1s");
    let mut client = BufReader::new(TcpStream::connect(gate.addr).await.expect("connect"));
    client
        .get_mut()
        .write_all(b"USER early\r\n")
        .await
        .expect("early");
    assert_eq!(line(&mut client).await, "220 second try\r\n");
    assert_eq!(line(&mut client).await, "331 go on\r\n");
    let retries = gate
        .shared
        .metrics
        .upstream_retries_total
        .with_label_values(&["greeting-timeout"])
        .get();
    assert_eq!(retries, 1);
    drop(client);
    task.await.expect("server script");
    gate.drain().await;
}

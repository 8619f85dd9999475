//! The `ftpgate` command: `run` the proxy, `check` a rule file, print `sessions`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ftpgate::proxy::{self, Shared};
use ftpgate::rules::{Config, DataPath, ListenMode};
use tokio::signal::unix::{SignalKind, signal};

/// The version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FTPGATE_COMMIT"),
    ")"
);

/// An FTP-aware firewall proxy: it reads the FTP control channel and opens exactly the
/// data connections it announces, for the expected peer, once, for a short time.
#[derive(Parser)]
#[command(name = "ftpgate", version = VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a rule file.
    ///
    /// Binds every `listen` statement and the `metrics listen` address, then serves
    /// until SIGTERM or SIGINT. SIGHUP re-reads the rule file: a file that does not
    /// parse is rejected with its error in the log and the running rules stay in force.
    Run {
        /// The rule file, e.g. rules/example.rules.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Log format on standard error.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
        /// After binding, switch to this user (needs root). Capabilities are dropped
        /// in any case, down to CAP_NET_ADMIN with a transparent listener or the kernel
        /// data path, and none without.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Check a rule file and exit: 0 if it is valid, 1 with `file:line:col: message`
    /// on standard error otherwise.
    Check {
        /// The rule file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Also print the compiled rule set with every effective setting.
        #[arg(long)]
        explain: bool,
        /// Print which rule decides each step of a hypothetical session, e.g.
        /// 'session from 198.51.100.2 to 203.0.113.2 port 21 user alice cmd STOR'.
        #[arg(long, value_name = "SESSION")]
        test: Option<String>,
        /// The nftables ruleset of an edge (deploy/nftables/*.nft): its
        /// `define ftpgate_port` must be the port of a `listen transparent` line.
        #[arg(long, value_name = "NFT")]
        ruleset: Option<PathBuf>,
    },
    /// Write the man page and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateAssets {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the live table of tracked sessions and their expectations, like
    /// `conntrack -L` for FTP, from a running ftpgate's admin endpoint.
    Sessions {
        /// The admin endpoint (`metrics listen` in the rule file).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9121")]
        admin: String,
        /// Print the raw JSON of `/sessions` instead of the table.
        #[arg(long)]
        json: bool,
        /// The bearer token's file, when `metrics listen` has a `token-file`.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            file,
            explain,
            test,
            ruleset,
        } => check(&file, explain, test.as_deref(), ruleset.as_deref()),
        Command::Sessions {
            admin,
            json,
            token_file,
        } => match fetch_sessions(&admin, token_file.as_deref()) {
            Ok(v) if json => {
                println!("{v:#}");
                ExitCode::SUCCESS
            }
            Ok(v) => {
                print!("{}", ftpgate::admin::render_table(&v));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ftpgate sessions: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::GenerateAssets { dir } => match generate_assets(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            log_format,
            user,
        } => {
            init_logging(log_format);
            match run(config, user.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(
    file: &std::path::Path,
    explain: bool,
    test: Option<&str>,
    ruleset: Option<&std::path::Path>,
) -> ExitCode {
    let config = match Config::load(file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{}", e.with_caret());
            return ExitCode::FAILURE;
        }
    };
    if let Some(nft) = ruleset {
        let agreed = std::fs::read_to_string(nft)
            .map_err(|e| format!("{}: cannot read: {e}", nft.display()))
            .and_then(|text| ftpgate::rules::agrees_with_ruleset(&config, &text))
            .map_err(|e| format!("{}: {e}", nft.display()));
        if let Err(e) = agreed {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    for warning in config.warnings() {
        eprintln!("{warning}");
    }
    println!(
        "{}: ok ({} listeners, {} rules)",
        file.display(),
        config.listeners.len(),
        config.session_rules.len()
    );
    if explain {
        print!("{}", ftpgate::rules::explain(&config));
    }
    if let Some(spec) = test {
        match ftpgate::rules::parse_trial(spec) {
            Ok(trial) => print!("{}", ftpgate::rules::run_trial(&config, &trial)),
            Err(e) => {
                eprintln!("--test: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// `DIR/ftpgate.1` (clap_mangen) and `DIR/completions/{ftpgate.bash, _ftpgate,
/// ftpgate.fish}` (clap_complete), from the same definitions `--help` prints.
fn generate_assets(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("cannot create {}", completions.display()))?;
    let command = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    std::fs::write(dir.join("ftpgate.1"), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command.clone(), "ftpgate", &completions)?;
    }
    Ok(())
}

fn fetch_sessions(
    admin: &str,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("http://{admin}/sessions");
    let mut request = ureq::get(&url);
    if let Some(file) = token_file {
        let token = ftpgate::rules::read_token(file).map_err(anyhow::Error::msg)?;
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let body = request
        .call()
        .with_context(|| format!("cannot fetch {url}"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read {url}"))?;
    serde_json::from_str(&body).with_context(|| format!("{url} did not return JSON"))
}

/// Binds, gives up privileges while the process has one thread, then serves.
fn run(path: PathBuf, user: Option<&str>) -> anyhow::Result<()> {
    let config = Config::load(&path).map_err(|e| anyhow::anyhow!(e.with_caret()))?;
    let listeners = proxy::bind(&config)?;
    let admin = match config.metrics_listen {
        Some(addr) => Some(ftpgate::admin::bind(addr).map_err(|e| {
            let hint = proxy::privilege_hint(&e, addr.port(), ftpgate::net::Binding::Plain);
            anyhow::anyhow!("cannot listen on {addr} for metrics: {e}{hint}")
        })?),
        None => None,
    };
    // Opened (and the ruleset checked) before privileges go, so a missing table is a
    // start-up error. Transparent listeners announce their relayed data connections
    // to the ruleset; the kernel path writes its holes there.
    let kernel_path = config
        .listeners
        .iter()
        .any(|l| l.data_path == DataPath::Kernel);
    let transparent = config
        .listeners
        .iter()
        .any(|l| matches!(l.mode, ListenMode::Transparent(_)));
    let nft = if kernel_path || transparent {
        let what = if kernel_path {
            "data-path kernel"
        } else {
            "listen transparent"
        };
        Some(
            ftpgate::net::nft::Nft::open()
                .with_context(|| format!("{what}: the nftables table"))?,
        )
    } else {
        None
    };
    // Transparent sockets and nftables elements need CAP_NET_ADMIN for as long as
    // ftpgate runs.
    let net_admin = kernel_path || transparent;
    let dropped =
        ftpgate::privileges::drop_after_bind(user, net_admin).context("cannot drop privileges")?;
    tracing::info!(%dropped, bounding_set = dropped.bounded, "privileges dropped after binding");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(path, config, nft, listeners, admin))
}

/// Tells systemd (Type=notify) how ftpgate is; nothing without `NOTIFY_SOCKET`.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// How long a reload may take to read the rule file and what it includes.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Signals whose default action would end ftpgate at once, with no drain and no log
/// line (a stray `kill -USR2`, a logrotate recipe written for another daemon): each is
/// logged and otherwise ignored. SIGTERM/SIGINT drain, SIGHUP reloads, SIGUSR1 reopens
/// the logs; SIGQUIT keeps its core dump for debugging.
fn ignore_stray_signals() -> std::io::Result<()> {
    let stray = [
        ("SIGUSR2", SignalKind::user_defined2()),
        ("SIGALRM", SignalKind::alarm()),
        ("SIGIO", SignalKind::io()),
        ("SIGPWR", SignalKind::from_raw(nix::libc::SIGPWR)),
        ("SIGVTALRM", SignalKind::from_raw(nix::libc::SIGVTALRM)),
        ("SIGPROF", SignalKind::from_raw(nix::libc::SIGPROF)),
    ];
    for (name, kind) in stray {
        let mut stream = signal(kind)?;
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                tracing::warn!(
                    signal = name,
                    "signal ignored (SIGTERM stops, SIGHUP reloads, SIGUSR1 reopens logs)"
                );
            }
        });
    }
    Ok(())
}

async fn serve(
    path: PathBuf,
    config: Config,
    nft: Option<ftpgate::net::nft::Nft>,
    listeners: Vec<(ftpgate::rules::Listener, std::net::TcpListener)>,
    admin: Option<std::net::TcpListener>,
) -> anyhow::Result<()> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        version = VERSION,
        file = %path.display(),
        listeners = config.listeners.len(),
        rules = config.session_rules.len(),
        tables = config.tables.len(),
        data_ports = %config.settings.data_ports,
        admin = ?config.metrics_listen,
        "ftpgate started"
    );
    let shared = Shared::new(config, nft);
    if let Some(listener) = admin {
        tracing::info!(addr = %listener.local_addr()?, "admin endpoint: /metrics /sessions /healthz");
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = ftpgate::admin::serve(shared, listener).await {
                tracing::error!(error = %e, "admin endpoint failed");
            }
        });
    }
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    ignore_stray_signals()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = std::sync::Arc::new(
        proxy::Workers::start(threads).context("cannot start the session workers")?,
    );
    let serving = tokio::spawn(proxy::serve_on(shared.clone(), listeners, Some(workers)));
    // Everything is bound: `systemctl start` (Type=notify) returns now, not before.
    notify(&[sd_notify::NotifyState::Ready]);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                // systemd (Type=notify-reload) wants the reload's start time with it.
                let mut reloading = vec![sd_notify::NotifyState::Reloading];
                reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
                notify(&reloading);
                // Read off the runtime, so that a file on a hung network mount holds
                // up neither the sessions nor SIGTERM.
                let file = path.clone();
                let loading = tokio::task::spawn_blocking(move || Config::load(&file));
                let loaded = tokio::select! {
                    r = tokio::time::timeout(RELOAD_TIMEOUT, loading) => r,
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                };
                let why = match loaded {
                    Ok(Ok(Ok(new))) => {
                        for warning in new.warnings() {
                            tracing::warn!("{warning}");
                        }
                        shared.reload(new);
                        tracing::info!(file = %path.display(), "rules reloaded");
                        notify(&[sd_notify::NotifyState::Ready]);
                        continue;
                    }
                    Ok(Ok(Err(e))) => e.to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!(
                        "reading {} took more than {} s",
                        path.display(),
                        RELOAD_TIMEOUT.as_secs()
                    ),
                };
                tracing::error!("reload rejected, previous rules stay in force: {why}");
                shared.reload_rejected(why);
                notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = usr1.recv() => {
                shared.reopen_logs();
                tracing::info!("SIGUSR1: transfer log reopened");
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Drain: no new sessions; transfers in flight may finish within drain-timeout;
    // a second signal or the timeout closes what is left with 421.
    let drain = shared.config.load().settings.drain_timeout;
    tracing::info!(
        drain_timeout_ms = drain.as_millis() as u64,
        "draining: no new sessions"
    );
    notify(&[sd_notify::NotifyState::Stopping]);
    shared.draining.cancel();
    tokio::pin!(serving);
    let drained = tokio::select! {
        r = &mut serving => Some(r),
        _ = tokio::time::sleep(drain) => None,
        _ = term.recv() => None,
        _ = int.recv() => None,
    };
    match drained {
        Some(result) => {
            result??;
            tracing::info!("drained");
        }
        None => {
            tracing::warn!("closing the sessions still open");
            shared.shutdown.cancel();
            serving.await??;
        }
    }
    shared.shutdown.cancel();
    Ok(())
}

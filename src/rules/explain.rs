//! What `ftpgate check --explain` and `--test` print: the compiled rule set with its
//! effective settings, and the rule that decides each step of a hypothetical session.
//! Pure functions over a [`Config`]; the CLI only prints them.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use super::{
    Config, DataRequest, Decision, Family, Interception, ListenMode, Parties, Source, Subject,
    UnknownCommands, Verdict,
};
use crate::vocab::{ClientTls, DataMode, MIN_DATA_PORT, ServerTls, Verify};

/// The compiled rule set, one line per setting, listener and rule.
pub fn explain(c: &Config) -> String {
    let s = &c.settings;
    let mut out = String::new();
    let _ = writeln!(out, "settings (defaults filled in):");
    for spec in super::settings::SETTINGS {
        let _ = writeln!(out, "  set {} {}", spec.name, (spec.show)(s));
    }
    let metrics = c.metrics_listen.map_or("-".into(), |a| a.to_string());
    let _ = writeln!(out, "  metrics listen {metrics}");
    let _ = writeln!(out, "listeners:");
    for l in &c.listeners {
        let mode = match &l.mode {
            ListenMode::Reverse { upstream } => match upstream.send_proxy {
                Some(v) => format!("reverse upstream {upstream} send-proxy {}", v.as_str()),
                None => format!("reverse upstream {upstream}"),
            },
            ListenMode::Transparent(Interception::Redirect) => "transparent (REDIRECT)".into(),
            ListenMode::Forward => "forward (USER name@host[:port])".into(),
            ListenMode::Pool { pool } => format!("reverse pool {pool}"),
            ListenMode::Transparent(Interception::Tproxy {
                source: Source::Proxy,
            }) => "transparent (TPROXY)".into(),
            ListenMode::Transparent(Interception::Tproxy {
                source: Source::Peer,
            }) => "transparent (TPROXY, preserve-source)".into(),
        };
        let path = match l.data_path {
            super::DataPath::Relay => "",
            super::DataPath::Kernel => " data-path kernel",
        };
        let tls = if l.tls_implicit { " tls implicit" } else { "" };
        let proxy = l
            .accept_proxy
            .as_ref()
            .map_or(String::new(), |from| format!(" accept-proxy from {from}"));
        let _ = writeln!(
            out,
            "  {} {mode}{path}{tls}{proxy}    # {}",
            l.addr, l.origin
        );
    }
    if !c.tables.is_empty() {
        let _ = writeln!(out, "tables:");
    }
    for t in &c.tables {
        let nets: Vec<String> = t.nets.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "  <{}> {{ {} }}    # {}",
            t.name,
            nets.join(", "),
            t.origin
        );
    }
    let _ = writeln!(out, "rules (first match wins within each kind):");
    for r in &c.session_rules {
        let subject = match &r.subject {
            Subject::Session => "session".to_string(),
            Subject::Commands(v) => format!("cmd {{ {} }}", v.join(", ")),
            Subject::Users(u) => format!("user {{ {} }}", u.join(", ")),
            Subject::Data(m) => m.to_string(),
        };
        let port = r
            .port
            .as_ref()
            .map_or(String::new(), |p| format!(" port {p}"));
        let log = if r.log { " log" } else { "" };
        let on = r.on.map_or(String::new(), |l| format!(" on {l}"));
        let code = match &r.reply {
            Some(rc) => match &rc.text {
                Some(text) => format!(" return-code {} \"{text}\"", rc.code),
                None => format!(" return-code {}", rc.code),
            },
            None => String::new(),
        };
        let convert = r
            .server_mode
            .map_or(String::new(), |m| format!(" server-mode {}", m.as_str()));
        let reuse = if r.tls.require_reuse {
            " require-reuse"
        } else {
            ""
        };
        let ccc = if r.tls.ccc { " ccc" } else { "" };
        let tls = match r.tls.client {
            ClientTls::Deny => String::new(),
            t => format!(" tls client {}{reuse}{ccc}", t.as_str()),
        };
        let tls = format!("{tls}{}{}", server_tls(&r.tls), passthrough(&r.tls));
        let _ = writeln!(
            out,
            "  {}{code}{log}{on} {subject} from {} to {}{port}{convert}{tls}    # {}",
            r.verdict.as_str(),
            r.from,
            r.to,
            r.origin
        );
    }
    for p in &c.pools {
        let servers: Vec<String> = p.backends.iter().map(ToString::to_string).collect();
        let check = p.check.map_or(String::new(), |c| {
            format!(
                " check interval {}ms fall {} rise {}",
                c.interval.as_millis(),
                c.fall,
                c.rise
            )
        });
        let list = |what: &str, names: &[String]| {
            if names.is_empty() {
                String::new()
            } else {
                format!(" {what} {{ {} }}", names.join(", "))
            }
        };
        let routed = format!("{}{}", list("users", &p.users), list("hosts", &p.hosts));
        let proxy = p
            .send_proxy
            .map_or(String::new(), |v| format!(" send-proxy {}", v.as_str()));
        let _ = writeln!(
            out,
            "pool {} {{ {} }} balance {}{check}{routed}{proxy}    # {}",
            p.name,
            servers.join(", "),
            p.balance.as_str(),
            p.origin
        );
    }
    if let Some(i) = &c.tls_intercept {
        let _ = writeln!(
            out,
            "tls intercept ca {} key {}    # {}",
            i.ca.display(),
            i.key.display(),
            i.origin
        );
    }
    for cert in &c.tls_certs {
        let _ = writeln!(
            out,
            "tls cert {} key {}    # {}",
            cert.cert.display(),
            cert.key.display(),
            cert.origin
        );
    }
    let _ = writeln!(
        out,
        "defaults: sessions blocked (421); commands, logins and data connections passed\n\
         refusals: session 421, login 530, command 550, data 425 (or the rule's return-code)"
    );
    out
}

/// A hypothetical session: `session [on LISTENER] from IP to IP [port PORT]
/// [active|passive] [data-port PORT] [user NAME] [cmd VERB ...]`.
#[derive(Debug, PartialEq, Eq)]
pub struct Trial {
    /// Unspecified (matching no `on` rule) unless the trial names one.
    listener: SocketAddr,
    client: IpAddr,
    server: SocketAddr,
    user: Option<String>,
    commands: Vec<String>,
    mode: DataMode,
    data_port: u16,
}

/// The onward data port a trial assumes unless told (a typical ephemeral port).
const TRIAL_DATA_PORT: u16 = 50000;

/// Reads a `--test` description; the error says what was expected.
pub fn parse_trial(spec: &str) -> Result<Trial, String> {
    let mut words = spec.split_whitespace().peekable();
    let mut listener = SocketAddr::from(([0, 0, 0, 0], 0));
    if words.peek() == Some(&"session") {
        words.next();
        if words.peek() == Some(&"on") {
            words.next();
            listener = words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or("expected a listener address such as 0.0.0.0:8021 after `on`")?;
        }
    } else {
        return Err(format!(
            "expected `session`, found `{}`",
            words.next().unwrap_or("the end")
        ));
    }
    for keyword in ["from"] {
        match words.next() {
            Some(w) if w == keyword => {}
            other => {
                return Err(format!(
                    "expected `{keyword}`, found `{}`",
                    other.unwrap_or("the end")
                ));
            }
        }
    }
    let client: IpAddr = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or("expected the client address after `from`")?;
    if words.next() != Some("to") {
        return Err("expected `to SERVER` after the client address".into());
    }
    let server_ip: IpAddr = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or("expected the server address after `to`")?;
    let mut trial = Trial {
        listener,
        client,
        server: SocketAddr::new(server_ip, 21),
        user: None,
        commands: Vec::new(),
        mode: DataMode::Passive,
        data_port: TRIAL_DATA_PORT,
    };
    while let Some(word) = words.next() {
        match word {
            "port" => {
                let port = words
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("expected a port after `port`")?;
                trial.server.set_port(port);
            }
            "active" => trial.mode = DataMode::Active,
            "passive" => trial.mode = DataMode::Passive,
            "data-port" => {
                trial.data_port = words
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("expected a port after `data-port`")?;
            }
            "user" => {
                trial.user = Some(
                    words
                        .next()
                        .ok_or("expected a name after `user`")?
                        .to_string(),
                )
            }
            // Every word after `cmd` is a verb, but `SITE` takes the next as its
            // sub-command: `cmd SITE CHMOD DELE`.
            "cmd" => {
                while let Some(verb) = words.next() {
                    let verb = verb.to_ascii_uppercase();
                    match words.peek() {
                        Some(sub) if verb == "SITE" => {
                            trial
                                .commands
                                .push(format!("SITE {}", sub.to_ascii_uppercase()));
                            words.next();
                        }
                        _ => trial.commands.push(verb),
                    }
                }
            }
            other => {
                return Err(format!(
                    "unexpected `{other}`; expected port, active, passive, data-port, user or cmd"
                ));
            }
        }
    }
    Ok(trial)
}

fn verdict(d: Option<&Decision>, default: &str) -> String {
    match d {
        Some(d) => format!("{} ({})", d.verdict.as_str(), d.source()),
        None => format!("{default} (default)"),
    }
}

/// ` tls server …` as a rule would say it, or nothing when the server leg is clear.
fn server_tls(tls: &crate::vocab::TlsPolicy) -> String {
    if tls.server == ServerTls::Off {
        return String::new();
    }
    let verify = match &tls.verify {
        Verify::System => " ca system".to_string(),
        Verify::CaFile(path) => format!(" ca {}", path.display()),
        Verify::Off => " no-verify".to_string(),
    };
    let implicit = if tls.server_implicit { " implicit" } else { "" };
    format!(" tls server {}{verify}{implicit}", tls.server.as_str())
}

/// ` tls passthrough ports …` as a rule would say it, or nothing.
fn passthrough(tls: &crate::vocab::TlsPolicy) -> String {
    tls.passthrough.map_or(String::new(), |p| {
        format!(" tls passthrough ports {}-{}", p.lo, p.hi)
    })
}

/// Which rule decides each step of `trial`, one line per step.
pub fn run_trial(c: &Config, trial: &Trial) -> String {
    let mut out = String::new();
    let who = Parties::new(trial.listener, trial.client, trial.server);
    let session = c.session_decision(&who);
    let convert = session
        .server_mode
        .map_or(String::new(), |m| format!(", server leg {}", m.as_str()));
    let convert = match session.tls.client {
        ClientTls::Deny => convert,
        t => format!("{convert}, client TLS {}", t.as_str()),
    };
    let convert = match session.tls.passthrough {
        Some(p) => format!(
            "{convert}, TLS passed through (server ports {}-{})",
            p.lo, p.hi
        ),
        None => convert,
    };
    let convert = match session.tls.server {
        ServerTls::Off => convert,
        t => format!(
            "{convert}, server TLS {}{}",
            t.as_str(),
            server_tls(&session.tls).replace(&format!(" tls server {}", t.as_str()), "")
        ),
    };
    let _ = writeln!(
        out,
        "session {} -> {}: {}{convert}",
        trial.client,
        trial.server,
        verdict(session.rule.is_some().then_some(&session), "block")
    );
    if session.rule.is_none() || session.verdict == Verdict::Block {
        // Nothing after a refused session happens: say so rather than decide it.
        if let Some(user) = &trial.user {
            let _ = writeln!(out, "login {user}: not reached (the session is refused)");
        }
        for verb in &trial.commands {
            let _ = writeln!(out, "cmd {verb}: not reached (the session is refused)");
        }
        return out;
    }
    if let Some(user) = &trial.user {
        // A forward listener reads the server from `USER name@host`; the login rules
        // see the name the server gets.
        let forward = c
            .listeners
            .iter()
            .any(|l| l.addr == trial.listener && l.mode == ListenMode::Forward);
        let parsed = forward
            .then(|| crate::codec::parse_forward_user(user))
            .flatten();
        let name = parsed.as_ref().map_or(user.as_str(), |f| f.user.as_str());
        let d = c.login_decision(&who, name);
        let shown = if name == user {
            user.clone()
        } else {
            format!("{name} (from {user})")
        };
        let _ = writeln!(out, "login {shown}: {}", verdict(d.as_ref(), "pass"));
    }
    for written in &trial.commands {
        // As the engine sees it: X-verbs under their standard names, unknown verbs
        // refused unless `set unknown-commands pass`.
        let (verb, site) = match written.split_once(' ') {
            Some((verb, sub)) => (verb, Some(sub)),
            None => (written.as_str(), None),
        };
        let verb = crate::codec::canonical_verb(verb);
        let shown = match site {
            Some(sub) => format!("{verb} {sub}"),
            None if verb != written => format!("{verb} (from {written})"),
            None => verb.to_string(),
        };
        if !crate::codec::is_known_verb(verb)
            && c.settings.unknown_commands == UnknownCommands::Block
        {
            let _ = writeln!(
                out,
                "cmd {shown}: block (500: not a verb ftpgate knows; set unknown-commands)"
            );
            continue;
        }
        let d = c.command_decision(&who, verb, site);
        let _ = writeln!(out, "cmd {shown}: {}", verdict(d.as_ref(), "pass"));
        let passed = d.is_none_or(|d| d.verdict == Verdict::Pass);
        let Some(kind) = crate::codec::transfer_kind(verb) else {
            continue;
        };
        if !passed {
            continue;
        }
        if trial.data_port < MIN_DATA_PORT {
            let _ = writeln!(
                out,
                "  data {} {} {} port {}: block (425: ftpgate never opens a data \
                 connection to a port below {MIN_DATA_PORT})",
                trial.mode.as_str(),
                Family::of(trial.client).as_str(),
                kind.as_str(),
                trial.data_port
            );
            continue;
        }
        let mut data = DataRequest {
            mode: trial.mode,
            family: Family::of(trial.client),
            port: trial.data_port,
            direction: None,
        };
        let announced = c.data_decision(&who, &data);
        data.direction = Some(kind);
        let used = match announced {
            Some(d) => Some(d),
            None => c.data_decision(&who, &data),
        };
        let _ = writeln!(
            out,
            "  data {} {} {} port {}: {}",
            trial.mode.as_str(),
            data.family.as_str(),
            kind.as_str(),
            trial.data_port,
            verdict(used.as_ref(), "pass")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Config, parse_str};

    const RULES: &str = "listen reverse 127.0.0.1:2121 upstream 127.0.0.1:21\n\
                         block log cmd { DELE, SITE }\nblock user root\n\
                         pass from 198.51.100.0/24 to 203.0.113.0/24 port 21\n";

    #[test]
    fn a_trial_names_the_rule_that_decides_each_step() {
        let c = parse_str("t.rules", RULES).unwrap();
        let t = parse_trial(
            "session from 198.51.100.2 to 203.0.113.2 port 21 user alice cmd STOR dele",
        )
        .unwrap();
        assert_eq!(
            run_trial(&c, &t),
            "session 198.51.100.2 -> 203.0.113.2:21: pass (t.rules:4)\n\
             login alice: pass (default)\n\
             cmd STOR: pass (default)\n\
             \x20 data passive inet upload port 50000: pass (default)\n\
             cmd DELE: block (t.rules:2)\n"
        );
        let t = parse_trial("session from 192.0.2.9 to 203.0.113.2 user root").unwrap();
        assert_eq!(
            run_trial(&c, &t),
            "session 192.0.2.9 -> 203.0.113.2:21: block (default)\n\
             login root: not reached (the session is refused)\n"
        );
    }

    /// `--test` gives the answer ftpgate would give: `SITE CHMOD` is one command, X-verbs
    /// are decided under their standard names, unknown verbs get `500`, onward ports
    /// below 1024 are never opened, and a forward listener's `USER name@host` is
    /// decided on the name.
    #[test]
    fn a_trial_answers_as_ftpgate_would() {
        let c = parse_str(
            "t.rules",
            "listen forward 127.0.0.1:2121\nblock cmd { SITE CHMOD, MKD }\nblock user bob\n\
             pass from any\n",
        )
        .unwrap();
        let t = parse_trial(
            "session on 127.0.0.1:2121 from 198.51.100.2 to 203.0.113.2 user bob@203.0.113.2 \
             data-port 80 cmd site chmod SITE HELP XMKD FOO RETR",
        )
        .unwrap();
        assert_eq!(
            run_trial(&c, &t),
            "session 198.51.100.2 -> 203.0.113.2:21: pass (t.rules:4)\n\
             login bob (from bob@203.0.113.2): block (t.rules:3)\n\
             cmd SITE CHMOD: block (t.rules:2)\n\
             cmd SITE HELP: pass (default)\n\
             cmd MKD (from XMKD): block (t.rules:2)\n\
             cmd FOO: block (500: not a verb ftpgate knows; set unknown-commands)\n\
             cmd RETR: pass (default)\n\
             \x20 data passive inet download port 80: block (425: ftpgate never opens a \
             data connection to a port below 1024)\n"
        );
    }

    fn trial(file: &str, spec: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let c = Config::load(&path).unwrap();
        run_trial(&c, &parse_trial(spec).unwrap()).replace(&format!("{}:", path.display()), "")
    }

    /// The shipped examples do what their comments say.
    #[test]
    fn the_shipped_examples_decide_as_documented() {
        assert_eq!(
            trial(
                "rules/outbound-lan.rules",
                "session from 198.51.100.2 to 203.0.113.2 active user root cmd STOR SITE"
            ),
            "session 198.51.100.2 -> 203.0.113.2:21: pass (36), server leg passive\n\
             login root: block (23)\ncmd STOR: pass (default)\n\
             \x20 data active inet upload port 50000: pass (30)\ncmd SITE: pass (default)\n"
        );
        assert!(
            trial(
                "rules/outbound-lan.rules",
                "session from 198.51.100.2 to 203.0.113.66"
            )
            .starts_with("session 198.51.100.2 -> 203.0.113.66:21: block (35)")
        );
        assert_eq!(
            trial(
                "rules/anonymous-mirror.rules",
                "session from 192.0.2.1 to 127.0.0.1 port 2121 user anonymous cmd RETR STOR DELE"
            ),
            "session 192.0.2.1 -> 127.0.0.1:2121: pass (30)\nlogin anonymous: pass (18)\n\
             cmd RETR: pass (default)\n\x20 data passive inet download port 50000: pass (26)\n\
             cmd STOR: block (22)\ncmd DELE: block (22)\n"
        );
        assert_eq!(
            trial(
                "rules/server-farm.rules",
                "session from 192.0.2.1 to 203.0.113.5 user root cmd DELE LIST"
            ),
            "session 192.0.2.1 -> 203.0.113.5:21: pass (37), server leg active\n\
             login root: block (26)\ncmd DELE: block (30)\ncmd LIST: pass (default)\n\
             \x20 data passive inet listing port 50000: pass (default)\n"
        );
        assert!(
            trial(
                "rules/server-farm.rules",
                "session from 192.0.2.1 to 203.0.113.5 active cmd RETR"
            )
            .ends_with("data active inet download port 50000: block (33)\n")
        );
        assert_eq!(
            trial(
                "rules/forward-proxy.rules",
                "session from 198.51.100.2 to 203.0.113.3 port 2121"
            ),
            "session 198.51.100.2 -> 203.0.113.3:2121: pass (21)\n"
        );
        assert_eq!(
            trial(
                "rules/forward-proxy.rules",
                "session from 198.51.100.2 to 203.0.113.9"
            ),
            "session 198.51.100.2 -> 203.0.113.9:21: block (22)\n"
        );
        assert_eq!(
            trial(
                "rules/edge-redirect.rules",
                "session on 0.0.0.0:8021 from 198.51.100.2 to 203.0.113.2"
            ),
            "session 198.51.100.2 -> 203.0.113.2:21: pass (19)\n"
        );
    }

    #[test]
    fn a_malformed_trial_says_what_was_expected() {
        assert_eq!(
            parse_trial("from 1.2.3.4"),
            Err("expected `session`, found `from`".into())
        );
        assert_eq!(
            parse_trial("session from x to 1.2.3.4"),
            Err("expected the client address after `from`".into())
        );
        assert_eq!(
            parse_trial("session from 1.2.3.4 to 1.2.3.5 usr x"),
            Err("unexpected `usr`; expected port, active, passive, data-port, user or cmd".into())
        );
    }

    #[test]
    fn explain_lists_settings_listeners_and_rules_with_their_origin() {
        let c = parse_str("t.rules", RULES).unwrap();
        let text = explain(&c);
        assert!(text.contains("  set data-timeout 30000ms\n"), "{text}");
        assert!(
            text.contains("  127.0.0.1:2121 reverse upstream 127.0.0.1:21    # t.rules:1\n"),
            "{text}"
        );
        assert!(
            text.contains("  block log cmd { DELE, SITE } from any to any    # t.rules:2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  pass session from 198.51.100.0/24 to 203.0.113.0/24 port 21    # t.rules:4\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn explain_names_the_kernel_data_path() {
        let c = parse_str(
            "t.rules",
            "listen transparent 0.0.0.0:8021 tproxy data-path kernel\n",
        )
        .unwrap();
        let text = explain(&c);
        assert!(
            text.contains("  0.0.0.0:8021 transparent (TPROXY) data-path kernel    # t.rules:1\n"),
            "{text}"
        );
    }
}

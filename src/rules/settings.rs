//! Every `set NAME VALUE` setting in one table: its name, the value it expects, how
//! that value is read and applied, and how `--explain` shows it. The parser, its
//! error messages and `ftpgate check --explain` all read this table, so a setting
//! added here is known to all three.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{duration, port_range};
use super::{ActiveAddress, PortRange, Settings, UnknownCommands};

/// One setting of the table.
pub(super) struct Spec {
    pub name: &'static str,
    /// What the value must look like, for "expected ..." errors.
    pub expects: &'static str,
    /// Reads the value token. `Err(None)`: it is not what `expects` says;
    /// `Err(Some(why))`: it is, but out of bounds for this reason.
    pub read: fn(&str) -> Result<Setting, Option<&'static str>>,
    /// The value in force, as `--explain` prints it.
    pub show: fn(&Settings) -> String,
}

/// A setting's value, read and checked; applied in the order of the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Setting {
    DataTimeout(Duration),
    IdleTimeout(Duration),
    ConnectTimeout(Duration),
    LoginTimeout(Duration),
    GreetingTimeout(Duration),
    ReplyTimeout(Duration),
    DataIdleTimeout(Duration),
    DrainTimeout(Duration),
    DataPorts(PortRange),
    MaxLine(usize),
    UnknownCommands(UnknownCommands),
    ActiveAddress(ActiveAddress),
    MaxSessions(usize),
    MaxSessionsPerClient(usize),
    MaxDataConnections(usize),
    MaxAcceptRatePerClient(u32),
    Advertise(IpAddr),
    Xferlog(PathBuf),
}

impl Setting {
    pub fn apply(self, s: &mut Settings) {
        match self {
            Setting::DataTimeout(d) => s.data_timeout = d,
            Setting::IdleTimeout(d) => s.idle_timeout = d,
            Setting::ConnectTimeout(d) => s.connect_timeout = d,
            Setting::LoginTimeout(d) => s.login_timeout = d,
            Setting::GreetingTimeout(d) => s.greeting_timeout = d,
            Setting::ReplyTimeout(d) => s.reply_timeout = d,
            Setting::DataIdleTimeout(d) => s.data_idle_timeout = d,
            Setting::DrainTimeout(d) => s.drain_timeout = d,
            Setting::DataPorts(r) => s.data_ports = r,
            Setting::MaxLine(n) => s.max_line = n,
            Setting::UnknownCommands(u) => s.unknown_commands = u,
            Setting::ActiveAddress(a) => s.active_address = a,
            Setting::MaxSessions(n) => s.max_sessions = n,
            Setting::MaxSessionsPerClient(n) => s.max_sessions_per_client = n,
            Setting::MaxDataConnections(n) => s.max_data_connections = n,
            Setting::MaxAcceptRatePerClient(n) => s.max_accept_rate_per_client = n,
            Setting::Advertise(ip) => s.advertise = Some(ip),
            Setting::Xferlog(path) => s.xferlog = Some(path),
        }
    }
}

const DURATION: &str = "a duration such as 30s, 15m or 500ms";

/// Every setting, in the order `--explain` lists them.
pub(super) const SETTINGS: &[Spec] = &[
    Spec {
        name: "data-timeout",
        expects: DURATION,
        read: |t| duration(t).map(Setting::DataTimeout).ok_or(None),
        show: |s| ms(s.data_timeout),
    },
    Spec {
        name: "idle-timeout",
        expects: DURATION,
        read: |t| duration(t).map(Setting::IdleTimeout).ok_or(None),
        show: |s| ms(s.idle_timeout),
    },
    Spec {
        name: "connect-timeout",
        expects: DURATION,
        read: |t| duration(t).map(Setting::ConnectTimeout).ok_or(None),
        show: |s| ms(s.connect_timeout),
    },
    Spec {
        name: "login-timeout",
        expects: DURATION,
        read: |t| duration(t).map(Setting::LoginTimeout).ok_or(None),
        show: |s| ms(s.login_timeout),
    },
    Spec {
        name: "greeting-timeout",
        expects: DURATION,
        read: |t| duration(t).map(Setting::GreetingTimeout).ok_or(None),
        show: |s| ms(s.greeting_timeout),
    },
    Spec {
        name: "reply-timeout",
        expects: DURATION,
        read: |t| duration(t).map(Setting::ReplyTimeout).ok_or(None),
        show: |s| ms(s.reply_timeout),
    },
    Spec {
        name: "data-idle-timeout",
        expects: DURATION,
        read: |t| duration(t).map(Setting::DataIdleTimeout).ok_or(None),
        show: |s| ms(s.data_idle_timeout),
    },
    Spec {
        name: "drain-timeout",
        expects: DURATION,
        read: |t| duration(t).map(Setting::DrainTimeout).ok_or(None),
        show: |s| ms(s.drain_timeout),
    },
    Spec {
        name: "data-ports",
        expects: "a port range such as 40000-40999",
        read: |t| match port_range(t) {
            Some(r) if r.lo < 1024 => Err(Some("data ports must be 1024 or above")),
            Some(r) => Ok(Setting::DataPorts(r)),
            None => Err(None),
        },
        show: |s| s.data_ports.to_string(),
    },
    Spec {
        name: "max-line",
        expects: "a line length in bytes",
        // Servers read longer lines differently: ProFTPD fills the last KiB of its
        // 4 KiB command buffer in short reads and can miss a CRLF split between two
        // of them (lines of 4078 bytes and more, measured), vsftpd ends the session
        // past 4096 bytes.
        read: |t| match t.parse::<usize>() {
            Ok(n) if (512..=3072).contains(&n) => Ok(Setting::MaxLine(n)),
            Ok(_) => Err(Some("max-line must be between 512 and 3072")),
            Err(_) => Err(None),
        },
        show: |s| s.max_line.to_string(),
    },
    Spec {
        name: "unknown-commands",
        expects: "pass or block",
        read: |t| match t {
            "pass" => Ok(Setting::UnknownCommands(UnknownCommands::Pass)),
            "block" => Ok(Setting::UnknownCommands(UnknownCommands::Block)),
            _ => Err(None),
        },
        show: |s| s.unknown_commands.as_str().to_string(),
    },
    Spec {
        name: "active-address",
        expects: "strict or substitute",
        read: |t| match t {
            "strict" => Ok(Setting::ActiveAddress(ActiveAddress::Strict)),
            "substitute" => Ok(Setting::ActiveAddress(ActiveAddress::Substitute)),
            _ => Err(None),
        },
        show: |s| s.active_address.as_str().to_string(),
    },
    Spec {
        name: "max-sessions",
        expects: "a number of sessions above 0",
        read: |t| positive(t).map(Setting::MaxSessions).ok_or(None),
        show: |s| s.max_sessions.to_string(),
    },
    Spec {
        name: "max-sessions-per-client",
        expects: "a number of sessions above 0",
        read: |t| positive(t).map(Setting::MaxSessionsPerClient).ok_or(None),
        show: |s| s.max_sessions_per_client.to_string(),
    },
    Spec {
        name: "max-data-connections",
        expects: "a number of data connections from 1 to 64",
        read: |t| {
            let n = t.parse::<usize>().ok().filter(|n| (1..=64).contains(n));
            n.map(Setting::MaxDataConnections).ok_or(None)
        },
        show: |s| s.max_data_connections.to_string(),
    },
    Spec {
        name: "max-accept-rate-per-client",
        expects: "new sessions per second, 1 to 1000000",
        read: |t| {
            let n = t
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n));
            n.map(Setting::MaxAcceptRatePerClient).ok_or(None)
        },
        show: |s| s.max_accept_rate_per_client.to_string(),
    },
    Spec {
        name: "advertise",
        expects: "an IP address",
        read: |t| t.parse().map(Setting::Advertise).map_err(|_| None),
        show: |s| s.advertise.map_or("-".into(), |a| a.to_string()),
    },
    Spec {
        name: "xferlog",
        expects: "a file path",
        read: |t| Ok(Setting::Xferlog(PathBuf::from(t))),
        show: |s| {
            s.xferlog
                .as_ref()
                .map_or("-".into(), |p| p.display().to_string())
        },
    },
];

/// The setting called `name`.
pub(super) fn find(name: &str) -> Option<&'static Spec> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Every setting's name, for the error about an unknown one.
pub(super) fn names() -> String {
    SETTINGS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn positive(t: &str) -> Option<usize> {
    t.parse::<usize>().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_reads_what_it_shows_and_shows_what_it_read() {
        for spec in SETTINGS {
            let mut s = Settings::default();
            let shown = (spec.show)(&s);
            // What --explain prints for a default is a value the parser takes back,
            // except the two settings that are unset by default.
            if shown != "-" {
                let read = (spec.read)(&shown);
                let setting = read.unwrap_or_else(|e| panic!("{}: {shown}: {e:?}", spec.name));
                setting.apply(&mut s);
                assert_eq!((spec.show)(&s), shown, "{}", spec.name);
            }
        }
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a name twice");
    }
}

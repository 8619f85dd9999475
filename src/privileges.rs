//! Giving up privileges once the listeners are bound.
//!
//! Binding a port below 1024 and `IP_TRANSPARENT` need capabilities; serving needs at
//! most `CAP_NET_ADMIN`, and only with a transparent listener (it writes its relayed
//! data connections into the ruleset; with TPROXY its data sockets and the
//! `preserve-source` legs are transparent) or `data-path kernel` (nftables elements).
//! So after binding, ftpgate keeps that one capability or none, in every set, drops the
//! rest from the bounding set when it may, forbids gaining any back (`no_new_privs`),
//! and with `--user` also leaves root.
//!
//! Capabilities belong to threads: this must run while the process has one thread,
//! before the async runtime starts; the runtime's threads inherit the result.

use std::fmt;

use anyhow::{Context, bail};
use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, User};

/// What the process runs with afterwards, for the log.
#[derive(Debug)]
pub struct Dropped {
    pub uid: u32,
    pub gid: u32,
    pub kept: Vec<Capability>,
    /// Whether the bounding set could be reduced (it needs `CAP_SETPCAP`).
    pub bounded: bool,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept: Vec<String> = self.kept.iter().map(ToString::to_string).collect();
        write!(
            f,
            "uid={} gid={} capabilities={}",
            self.uid,
            self.gid,
            if kept.is_empty() {
                "none".to_string()
            } else {
                kept.join(",")
            }
        )
    }
}

/// Drops every capability but `CAP_NET_ADMIN` (kept only when `net_admin`), and
/// switches to `user` (which needs root) if given.
pub fn drop_after_bind(user: Option<&str>, net_admin: bool) -> anyhow::Result<Dropped> {
    let mut keep = CapsHashSet::new();
    if net_admin {
        keep.insert(Capability::CAP_NET_ADMIN);
    }
    // The bounding set needs CAP_SETPCAP, which only root (or a generous unit) has;
    // without it the other sets are still reduced, which is what takes effect.
    let bounded = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)?;
    if bounded {
        for cap in caps::all().difference(&keep) {
            caps::drop(None, CapSet::Bounding, *cap)
                .with_context(|| format!("cannot drop {cap} from the bounding set"))?;
        }
    }
    if let Some(name) = user {
        switch_user(name)?;
    }
    caps::clear(None, CapSet::Ambient).context("cannot clear the ambient capabilities")?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
        .context("cannot clear the inheritable capabilities")?;
    // Effective must stay within permitted while permitted shrinks.
    caps::set(None, CapSet::Effective, &keep).context("cannot set the effective capabilities")?;
    caps::set(None, CapSet::Permitted, &keep).context("cannot set the permitted capabilities")?;
    nix::sys::prctl::set_no_new_privs().context("cannot set no_new_privs")?;
    let mut kept: Vec<Capability> = caps::read(None, CapSet::Effective)?.into_iter().collect();
    kept.sort_by_key(|c| c.index());
    Ok(Dropped {
        uid: Uid::current().as_raw(),
        gid: Gid::current().as_raw(),
        kept,
        bounded,
    })
}

/// Becomes `name` (its uid, its primary gid, no supplementary groups), keeping the
/// permitted capabilities across the change so the caller can choose what to keep.
fn switch_user(name: &str) -> anyhow::Result<()> {
    if !Uid::effective().is_root() {
        bail!("--user {name} needs ftpgate to start as root");
    }
    let Some(user) =
        User::from_name(name).with_context(|| format!("cannot look up user {name}"))?
    else {
        bail!("no such user: {name}");
    };
    nix::sys::prctl::set_keepcaps(true).context("cannot keep capabilities across setuid")?;
    nix::unistd::setgroups(&[user.gid]).context("cannot drop supplementary groups")?;
    nix::unistd::setgid(user.gid).with_context(|| format!("cannot switch to gid {}", user.gid))?;
    nix::unistd::setuid(user.uid).with_context(|| format!("cannot switch to uid {}", user.uid))?;
    nix::sys::prctl::set_keepcaps(false).context("cannot reset keepcaps")?;
    Ok(())
}

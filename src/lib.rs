//! ftpgate: an FTP-aware firewall proxy and connection tracker.
//!
//! The pure core (`vocab`, `addrs`, `codec`, `rules`, `session`, `track`) never touches a
//! socket or a clock; the shell (`net`, `proxy`, `admin`) drives it with tokio.

// Input never reaches a panic: no unwrap, expect, panic or unchecked indexing outside
// tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod addrs;
pub mod admin;
pub mod codec;
pub mod metrics;
pub mod net;
pub mod privileges;
pub mod proxy;
pub mod rules;
pub mod session;
pub mod tls;
pub mod track;
pub mod vocab;
pub mod xferlog;

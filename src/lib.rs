//! ftpgate: an FTP-aware firewall proxy and connection tracker.
//!
//! The pure core (`codec`, `session`, `rules`, `track`) never touches a socket or a
//! clock; the shell (`net`, `proxy`, `admin`) drives it with tokio.

pub mod admin;
pub mod codec;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod rules;
pub mod session;
pub mod track;

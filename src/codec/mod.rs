//! The control-channel codec: bytes to typed commands and replies and back.
//!
//! Pure functions and small state machines over bytes; no sockets, no clocks, no policy.
//! `line` frames the stream, `command` reads client lines, `reply` server lines and
//! `addr` the address forms both carry.

pub mod addr;
pub mod command;
pub mod line;
pub mod proxy_header;
pub mod reply;

pub use command::{
    Command, EpsvArg, ForwardUser, LineError, Malformed, SyntaxError, TransferKind, canonical_verb,
    command_words, is_known_verb, parse_command, parse_forward_host, parse_forward_user,
    parse_line, transfer_kind, verb_class,
};
pub use line::{Defect, Frame, Line, LineFramer, Signals};
pub use reply::{Reply, ReplyAssembler, parse_227, parse_228, parse_229};

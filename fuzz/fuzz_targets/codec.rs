//! The control codec in both directions: arbitrary bytes framed, parsed as commands
//! and as replies, must never panic, every command that parses re-encodes to itself,
//! and a client line ftpgate accepts is one plain line every server reads alike (one
//! LF, after a CR; no control byte, no Telnet byte in its text).
#![no_main]

use ftpgate::codec::{
    Frame, LineFramer, ReplyAssembler, command_words, parse_227, parse_228, parse_229,
    parse_command, parse_line,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framer = LineFramer::new(512);
    let mut frames = Vec::new();
    framer.push(data, &mut frames);
    let mut replies = ReplyAssembler::default();
    for frame in frames {
        let Frame::Line(line) = frame else { continue };
        if parse_line(&line).is_ok() {
            assert!(line.raw.ends_with(b"\r\n"), "{line:?}");
            assert_eq!(line.raw.iter().filter(|b| **b == b'\n').count(), 1);
            assert!(
                line.text.iter().all(|&b| b >= 0x20 && b != 0x7f && b != 0xff),
                "{line:?}"
            );
            assert!(command_words(&line.text).is_ok(), "{line:?}");
        }
        if let Ok(cmd) = parse_command(&line.text) {
            let encoded = cmd.encode();
            let reparsed = parse_command(&encoded[..encoded.len() - 2]);
            assert_eq!(
                reparsed.as_ref(),
                Ok(&cmd),
                "{cmd:?} does not survive encoding"
            );
        }
        let _ = parse_227(&line.text);
        let _ = parse_228(&line.text);
        let _ = parse_229(&line.text);
        if let Some(reply) = replies.push(line) {
            let _ = parse_227(&reply.last);
        }
    }
});

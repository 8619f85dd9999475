//! The control codec in both directions: arbitrary bytes framed, parsed as commands
//! and as replies, must never panic, and every command that parses re-encodes to
//! itself.
#![no_main]

use ftpgate::codec::{
    Frame, LineFramer, ReplyAssembler, parse_227, parse_228, parse_229, parse_command,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framer = LineFramer::new(512);
    let mut frames = Vec::new();
    framer.push(data, &mut frames);
    let mut replies = ReplyAssembler::default();
    for frame in frames {
        let Frame::Line(line) = frame else { continue };
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

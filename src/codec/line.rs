//! Control-stream framing: reassembles the TCP byte stream into CRLF-terminated lines,
//! strips Telnet IAC sequences (RFC 854, as RFC 959 requires of the control channel) and
//! bounds the line length.
//!
//! It is a byte-at-a-time state machine so that splitting the stream anywhere (one byte
//! per segment, several lines in one segment) yields exactly the same frames. It must
//! never interpret what a line says: that is `command`'s and `reply`'s job.

/// Telnet IAC (interpret as command).
const IAC: u8 = 255;
/// Telnet Interrupt Process, sent by clients before `ABOR` (RFC 959 4.1.3).
const IP: u8 = 244;
/// Telnet Data Mark, the Synch signal that follows `IAC IP`.
const DM: u8 = 242;
/// The lowest Telnet command byte (subnegotiation end).
const SE: u8 = 240;
/// WILL, WONT, DO, DONT take one option byte after them.
const WILL: u8 = 251;
const DONT: u8 = 254;

/// Telnet signals seen inside a line (before its terminator).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// `IAC IP` was seen.
    pub interrupt: bool,
    /// `IAC DM` (Synch) was seen.
    pub synch: bool,
}

/// One complete control line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The exact bytes received, Telnet sequences and terminator included, so that a
    /// line forwarded unchanged is forwarded byte for byte.
    pub raw: Vec<u8>,
    /// The Telnet-decoded text without the line terminator: what the parsers see.
    pub text: Vec<u8>,
    /// Telnet signals that arrived within this line.
    pub signals: Signals,
}

/// What the framer produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Line(Line),
    /// A line longer than the limit; its bytes were discarded up to and including its
    /// terminator. `len` counts the discarded raw bytes.
    TooLong {
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    Data,
    /// Just saw `IAC`.
    Iac,
    /// Saw `IAC WILL|WONT|DO|DONT`; the next byte is the option and is dropped.
    Option,
}

/// Reassembles lines from one direction of a control connection.
#[derive(Debug)]
pub struct LineFramer {
    max_line: usize,
    raw: Vec<u8>,
    text: Vec<u8>,
    signals: Signals,
    telnet: Telnet,
    /// Bytes discarded so far of an over-long line, when it is being skipped.
    overflow: Option<usize>,
}

impl LineFramer {
    /// `max_line` bounds the raw bytes of one line, terminator included.
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            max_line: max_line.max(8),
            raw: Vec::new(),
            text: Vec::new(),
            signals: Signals::default(),
            telnet: Telnet::Data,
            overflow: None,
        }
    }

    /// Feeds received bytes; complete frames are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        for &b in bytes {
            self.push_byte(b, out);
        }
    }

    /// Bytes of an unfinished line held in the framer.
    pub fn buffered(&self) -> usize {
        self.raw.len()
    }

    fn push_byte(&mut self, b: u8, out: &mut Vec<Frame>) {
        if let Some(skipped) = self.overflow.as_mut() {
            *skipped += 1;
            if b == b'\n' && self.telnet == Telnet::Data {
                out.push(Frame::TooLong { len: *skipped });
                self.overflow = None;
            }
            self.telnet = next_telnet_state(self.telnet, b);
            return;
        }
        self.raw.push(b);
        match self.telnet {
            Telnet::Data if b == IAC => self.telnet = Telnet::Iac,
            Telnet::Data if b == b'\n' => {
                self.finish_line(out);
                return;
            }
            Telnet::Data => self.text.push(b),
            Telnet::Iac => {
                self.telnet = Telnet::Data;
                match b {
                    IAC => self.text.push(IAC),
                    IP => self.signals.interrupt = true,
                    DM => self.signals.synch = true,
                    WILL..=DONT => self.telnet = Telnet::Option,
                    // Not a Telnet command at all: most likely an `IAC DM` whose DM
                    // went as TCP urgent data and was not read inline, so the byte is
                    // the command's first letter and must stay.
                    b if b < SE => self.text.push(b),
                    _ => {}
                }
            }
            Telnet::Option => self.telnet = Telnet::Data,
        }
        if self.raw.len() >= self.max_line {
            self.overflow = Some(self.raw.len());
            self.raw.clear();
            self.text.clear();
            self.signals = Signals::default();
        }
    }

    fn finish_line(&mut self, out: &mut Vec<Frame>) {
        if self.text.last() == Some(&b'\r') {
            self.text.pop();
        }
        out.push(Frame::Line(Line {
            raw: std::mem::take(&mut self.raw),
            text: std::mem::take(&mut self.text),
            signals: std::mem::take(&mut self.signals),
        }));
    }
}

fn next_telnet_state(state: Telnet, b: u8) -> Telnet {
    match state {
        Telnet::Data if b == IAC => Telnet::Iac,
        Telnet::Iac if (WILL..=DONT).contains(&b) => Telnet::Option,
        _ => Telnet::Data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut framer = LineFramer::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, &mut out);
        }
        out
    }

    fn line(f: &Frame) -> &Line {
        match f {
            Frame::Line(l) => l,
            other => panic!("expected a line, got {other:?}"),
        }
    }

    #[test]
    fn pipelined_lines_in_one_segment_are_separate_frames() {
        let out = frames(4096, &[b"PASV\r\nRETR a\r\nQU"]);
        assert_eq!(out.len(), 2);
        assert_eq!(line(&out[0]).text, b"PASV");
        assert_eq!(line(&out[1]).raw, b"RETR a\r\n");
    }

    #[test]
    fn telnet_interrupt_and_synch_before_abor_are_signals_not_text() {
        let out = frames(4096, &[&[IAC, IP, IAC, DM], b"ABOR\r\n"]);
        let l = line(&out[0]);
        assert_eq!(l.text, b"ABOR");
        assert_eq!(l.raw, [&[IAC, IP, IAC, DM][..], b"ABOR\r\n"].concat());
        assert_eq!(
            l.signals,
            Signals {
                interrupt: true,
                synch: true
            }
        );
    }

    #[test]
    fn an_iac_whose_data_mark_went_out_of_band_keeps_the_verb() {
        let out = frames(4096, &[&[IAC, IP, IAC], b"ABOR\r\n"]);
        let l = line(&out[0]);
        assert_eq!(l.text, b"ABOR");
        assert!(l.signals.interrupt);
    }

    #[test]
    fn doubled_iac_is_a_literal_ff_byte() {
        let out = frames(4096, &[b"STOR a", &[IAC, IAC], b"b\r\n"]);
        assert_eq!(
            line(&out[0]).text,
            [b'S', b'T', b'O', b'R', b' ', b'a', 0xff, b'b']
        );
    }

    #[test]
    fn option_negotiation_is_dropped_even_when_the_option_byte_is_lf() {
        let out = frames(4096, &[&[IAC, WILL, b'\n'], b"NOOP\r\n"]);
        assert_eq!(out.len(), 1);
        assert_eq!(line(&out[0]).text, b"NOOP");
    }

    #[test]
    fn over_long_line_is_reported_and_the_next_line_survives() {
        let long = vec![b'A'; 100];
        let out = frames(16, &[&long, b"\r\nNOOP\r\n"]);
        assert_eq!(out[0], Frame::TooLong { len: 102 });
        assert_eq!(line(&out[1]).text, b"NOOP");
    }

    #[test]
    fn bare_lf_terminates_a_line() {
        let out = frames(4096, &[b"NOOP\nPWD\r\n"]);
        assert_eq!(line(&out[0]).text, b"NOOP");
        assert_eq!(line(&out[1]).text, b"PWD");
    }

    proptest! {
        #[test]
        fn splitting_the_stream_anywhere_gives_the_same_frames(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
            max in 8usize..64,
        ) {
            let whole = frames(max, &[&data]);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for p in points {
                chunks.push(&data[start..p]);
                start = p;
            }
            chunks.push(&data[start..]);
            prop_assert_eq!(frames(max, &chunks), whole);
        }

        #[test]
        fn raw_bytes_of_lines_concatenate_back_to_the_input(
            data in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let out = frames(1 << 20, &[&data]);
            let joined: Vec<u8> = out.iter().flat_map(|f| line(f).raw.clone()).collect();
            prop_assert!(data.starts_with(&joined));
        }
    }
}

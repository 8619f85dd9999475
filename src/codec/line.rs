//! Control-stream framing: reassembles the TCP byte stream into lines, decodes the
//! few Telnet sequences a client may legitimately send (RFC 854, as RFC 959 requires of
//! the control channel) and bounds the line length.
//!
//! A line ends at every LF, whatever precedes it: vsftpd and pure-ftpd split there, so
//! a framer that let a Telnet sequence swallow the LF would see one command where the
//! server sees two. Where real servers read a line differently from each other (a bare
//! LF, which ProFTPD does not take as a line end; control bytes, which pure-ftpd turns
//! into `_`; any Telnet sequence, which only ProFTPD decodes), the line carries a
//! [`Defect`] and the session refuses it instead of guessing.
//!
//! It is a byte-at-a-time state machine so that splitting the stream anywhere (one byte
//! per segment, several lines in one segment) yields exactly the same frames; runs of
//! plain text skip the machine, which a property test holds to the same frames. It must
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

/// Telnet signals seen at the start of a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// `IAC IP` was seen.
    pub interrupt: bool,
    /// `IAC DM` (Synch) was seen.
    pub synch: bool,
}

impl Signals {
    pub fn any(self) -> bool {
        self.interrupt || self.synch
    }
}

/// Why real FTP servers would not all read a line the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// Ended by LF without CR: vsftpd and pure-ftpd end the line there, ProFTPD reads
    /// on to the next CRLF.
    BareLf,
    /// A control byte (NUL, a CR not before the LF, TAB, DEL…) in the text: pure-ftpd
    /// replaces it with `_`, vsftpd turns NUL into LF, ProFTPD keeps it.
    Control,
    /// A Telnet sequence other than the `IAC IP`/`IAC DM` signals at a line's start,
    /// or one cut by the line end: only ProFTPD decodes Telnet.
    Telnet,
}

impl Defect {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Defect::BareLf => "bare-lf",
            Defect::Control => "control-byte",
            Defect::Telnet => "telnet",
        }
    }
}

/// One complete control line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The exact bytes received, Telnet sequences and terminator included, so that a
    /// line forwarded unchanged is forwarded byte for byte.
    pub raw: Vec<u8>,
    /// The Telnet-decoded text without the line terminator: what the parsers see.
    pub text: Vec<u8>,
    /// Telnet signals that arrived at the start of this line.
    pub signals: Signals,
    /// Set when servers would read this line differently from each other.
    pub defect: Option<Defect>,
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
    defect: Option<Defect>,
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
            defect: None,
            telnet: Telnet::Data,
            overflow: None,
        }
    }

    /// Feeds received bytes; complete frames are appended to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Frame>) {
        while let Some((&first, rest)) = bytes.split_first() {
            let plain = self.plain_run(bytes);
            if plain == 0 {
                self.push_byte(first, out);
                bytes = rest;
                continue;
            }
            // What the byte-at-a-time machine does with each of these bytes (push
            // to both buffers, no state change), done in one go: a line was a
            // dozen reallocations before, and most of a transfer's framing cost.
            let (run, rest) = bytes.split_at(plain);
            if rest.first() == Some(&b'\n') {
                self.raw.reserve(plain + 1);
                self.text.reserve(plain);
            }
            self.raw.extend_from_slice(run);
            self.text.extend_from_slice(run);
            bytes = rest;
        }
    }

    /// How many leading bytes of `bytes` are plain text the state machine would only
    /// append: no LF, no `IAC`, not inside a Telnet sequence or an over-long line,
    /// and not the byte that reaches the length limit.
    fn plain_run(&self, bytes: &[u8]) -> usize {
        if self.overflow.is_some() || self.telnet != Telnet::Data {
            return 0;
        }
        let room = self.max_line.saturating_sub(self.raw.len() + 1);
        let special = memchr::memchr2(b'\n', IAC, bytes).unwrap_or(bytes.len());
        special.min(room)
    }

    /// Bytes of an unfinished line held in the framer.
    pub fn buffered(&self) -> usize {
        self.raw.len()
    }

    /// Takes the bytes of the unfinished line as they came, and starts afresh: for a
    /// stream that stops being lines (a control connection passed through blind).
    pub fn take_unfinished(&mut self) -> Vec<u8> {
        let raw = std::mem::take(&mut self.raw);
        *self = LineFramer::new(self.max_line);
        raw
    }

    fn push_byte(&mut self, b: u8, out: &mut Vec<Frame>) {
        if let Some(skipped) = self.overflow.as_mut() {
            *skipped += 1;
            if b == b'\n' {
                out.push(Frame::TooLong { len: *skipped });
                self.overflow = None;
            }
            return;
        }
        self.raw.push(b);
        if b == b'\n' {
            return self.finish_line(out);
        }
        match self.telnet {
            Telnet::Data if b == IAC => self.telnet = Telnet::Iac,
            Telnet::Data => self.text.push(b),
            Telnet::Iac => {
                self.telnet = Telnet::Data;
                self.on_telnet_command(b);
            }
            Telnet::Option => self.telnet = Telnet::Data,
        }
        if self.raw.len() >= self.max_line {
            self.overflow = Some(self.raw.len());
            self.raw.clear();
            self.text.clear();
            self.signals = Signals::default();
            self.defect = None;
            self.telnet = Telnet::Data;
        }
    }

    /// The byte after an `IAC`. Only the signals a client sends before `ABOR` are
    /// accepted, and only before the line's first character.
    fn on_telnet_command(&mut self, b: u8) {
        let at_start = self.text.is_empty();
        match b {
            IP if at_start => self.signals.interrupt = true,
            DM if at_start => self.signals.synch = true,
            // Not a Telnet command at all: an `IAC DM` whose DM went as TCP urgent
            // data and was not read inline, so the byte is the verb's first letter.
            b if b < SE && at_start && self.signals.interrupt => self.text.push(b),
            WILL..=DONT => {
                self.telnet = Telnet::Option;
                self.defect = Some(Defect::Telnet);
            }
            _ => {
                // Kept as text so that no byte a server may act on goes unseen.
                self.text.extend_from_slice(&[IAC, b]);
                self.defect = Some(Defect::Telnet);
            }
        }
    }

    fn finish_line(&mut self, out: &mut Vec<Frame>) {
        if self.telnet != Telnet::Data {
            // A Telnet sequence cut by the line end: ProFTPD reads on past this LF.
            self.defect = Some(Defect::Telnet);
        }
        self.telnet = Telnet::Data;
        let before_lf = self.raw.len().checked_sub(2).and_then(|i| self.raw.get(i));
        if before_lf == Some(&b'\r') && self.text.last() == Some(&b'\r') {
            self.text.pop();
        } else {
            self.defect.get_or_insert(Defect::BareLf);
        }
        if self.text.iter().any(|&c| c < 0x20 || c == 0x7f) {
            self.defect.get_or_insert(Defect::Control);
        }
        out.push(Frame::Line(Line {
            raw: std::mem::take(&mut self.raw),
            text: std::mem::take(&mut self.text),
            signals: std::mem::take(&mut self.signals),
            defect: self.defect.take(),
        }));
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

    fn defects(input: &[u8]) -> Vec<Option<Defect>> {
        frames(4096, &[input])
            .iter()
            .map(|f| line(f).defect)
            .collect()
    }

    #[test]
    fn pipelined_lines_in_one_segment_are_separate_frames() {
        let out = frames(4096, &[b"PASV\r\nRETR a\r\nQU"]);
        assert_eq!(out.len(), 2);
        assert_eq!(line(&out[0]).text, b"PASV");
        assert_eq!(line(&out[0]).defect, None);
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
        assert_eq!(l.defect, None);
    }

    #[test]
    fn an_iac_whose_data_mark_went_out_of_band_keeps_the_verb() {
        let out = frames(4096, &[&[IAC, IP, IAC], b"ABOR\r\n"]);
        let l = line(&out[0]);
        assert_eq!(l.text, b"ABOR");
        assert!(l.signals.interrupt);
        assert_eq!(l.defect, None);
    }

    #[test]
    fn an_lf_after_iac_ends_the_line_and_marks_it() {
        // The calibrated attack: vsftpd answers 500 to `NOOP\xff` and then runs PORT.
        let out = frames(4096, &[b"NOOP", &[IAC], b"\nPORT 127,0,0,2,4,1\r\n"]);
        assert_eq!(out.len(), 2);
        assert_eq!(line(&out[0]).defect, Some(Defect::Telnet));
        assert_eq!(line(&out[1]).text, b"PORT 127,0,0,2,4,1");
        assert_eq!(line(&out[1]).defect, None);
    }

    #[test]
    fn option_negotiation_whose_option_byte_is_lf_ends_the_line() {
        let out = frames(4096, &[&[IAC, WILL, b'\n'], b"NOOP\r\n"]);
        assert_eq!(out.len(), 2);
        assert_eq!(line(&out[0]).defect, Some(Defect::Telnet));
        assert_eq!(line(&out[1]).text, b"NOOP");
        assert_eq!(line(&out[1]).defect, None);
    }

    #[test]
    fn telnet_anywhere_but_the_abor_prefix_is_a_defect() {
        let telnet = Some(Defect::Telnet);
        assert_eq!(
            defects(&[b'S', b'T', b'O', b'R', IAC, IAC, b'\r', b'\n']),
            [telnet]
        );
        assert_eq!(defects(&[b'N', IAC, IP, b'\r', b'\n']), [telnet]);
        assert_eq!(defects(&[IAC, b'N', b'O', b'\r', b'\n']), [telnet]);
        assert_eq!(defects(&[IAC, 241, b'X', b'\r', b'\n']), [telnet]);
        assert_eq!(defects(&[IAC, DONT, 1, b'X', b'\r', b'\n']), [telnet]);
    }

    #[test]
    fn bare_lf_ends_a_line_and_marks_it() {
        let out = frames(4096, &[b"NOOP\nPWD\r\n"]);
        assert_eq!(line(&out[0]).text, b"NOOP");
        assert_eq!(line(&out[0]).defect, Some(Defect::BareLf));
        assert_eq!(line(&out[1]).text, b"PWD");
        assert_eq!(line(&out[1]).defect, None);
    }

    #[test]
    fn control_bytes_inside_a_line_are_a_defect() {
        let control = Some(Defect::Control);
        assert_eq!(defects(b"RETR a\0b\r\n"), [control]);
        assert_eq!(defects(b"NOOP\r\r\n"), [control]);
        assert_eq!(defects(b"RETR a\rb\r\n"), [control]);
        assert_eq!(defects(b"PASV\tx\r\n"), [control]);
        assert_eq!(defects(b"RETR \x7f\r\n"), [control]);
        assert_eq!(defects("RETR caf\u{e9}\r\n".as_bytes()), [None]);
    }

    #[test]
    fn over_long_line_is_reported_and_the_next_line_survives() {
        let long = vec![b'A'; 100];
        let out = frames(16, &[&long, b"\r\nNOOP\r\n"]);
        assert_eq!(out[0], Frame::TooLong { len: 102 });
        assert_eq!(line(&out[1]).text, b"NOOP");
    }

    #[test]
    fn an_over_long_line_ends_at_its_lf_even_inside_a_telnet_sequence() {
        let mut long = vec![b'A'; 100];
        long.extend_from_slice(&[IAC, b'\n']);
        let out = frames(16, &[&long, b"NOOP\r\n"]);
        assert_eq!(out[0], Frame::TooLong { len: 102 });
        assert_eq!(line(&out[1]).text, b"NOOP");
        assert_eq!(line(&out[1]).defect, None);
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
        fn runs_of_plain_text_frame_as_the_byte_machine_does(
            data in proptest::collection::vec(
                prop_oneof![
                    4 => b' '..=b'~',
                    1 => Just(b'\n'),
                    1 => Just(b'\r'),
                    1 => Just(IAC),
                    1 => prop::sample::select(vec![IP, DM, WILL, DONT, SE, 0, 0x7f]),
                ],
                0..600,
            ),
            max in 8usize..64,
        ) {
            let mut framer = LineFramer::new(max);
            let mut bytewise = Vec::new();
            for &b in &data {
                framer.push_byte(b, &mut bytewise);
            }
            prop_assert_eq!(frames(max, &[&data]), bytewise);
        }

        #[test]
        fn raw_bytes_of_lines_concatenate_back_to_the_input(
            data in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let out = frames(1 << 20, &[&data]);
            let joined: Vec<u8> = out.iter().flat_map(|f| line(f).raw.clone()).collect();
            prop_assert!(data.starts_with(&joined));
        }

        #[test]
        fn every_lf_ends_a_line(
            data in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let out = frames(1 << 20, &[&data]);
            let lfs = data.iter().filter(|b| **b == b'\n').count();
            prop_assert_eq!(out.len(), lfs);
            for f in &out {
                let raw = &line(f).raw;
                prop_assert_eq!(raw.iter().position(|b| *b == b'\n'), Some(raw.len() - 1));
            }
        }

        #[test]
        fn a_line_without_defect_is_plain_text_ended_by_crlf(
            data in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            for f in frames(1 << 20, &[&data]) {
                let l = line(&f);
                if l.defect.is_none() {
                    prop_assert!(l.raw.ends_with(b"\r\n"));
                    prop_assert!(l.text.iter().all(|&c| c >= 0x20 && c != 0x7f));
                    prop_assert!(!l.text.contains(&IAC));
                }
            }
        }
    }
}

//! Server replies (RFC 959 section 4.2): assembly of multi-line replies from lines, and
//! the payloads of the passive-mode replies `227`, `228` and `229`.
//!
//! A multi-line reply starts with `ddd-` and ends only at a line that starts with the
//! same code followed by a space; lines in between may start with digits and mean
//! nothing. Reply text is only ever parsed here for text that came from the *server*.

use std::net::{SocketAddr, SocketAddrV4};

use super::addr;
use super::line::Line;

/// A complete reply: one line, or all lines of a multi-line reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code, or `None` for a line that is not a reply at all.
    pub code: Option<u16>,
    /// Every received byte of the reply, so it can be forwarded unchanged.
    pub raw: Vec<u8>,
    /// The decoded text of the final line, code included.
    pub last: Vec<u8>,
}

impl Reply {
    /// `1yz`: more replies to the same command follow.
    pub fn is_preliminary(&self) -> bool {
        matches!(self.code, Some(100..=199))
    }

    /// Builds a single-line reply.
    pub fn encode(code: u16, text: &str) -> Vec<u8> {
        format!("{code} {text}\r\n").into_bytes()
    }

    /// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).`
    pub fn passive(addr: SocketAddrV4) -> Vec<u8> {
        let text = format!("Entering Passive Mode ({}).", addr::format_host_port(addr));
        Reply::encode(227, &text)
    }

    /// `229 Entering Extended Passive Mode (|||port|)`
    pub fn extended_passive(port: u16) -> Vec<u8> {
        use std::fmt::Write;
        // Written in one go: this is on the way of every passive transfer, and two
        // formatted strings were a tenth of what the engine did for one.
        let mut text = String::with_capacity(48);
        let _infallible = write!(text, "229 Entering Extended Passive Mode (|||{port}|)\r\n");
        text.into_bytes()
    }
}

/// How a line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineStart {
    /// `ddd ` or a bare `ddd`: a final line.
    Final(u16),
    /// `ddd-`: the first line of a multi-line reply.
    Continued(u16),
    Text,
}

fn line_start(text: &[u8]) -> LineStart {
    let code = match text {
        [a, b, c, ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return LineStart::Text,
    };
    match text.get(3) {
        None | Some(b' ') => LineStart::Final(code),
        Some(b'-') => LineStart::Continued(code),
        Some(_) => LineStart::Text,
    }
}

/// Collects lines into replies.
#[derive(Debug, Default)]
pub struct ReplyAssembler {
    open: Option<(u16, Vec<u8>)>,
}

impl ReplyAssembler {
    /// Feeds one line; returns a reply when this line completes one.
    pub fn push(&mut self, line: Line) -> Option<Reply> {
        let start = line_start(&line.text);
        if let Some((code, raw)) = self.open.as_mut() {
            raw.extend_from_slice(&line.raw);
            if start == LineStart::Final(*code) {
                let (code, raw) = self.open.take()?;
                return Some(Reply {
                    code: Some(code),
                    raw,
                    last: line.text,
                });
            }
            return None;
        }
        match start {
            LineStart::Final(code) => Some(Reply {
                code: Some(code),
                raw: line.raw,
                last: line.text,
            }),
            LineStart::Continued(code) => {
                self.open = Some((code, line.raw));
                None
            }
            LineStart::Text => Some(Reply {
                code: None,
                raw: line.raw,
                last: line.text,
            }),
        }
    }

    /// Bytes held for an unfinished multi-line reply.
    pub fn buffered(&self) -> usize {
        self.open.as_ref().map_or(0, |(_, raw)| raw.len())
    }
}

/// Why a passive-mode reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {code} reply")]
pub struct ReplySyntaxError {
    pub code: u16,
}

/// Scans the text after the code for the first `(` where `parser` succeeds, as
/// RFC 1123 4.1.2.6 advises (servers vary in the wording). Both callers' parsers
/// start with the parenthesis, so no other place could succeed; trying every byte
/// called the parser thirty times per `229`.
fn scan<T>(text: &[u8], parser: impl Fn(&[u8]) -> nom::IResult<&[u8], T>) -> Option<T> {
    let body = text.get(3..)?;
    (0..body.len())
        .filter(|&i| body.get(i) == Some(&b'('))
        .find_map(|i| parser(body.get(i..)?).ok().map(|(_, v)| v))
}

/// The address in the final line of a `227` reply.
pub fn parse_227(last: &[u8]) -> Result<SocketAddrV4, ReplySyntaxError> {
    let body = last.get(3..).unwrap_or_default();
    // Only start at the beginning of a number, so "1192,0,..." is not read from its
    // middle as "192,0,...".
    (0..body.len())
        .filter(|&i| {
            i.checked_sub(1)
                .and_then(|before| body.get(before))
                .is_none_or(|b| !b.is_ascii_digit())
        })
        .find_map(|i| addr::host_port(body.get(i..)?).ok().map(|(_, v)| v))
        .ok_or(ReplySyntaxError { code: 227 })
}

fn parenthesised_long_host_port(i: &[u8]) -> nom::IResult<&[u8], SocketAddr> {
    let (rest, _) = nom::character::complete::char('(')(i)?;
    addr::long_host_port(rest)
}

/// The port in the final line of a `229` reply.
pub fn parse_229(last: &[u8]) -> Result<u16, ReplySyntaxError> {
    scan(last, addr::epsv_port).ok_or(ReplySyntaxError { code: 229 })
}

/// The address in the final line of a `228` reply.
pub fn parse_228(last: &[u8]) -> Result<SocketAddr, ReplySyntaxError> {
    scan(last, parenthesised_long_host_port).ok_or(ReplySyntaxError { code: 228 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::line::{Frame, LineFramer};
    use proptest::prelude::*;

    fn replies(bytes: &[u8]) -> Vec<Reply> {
        let mut framer = LineFramer::new(4096);
        let mut frames = Vec::new();
        framer.push(bytes, &mut frames);
        let mut asm = ReplyAssembler::default();
        frames
            .into_iter()
            .filter_map(|f| match f {
                Frame::Line(l) => asm.push(l),
                Frame::TooLong { .. } => None,
            })
            .collect()
    }

    #[test]
    fn single_line_reply() {
        let r = replies(b"220 ready\r\n");
        assert_eq!(r[0].code, Some(220));
        assert_eq!(r[0].raw, b"220 ready\r\n");
    }

    #[test]
    fn multi_line_reply_with_digit_lines_inside_ends_at_same_code_and_space() {
        let text = b"211-Status\r\n227 Entering Passive Mode (1,2,3,4,5,6)\r\n211-more\r\n 200 x\r\n211 End\r\n";
        let r = replies(text);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, Some(211));
        assert_eq!(r[0].raw, text);
        assert_eq!(r[0].last, b"211 End");
    }

    #[test]
    fn a_line_that_is_no_reply_is_reported_with_no_code() {
        assert_eq!(replies(b"hello\r\n")[0].code, None);
    }

    #[test]
    fn parse_227_with_and_without_parentheses() {
        let want = "192.0.2.7:1025".parse().unwrap();
        assert_eq!(
            parse_227(b"227 Entering Passive Mode (192,0,2,7,4,1)."),
            Ok(want)
        );
        assert_eq!(
            parse_227(b"227 Entering Passive Mode 192,0,2,7,4,1"),
            Ok(want)
        );
        assert_eq!(parse_227(b"227 =192,0,2,7,4,1"), Ok(want));
        assert!(parse_227(b"227 Entering Passive Mode (192,0,2,7,256,1)").is_err());
        assert!(parse_227(b"227 nothing").is_err());
    }

    #[test]
    fn parse_227_does_not_start_inside_a_number() {
        assert!(parse_227(b"227 (1192,0,2,7,4,1)").is_err());
    }

    #[test]
    fn parse_229_and_228() {
        assert_eq!(
            parse_229(b"229 Entering Extended Passive Mode (|||6446|)"),
            Ok(6446)
        );
        assert!(parse_229(b"229 Entering Extended Passive Mode").is_err());
        assert_eq!(
            parse_228(b"228 Entering Long Passive Mode (4,4,127,0,0,1,2,4,1)"),
            Ok("127.0.0.1:1025".parse().unwrap())
        );
    }

    #[test]
    fn built_replies_parse_back() {
        let a: SocketAddrV4 = "198.51.100.1:40001".parse().unwrap();
        let r = replies(&Reply::passive(a));
        assert_eq!(parse_227(&r[0].last), Ok(a));
        let r = replies(&Reply::extended_passive(40001));
        assert_eq!(parse_229(&r[0].last), Ok(40001));
        assert_eq!(
            Reply::extended_passive(65535),
            b"229 Entering Extended Passive Mode (|||65535|)\r\n"
        );
    }

    /// The scan as it was: the parser tried at every byte.
    fn scan_everywhere<T>(
        text: &[u8],
        parser: impl Fn(&[u8]) -> nom::IResult<&[u8], T>,
    ) -> Option<T> {
        let body = text.get(3..)?;
        (0..body.len()).find_map(|i| parser(body.get(i..)?).ok().map(|(_, v)| v))
    }

    proptest! {
        #[test]
        fn reply_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = replies(&data);
            let _ = parse_227(&data);
            let _ = parse_228(&data);
            let _ = parse_229(&data);
        }

        #[test]
        fn scanning_only_at_parentheses_finds_what_every_position_would(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("(".to_string()),
                    Just(")".to_string()),
                    Just("|||".to_string()),
                    Just("!".to_string()),
                    Just(",".to_string()),
                    "[0-9]{1,6}",
                    "[ -~]{0,4}",
                ],
                0..12,
            )
        ) {
            let text = format!("229 {}", parts.concat());
            prop_assert_eq!(
                parse_229(text.as_bytes()).ok(),
                scan_everywhere(text.as_bytes(), addr::epsv_port)
            );
            prop_assert_eq!(
                parse_228(text.as_bytes()).ok(),
                scan_everywhere(text.as_bytes(), parenthesised_long_host_port)
            );
        }

        #[test]
        fn reply_raw_bytes_are_kept_exactly(code in 100u16..600, text in "[ -~]{0,40}") {
            let line = format!("{code} {text}\r\n");
            let r = replies(line.as_bytes());
            prop_assert_eq!(&r[0].raw, line.as_bytes());
        }
    }
}

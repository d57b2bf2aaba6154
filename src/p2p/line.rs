//! Sans-IO framing of the P2P protocol: `\n`-terminated message lines, and
//! after `DATA n` exactly n raw bytes with no terminator, after which lines
//! resume.
//!
//! Like git-annex's `getProtocolLine`, one `\r` before the `\n` is dropped,
//! so peers that write `\r\n` are understood; we always write plain `\n`.
//! git-annex gives up on lines of more than 32768 characters; our limit is in
//! bytes and configurable.

use bytes::{BufMut, Bytes, BytesMut};

use crate::p2p::message::{Message, ParseError};

pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
pub const DEFAULT_MAX_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(Message),
    /// Part of the payload announced by the last `DATA` message; the chunks
    /// add up to exactly its length. `DATA 0` yields none.
    Data(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fatal: the stream cannot be resynchronised; close the connection.
    #[error("protocol line longer than {max} bytes")]
    LineTooLong { max: usize },
    /// The line was consumed and decoding may continue; git-annex answers
    /// `ERROR unknown command` and carries on. (If a `DATA` line is refused,
    /// its payload will follow as garbage lines, so a peer expecting DATA
    /// should close instead.)
    #[error(transparent)]
    Parse(#[from] ParseError),
}

impl DecodeError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, DecodeError::LineTooLong { .. })
    }
}

/// Decodes frames from a byte buffer that the caller fills, either one it
/// owns (`decode`, codec style) or the decoder's own (`feed` and
/// `next_frame`); use one or the other for a given stream.
///
/// Payload bytes are split off the buffer without copying and never
/// gathered, so a `DATA` length costs no memory until its bytes arrive.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max_line: usize,
    max_chunk: usize,
    data_remaining: u64,
    /// How much of the pending partial line has been searched for `\n`.
    scanned: usize,
    buf: BytesMut,
}

impl Default for LineDecoder {
    fn default() -> Self {
        LineDecoder::new()
    }
}

impl LineDecoder {
    pub fn new() -> Self {
        LineDecoder::with_limits(DEFAULT_MAX_LINE, DEFAULT_MAX_CHUNK)
    }

    /// `max_line` bounds a line's length without its `\n`; `max_chunk` the
    /// size of each `Frame::Data`.
    pub fn with_limits(max_line: usize, max_chunk: usize) -> Self {
        assert!(max_chunk > 0, "max_chunk must be positive");
        LineDecoder { max_line, max_chunk, data_remaining: 0, scanned: 0, buf: BytesMut::new() }
    }

    /// Payload bytes still to come from the last `DATA` message.
    pub fn data_remaining(&self) -> u64 {
        self.data_remaining
    }

    /// The next frame from `buf`, consuming its bytes, or `None` if more
    /// input is needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if self.data_remaining > 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            let n = usize::try_from(self.data_remaining)
                .unwrap_or(usize::MAX)
                .min(buf.len())
                .min(self.max_chunk);
            self.data_remaining -= n as u64;
            return Ok(Some(Frame::Data(buf.split_to(n).freeze())));
        }
        // Search no further than a line may be long, so junk without a
        // newline costs bounded work.
        let limit = buf.len().min(self.max_line.saturating_add(1));
        let start = self.scanned.min(limit);
        let Some(pos) = buf[start..limit].iter().position(|&b| b == b'\n') else {
            if buf.len() > self.max_line {
                return Err(DecodeError::LineTooLong { max: self.max_line });
            }
            self.scanned = limit;
            return Ok(None);
        };
        self.scanned = 0;
        let line = buf.split_to(start + pos + 1);
        let text = &line[..start + pos];
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let msg = Message::parse_bytes(text)?;
        if let Message::Data(n) = msg {
            self.data_remaining = n;
        }
        Ok(Some(Frame::Message(msg)))
    }

    /// Append input to the decoder's own buffer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next frame from the bytes given to `feed`.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let mut buf = std::mem::take(&mut self.buf);
        let frame = self.decode(&mut buf);
        self.buf = buf;
        frame
    }
}

/// Append `msg` as one line.
pub fn encode_message(msg: &Message, dst: &mut BytesMut) {
    dst.extend_from_slice(msg.serialize().as_bytes());
    dst.put_u8(b'\n');
}

/// Append `DATA <len>` and the payload. For content not in memory, send
/// `Message::Data(len)` and then exactly `len` bytes; there is no way to
/// abort a payload short of closing the connection.
pub fn encode_data(payload: &[u8], dst: &mut BytesMut) {
    encode_message(&Message::Data(payload.len() as u64), dst);
    dst.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::message::AssociatedFile;
    use crate::p2p::message::tests::{HELLO, arb_message};
    use proptest::prelude::*;

    fn decode_all(dec: &mut LineDecoder) -> Vec<Result<Frame, DecodeError>> {
        std::iter::from_fn(|| dec.next_frame().transpose()).collect()
    }

    fn frames(input: &[u8]) -> Vec<Result<Frame, DecodeError>> {
        let mut dec = LineDecoder::new();
        dec.feed(input);
        decode_all(&mut dec)
    }

    fn msg(m: Message) -> Result<Frame, DecodeError> {
        Ok(Frame::Message(m))
    }

    fn data(b: &'static [u8]) -> Result<Frame, DecodeError> {
        Ok(Frame::Data(Bytes::from_static(b)))
    }

    #[test]
    fn data_then_lines_resume() {
        let got = frames(b"DATA 5\nhelloVALID\nSUCCESS\n");
        assert_eq!(
            got,
            [msg(Message::Data(5)), data(b"hello"), msg(Message::Valid), msg(Message::Success)]
        );
    }

    #[test]
    fn payload_may_contain_newlines_and_look_like_messages() {
        let got = frames(b"DATA 8\nSUCCESS\nINVALID\n");
        assert_eq!(got, [msg(Message::Data(8)), data(b"SUCCESS\n"), msg(Message::Invalid)]);
    }

    #[test]
    fn empty_data_then_invalid() {
        let got = frames(b"DATA 0\nINVALID\n");
        assert_eq!(got, [msg(Message::Data(0)), msg(Message::Invalid)]);
    }

    #[test]
    fn payload_is_chunked() {
        let mut dec = LineDecoder::with_limits(DEFAULT_MAX_LINE, 3);
        dec.feed(b"DATA 10\n0123456789VALID\n");
        let got = decode_all(&mut dec);
        assert_eq!(
            got,
            [
                msg(Message::Data(10)),
                data(b"012"),
                data(b"345"),
                data(b"678"),
                data(b"9"),
                msg(Message::Valid)
            ]
        );
    }

    #[test]
    fn huge_data_length_streams_without_buffering() {
        let mut dec = LineDecoder::new();
        dec.feed(b"DATA 18446744073709551615\n0123456789");
        assert_eq!(decode_all(&mut dec), [msg(Message::Data(u64::MAX)), data(b"0123456789")]);
        assert_eq!(dec.data_remaining(), u64::MAX - 10);
        dec.feed(b"VALID\n");
        assert_eq!(dec.next_frame(), Ok(Some(Frame::Data(Bytes::from_static(b"VALID\n")))));
    }

    #[test]
    fn oversized_data_length_is_refused() {
        let got = frames(b"DATA 99999999999999999999999\n");
        assert!(
            matches!(&got[..], [Err(DecodeError::Parse(ParseError::BadNumber { .. }))]),
            "{got:?}"
        );
    }

    #[test]
    fn crlf_is_accepted() {
        assert_eq!(
            frames(b"SUCCESS\r\nDATA 2\r\nhi"),
            [msg(Message::Success), msg(Message::Data(2)), data(b"hi")]
        );
        // Only one '\r' is dropped, as git-annex does.
        assert_eq!(frames(b"ERROR x\r\r\n"), [msg(Message::Error("x\r".into()))]);
    }

    #[test]
    fn bad_lines_are_skipped() {
        let got = frames(b"FROB x\n\nSUCCESS\n");
        assert_eq!(
            got,
            [
                Err(DecodeError::Parse(ParseError::UnknownCommand("FROB".into()))),
                Err(DecodeError::Parse(ParseError::UnknownCommand(String::new()))),
                msg(Message::Success)
            ]
        );
        assert!(!got[0].as_ref().unwrap_err().is_fatal());
    }

    #[test]
    fn git_annex_byte_escaped_file_names_are_accepted() {
        let line = [b"GET 0 voil\xc3% ".as_slice(), HELLO.as_bytes(), b"\n"].concat();
        let [Ok(Frame::Message(Message::Get { file, .. }))] = &frames(&line)[..] else { panic!() };
        assert_eq!(file, &AssociatedFile(Some("voil\u{fffd}_".into())));
    }

    #[test]
    fn line_length_limit() {
        let mut dec = LineDecoder::with_limits(8, DEFAULT_MAX_CHUNK);
        dec.feed(b"ERROR ab\n");
        assert_eq!(dec.next_frame(), Ok(Some(Frame::Message(Message::Error("ab".into())))));
        dec.feed(b"ERROR ab");
        assert_eq!(dec.next_frame(), Ok(None));
        dec.feed(b"c");
        let err = dec.next_frame().unwrap_err();
        assert_eq!(err, DecodeError::LineTooLong { max: 8 });
        assert!(err.is_fatal());
        assert_eq!(err.to_string(), "protocol line longer than 8 bytes");

        let mut dec = LineDecoder::with_limits(8, DEFAULT_MAX_CHUNK);
        dec.feed(b"ERROR abc\n");
        assert_eq!(dec.next_frame(), Err(DecodeError::LineTooLong { max: 8 }));
    }

    #[test]
    fn long_partial_line_is_scanned_once() {
        let mut dec = LineDecoder::new();
        for _ in 0..1000 {
            dec.feed(b"E");
            assert_eq!(dec.next_frame(), Ok(None));
        }
        assert_eq!(dec.scanned, 1000);
        dec.feed(b"\n");
        assert!(matches!(dec.next_frame(), Err(DecodeError::Parse(ParseError::UnknownCommand(_)))));
        assert_eq!(dec.scanned, 0);
    }

    #[test]
    fn codec_style_with_external_buffer() {
        let mut buf = BytesMut::new();
        encode_message(&Message::PutFrom(3), &mut buf);
        encode_data(b"abc", &mut buf);
        assert_eq!(&buf[..], b"PUT-FROM 3\nDATA 3\nabc");
        let mut dec = LineDecoder::new();
        assert_eq!(dec.decode(&mut buf), Ok(Some(Frame::Message(Message::PutFrom(3)))));
        assert_eq!(dec.decode(&mut buf), Ok(Some(Frame::Message(Message::Data(3)))));
        assert_eq!(dec.decode(&mut buf), Ok(Some(Frame::Data(Bytes::from_static(b"abc")))));
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Item {
        Msg(Message),
        Payload(Vec<u8>),
    }

    fn arb_stream() -> impl Strategy<Value = Vec<Item>> {
        let item = prop_oneof![
            arb_message()
                .prop_filter("DATA comes with its payload", |m| !matches!(m, Message::Data(_)))
                .prop_map(Item::Msg),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Item::Payload),
        ];
        proptest::collection::vec(item, 0..12)
    }

    /// Collect frames, merging each payload's chunks.
    fn normalize(frames: Vec<Result<Frame, DecodeError>>) -> Vec<Item> {
        let mut out = Vec::new();
        for f in frames {
            match f.expect("valid stream") {
                Frame::Message(Message::Data(_)) => out.push(Item::Payload(Vec::new())),
                Frame::Message(m) => out.push(Item::Msg(m)),
                Frame::Data(b) => match out.last_mut() {
                    Some(Item::Payload(p)) => p.extend_from_slice(&b),
                    _ => panic!("data without DATA"),
                },
            }
        }
        out
    }

    proptest! {
        #[test]
        fn any_split_decodes_the_same(items in arb_stream(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8), chunk in 1..50usize) {
            let mut wire = BytesMut::new();
            for item in &items {
                match item {
                    Item::Msg(m) => encode_message(m, &mut wire),
                    Item::Payload(p) => encode_data(p, &mut wire),
                }
            }

            let mut whole = LineDecoder::with_limits(DEFAULT_MAX_LINE, chunk);
            whole.feed(&wire);
            let all_at_once = normalize(decode_all(&mut whole));
            prop_assert_eq!(&all_at_once, &items);

            let mut dec = LineDecoder::with_limits(DEFAULT_MAX_LINE, chunk);
            let mut got = Vec::new();
            for b in wire.iter() {
                dec.feed(&[*b]);
                got.extend(decode_all(&mut dec));
            }
            prop_assert_eq!(&normalize(got), &items);

            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.extend([0, wire.len()]);
            points.sort();
            let mut dec = LineDecoder::with_limits(DEFAULT_MAX_LINE, chunk);
            let mut got = Vec::new();
            for w in points.windows(2) {
                dec.feed(&wire[w[0]..w[1]]);
                got.extend(decode_all(&mut dec));
            }
            prop_assert_eq!(&normalize(got), &items);
        }
    }
}

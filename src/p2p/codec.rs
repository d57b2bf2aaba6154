//! The line codec (`line`) as a `tokio_util` `Decoder` and `Encoder`, so a
//! socket can be framed with `Framed`: the gateway's connections and the
//! client's AUTH exchange share it. Still free of I/O: it only moves bytes
//! between buffers.
//!
//! A gateway's codec may also see the connection's optional `ANNEXMESH`
//! line, which is not a protocol message; it is recognised only as the
//! first line.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::p2p::line::{DecodeError, Frame, LineDecoder, encode_message};
use crate::p2p::message::{Message, ParseError};
use crate::p2p::preamble::{MAX_PREAMBLE, Preamble, PreambleError};

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Message(Message),
    /// Part of the payload announced by the last `DATA`, as raw bytes.
    Data(Bytes),
    /// A line that does not parse. It was consumed and decoding may go on
    /// (git-annex answers `ERROR` and carries on).
    Unparsable(ParseError),
    /// The connection's first line was an `ANNEXMESH` line.
    Preamble(Result<Preamble, PreambleError>),
}

/// Why decoding stopped for good: the stream cannot be followed any more.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("protocol line longer than {max} bytes")]
    LineTooLong { max: usize },
    /// An `ANNEXMESH` line too long, or cut short by the end of input.
    #[error("bad ANNEXMESH line")]
    BadPreamble,
    /// The input ended inside a line or a `DATA` payload.
    #[error("connection closed mid-message")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Protocol lines in and out, and `DATA` payloads in.
#[derive(Debug, Clone)]
pub struct LineCodec {
    dec: LineDecoder,
    /// Whether the next line may still be an `ANNEXMESH` line.
    preamble: bool,
}

impl LineCodec {
    /// `max_line` bounds a line without its newline; `max_chunk` the size of
    /// each `Inbound::Data`.
    pub fn new(max_line: usize, max_chunk: usize) -> LineCodec {
        LineCodec { dec: LineDecoder::with_limits(max_line, max_chunk), preamble: false }
    }

    /// The same codec, recognising an `ANNEXMESH` line as the first line.
    pub fn accepting_preamble(mut self) -> LineCodec {
        self.preamble = true;
        self
    }

    /// Payload bytes still to come from the last `DATA` message.
    pub fn data_remaining(&self) -> u64 {
        self.dec.data_remaining()
    }

    /// The preamble at the start of `buf`: `Ok(None)` when more input is
    /// needed to tell, and clears `self.preamble` once the first line is
    /// known not to be one.
    fn preamble(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        let prefix_len = crate::p2p::preamble::ANNEXMESH.len() + 1;
        if buf.len() < prefix_len && !buf.contains(&b'\n') {
            return Ok(None);
        }
        if !Preamble::starts(buf) {
            self.preamble = false;
            return Ok(None);
        }
        let window = &buf[..buf.len().min(MAX_PREAMBLE + 1)];
        let Some(end) = window.iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_PREAMBLE { Err(CodecError::BadPreamble) } else { Ok(None) };
        };
        self.preamble = false;
        let line = buf.split_to(end + 1);
        let text = String::from_utf8_lossy(&line[..end]);
        Ok(Some(Inbound::Preamble(text.trim_end_matches('\r').parse())))
    }
}

impl Decoder for LineCodec {
    type Item = Inbound;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        if self.preamble {
            let found = self.preamble(buf)?;
            if found.is_some() || self.preamble {
                return Ok(found);
            }
        }
        match self.dec.decode(buf) {
            Ok(None) => Ok(None),
            Ok(Some(Frame::Message(m))) => Ok(Some(Inbound::Message(m))),
            Ok(Some(Frame::Data(b))) => Ok(Some(Inbound::Data(b))),
            Err(DecodeError::Parse(e)) => Ok(Some(Inbound::Unparsable(e))),
            Err(DecodeError::LineTooLong { max }) => Err(CodecError::LineTooLong { max }),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        if self.preamble && Preamble::starts(buf) {
            return Err(CodecError::BadPreamble);
        }
        if buf.is_empty() && self.dec.data_remaining() == 0 {
            Ok(None)
        } else {
            Err(CodecError::Truncated)
        }
    }
}

impl Encoder<&Message> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_message(msg, dst);
        Ok(())
    }
}

impl Encoder<&Preamble> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, preamble: &Preamble, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(format!("{preamble}\n").as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Mode;

    fn codec() -> LineCodec {
        LineCodec::new(64, 4)
    }

    /// Everything `input` decodes to when it arrives `step` bytes at a time,
    /// then ends.
    fn decode_in_steps(
        mut codec: LineCodec,
        input: &[u8],
        step: usize,
    ) -> Result<Vec<Inbound>, CodecError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(item) = codec.decode(&mut buf)? {
                out.push(item);
            }
        }
        while let Some(item) = codec.decode_eof(&mut buf)? {
            out.push(item);
        }
        Ok(out)
    }

    fn data(b: &'static [u8]) -> Inbound {
        Inbound::Data(Bytes::from_static(b))
    }

    #[test]
    fn lines_split_anywhere_decode_the_same() {
        let input = b"VERSION 1\nDATA 6\nab\ncdeVALID\r\nFROB\nSUCCESS\n";
        let whole = decode_in_steps(codec(), input, input.len()).unwrap();
        for step in 1..input.len() {
            let got = decode_in_steps(codec(), input, step).unwrap();
            let merged: Vec<Inbound> = got.into_iter().fold(Vec::new(), |mut acc, item| {
                match (acc.last_mut(), item) {
                    (Some(Inbound::Data(prev)), Inbound::Data(b)) => {
                        *prev = [&prev[..], &b[..]].concat().into();
                    }
                    (_, item) => acc.push(item),
                }
                acc
            });
            let whole_merged = [
                Inbound::Message(Message::Version(1)),
                Inbound::Message(Message::Data(6)),
                data(b"ab\ncde"),
                Inbound::Message(Message::Valid),
                Inbound::Unparsable(ParseError::UnknownCommand("FROB".into())),
                Inbound::Message(Message::Success),
            ];
            assert_eq!(merged, whole_merged, "step {step}");
        }
        // At once, the payload comes in chunks of at most max_chunk.
        assert_eq!(&whole[2..4], [data(b"ab\nc"), data(b"de")]);
    }

    #[test]
    fn an_over_long_line_is_fatal() {
        let long = [vec![b'E'; 65], b"\n".to_vec()].concat();
        let e = decode_in_steps(codec(), &long, 7).unwrap_err();
        assert!(matches!(e, CodecError::LineTooLong { max: 64 }), "{e:?}");
        assert_eq!(e.to_string(), "protocol line longer than 64 bytes");
    }

    #[test]
    fn end_of_input_mid_message_is_truncation() {
        assert!(matches!(decode_in_steps(codec(), b"SUCC", 2), Err(CodecError::Truncated)));
        assert!(matches!(decode_in_steps(codec(), b"DATA 5\nab", 3), Err(CodecError::Truncated)));
        assert_eq!(decode_in_steps(codec(), b"", 1).unwrap(), []);
        assert_eq!(
            decode_in_steps(codec(), b"DATA 2\nhi", 1).unwrap(),
            [Inbound::Message(Message::Data(2)), data(b"h"), data(b"i")]
        );
    }

    #[test]
    fn a_preamble_only_as_the_first_line() {
        let input = b"ANNEXMESH repo=mesh mode=readonly\r\nANNEXMESH repo=x\n";
        for step in [1, 5, input.len()] {
            let got = decode_in_steps(codec().accepting_preamble(), input, step).unwrap();
            let want = Preamble { repo: "mesh".into(), mode: Some(Mode::ReadOnly) };
            assert_eq!(got[0], Inbound::Preamble(Ok(want)), "step {step}");
            assert_eq!(got[1], Inbound::Unparsable(ParseError::UnknownCommand("ANNEXMESH".into())));
            assert_eq!(got.len(), 2);
        }
        // Without one, the first line is an ordinary message.
        let got = decode_in_steps(codec().accepting_preamble(), b"VERSION 2\n", 1).unwrap();
        assert_eq!(got, [Inbound::Message(Message::Version(2))]);
        let got = decode_in_steps(codec().accepting_preamble(), b"ANNEXMESHX\n", 3).unwrap();
        assert_eq!(got, [Inbound::Unparsable(ParseError::UnknownCommand("ANNEXMESHX".into()))]);
        // A client's codec does not look for one.
        let got = decode_in_steps(codec(), b"ANNEXMESH repo=x\n", 1).unwrap();
        assert_eq!(got, [Inbound::Unparsable(ParseError::UnknownCommand("ANNEXMESH".into()))]);
    }

    #[test]
    fn bad_preambles() {
        let got = decode_in_steps(codec().accepting_preamble(), b"ANNEXMESH a=b\nVALID\n", 2);
        let got = got.unwrap();
        assert_eq!(got[0], Inbound::Preamble(Err(PreambleError::UnknownSetting("a=b".into()))));
        assert_eq!(got[1], Inbound::Message(Message::Valid));
        let long = [b"ANNEXMESH repo=".as_slice(), &[b'x'; MAX_PREAMBLE]].concat();
        let e = decode_in_steps(codec().accepting_preamble(), &long, 100).unwrap_err();
        assert!(matches!(e, CodecError::BadPreamble), "{e:?}");
        let e = decode_in_steps(codec().accepting_preamble(), b"ANNEXMESH repo=x", 4);
        assert!(matches!(e, Err(CodecError::BadPreamble)), "{e:?}");
    }

    #[test]
    fn encodes_lines() {
        let mut out = BytesMut::new();
        let mut c = codec();
        c.encode(&Preamble { repo: "n1".into(), mode: None }, &mut out).unwrap();
        c.encode(&Message::PutFrom(3), &mut out).unwrap();
        assert_eq!(&out[..], b"ANNEXMESH repo=n1\nPUT-FROM 3\n");
    }
}

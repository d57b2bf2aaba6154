//! Fuzz the P2P line codec (`annexmesh::p2p::line`).
//!
//! Input layout: four header bytes choose the decoder's limits and how the
//! stream is cut into pieces; the rest is the byte stream from the peer.
//!
//! The stream is decoded three ways — in one piece through `decode`, in
//! pieces through `decode` on a buffer we own, and in differently cut pieces
//! through `feed`/`next_frame` — and each run is checked against a plain
//! reference decoder written here. See docs/fuzzing.md for the invariants.

#![no_main]

use annexmesh::p2p::line::{DEFAULT_MAX_CHUNK, DEFAULT_MAX_LINE, DecodeError, Frame, LineDecoder, encode_message};
use annexmesh::p2p::message::Message;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

/// What one decoding of a stream produced, with each payload's chunks merged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Msg(Message),
    Payload(Vec<u8>),
    Err(DecodeError),
}

fn push_frame(events: &mut Vec<Event>, frame: Result<Frame, DecodeError>) {
    match frame {
        Ok(Frame::Message(m)) => events.push(Event::Msg(m)),
        Ok(Frame::Data(b)) => match events.last_mut() {
            Some(Event::Payload(p)) => p.extend_from_slice(&b),
            _ => events.push(Event::Payload(b.to_vec())),
        },
        Err(e) => events.push(Event::Err(e)),
    }
}

/// Reference decoder: the framing rules stated plainly, on the whole input.
fn reference(input: &[u8], max_line: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut rest = input;
    loop {
        let Some(pos) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > max_line {
                events.push(Event::Err(DecodeError::LineTooLong { max: max_line }));
            }
            return events;
        };
        if pos > max_line {
            events.push(Event::Err(DecodeError::LineTooLong { max: max_line }));
            return events;
        }
        let line = &rest[..pos];
        rest = &rest[pos + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match Message::parse_bytes(line) {
            Ok(Message::Data(n)) => {
                events.push(Event::Msg(Message::Data(n)));
                let take = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
                if take > 0 {
                    events.push(Event::Payload(rest[..take].to_vec()));
                }
                rest = &rest[take..];
            }
            Ok(m) => events.push(Event::Msg(m)),
            Err(e) => events.push(Event::Err(DecodeError::Parse(e))),
        }
    }
}

/// What `m` must come back as after `serialize` and `parse`: identical,
/// except that ERROR text's `\r` and `\n` become spaces, which `serialize`
/// documents (a line cannot carry a `\n`, nor end in a `\r`).
fn after_round_trip(m: &Message) -> Message {
    match m {
        Message::Error(text) => Message::Error(text.replace(['\n', '\r'], " ")),
        m => m.clone(),
    }
}

fn check_round_trip(m: &Message) {
    let line = m.serialize();
    assert!(!line.contains(['\n', '\r']), "{m:?} serialized to {line:?}");
    let expected = after_round_trip(m);
    assert_eq!(Message::parse(&line).as_ref(), Ok(&expected), "{m:?} via {line:?}");
    assert_eq!(expected.serialize(), line, "serialize is not stable for {m:?}");
    // And over the wire, through the encoder and a fresh decoder.
    let mut wire = BytesMut::new();
    encode_message(m, &mut wire);
    let mut dec = LineDecoder::with_limits(usize::MAX, DEFAULT_MAX_CHUNK);
    assert_eq!(dec.decode(&mut wire), Ok(Some(Frame::Message(expected))));
    assert!(wire.is_empty());
}

/// Tracks one decoding's frames and checks the per-frame invariants.
struct Checker {
    max_chunk: usize,
    /// Payload bytes still owed by the last DATA, as the frames tell it.
    owed: u64,
    events: Vec<Event>,
}

impl Checker {
    fn new(max_chunk: usize) -> Self {
        Checker { max_chunk, owed: 0, events: Vec::new() }
    }

    /// Check one frame; returns whether decoding may go on.
    fn frame(&mut self, frame: &Result<Frame, DecodeError>, dec: &LineDecoder) -> bool {
        match frame {
            Ok(Frame::Data(b)) => {
                assert!(!b.is_empty(), "empty Data frame");
                assert!(b.len() <= self.max_chunk, "Data frame of {} > max_chunk {}", b.len(), self.max_chunk);
                assert!(b.len() as u64 <= self.owed, "Data frame of {} bytes, only {} announced", b.len(), self.owed);
                self.owed -= b.len() as u64;
            }
            Ok(Frame::Message(m)) => {
                assert_eq!(self.owed, 0, "line decoded with {} payload bytes still owed", self.owed);
                if let Message::Data(n) = m {
                    self.owed = *n;
                }
                check_round_trip(m);
            }
            Err(e) => assert_eq!(self.owed, 0, "error {e:?} inside a payload"),
        }
        assert_eq!(dec.data_remaining(), self.owed, "data_remaining disagrees");
        push_frame(&mut self.events, frame.clone());
        !matches!(frame, Err(e) if e.is_fatal())
    }
}

/// Decode through `decode` on a buffer we own, `pieces` at a time, checking
/// what each call consumes.
fn run_decode(input: &[u8], pieces: &[usize], max_line: usize, max_chunk: usize) -> Vec<Event> {
    let mut dec = LineDecoder::with_limits(max_line, max_chunk);
    let mut check = Checker::new(max_chunk);
    let mut buf = BytesMut::new();
    let mut at = 0;
    for &len in pieces {
        let piece = &input[at..at + len];
        at += len;
        buf.extend_from_slice(piece);
        loop {
            let before = Bytes::copy_from_slice(&buf);
            let frame = dec.decode(&mut buf);
            let consumed = before.len() - buf.len();
            assert_eq!(&before[consumed..], &buf[..], "decode did not consume a prefix");
            match &frame {
                Ok(None) => {
                    assert_eq!(consumed, 0);
                    // Bounded memory: without a newline nothing beyond a
                    // line's worth may be held; more must be LineTooLong.
                    if dec.data_remaining() == 0 {
                        assert!(buf.len() <= max_line, "holding {} bytes with max_line {max_line}", buf.len());
                        assert!(!buf.contains(&b'\n'), "a complete line was left undecoded");
                    } else {
                        assert!(buf.is_empty(), "payload bytes left undecoded");
                    }
                    break;
                }
                Ok(Some(Frame::Data(b))) => {
                    assert_eq!(&before[..consumed], &b[..], "Data frame is not the bytes consumed");
                }
                Ok(Some(Frame::Message(_))) | Err(DecodeError::Parse(_)) => {
                    // One whole line, within the limit, consumed with its '\n'.
                    assert!(consumed >= 1 && before[consumed - 1] == b'\n');
                    let line = &before[..consumed - 1];
                    assert!(!line.contains(&b'\n'));
                    assert!(line.len() <= max_line, "accepted a line of {} bytes, max_line {max_line}", line.len());
                    let text = line.strip_suffix(b"\r").unwrap_or(line);
                    let parsed = Message::parse_bytes(text).map_err(DecodeError::Parse);
                    match &frame {
                        Ok(Some(Frame::Message(m))) => assert_eq!(parsed.as_ref(), Ok(m)),
                        Err(e) => assert_eq!(parsed.as_ref(), Err(e)),
                        _ => unreachable!(),
                    }
                }
                Err(DecodeError::LineTooLong { max }) => {
                    assert_eq!(*max, max_line);
                    assert!(before.len() > max_line, "LineTooLong with only {} bytes", before.len());
                    assert!(!before[..=max_line].contains(&b'\n'), "LineTooLong, but a line ends within the limit");
                }
            }
            let Some(frame) = frame.transpose() else { unreachable!() };
            if !check.frame(&frame, &dec) {
                return check.events;
            }
        }
    }
    assert_eq!(at, input.len());
    check.events
}

/// Decode through `feed` and `next_frame`, `pieces` at a time.
fn run_feed(input: &[u8], pieces: &[usize], max_line: usize, max_chunk: usize) -> Vec<Event> {
    let mut dec = LineDecoder::with_limits(max_line, max_chunk);
    let mut check = Checker::new(max_chunk);
    let mut at = 0;
    for &len in pieces {
        dec.feed(&input[at..at + len]);
        at += len;
        while let Some(frame) = dec.next_frame().transpose() {
            if !check.frame(&frame, &dec) {
                return check.events;
            }
        }
    }
    check.events
}

/// Cut `len` bytes into pieces, driven by a small PRNG; pieces may be empty.
fn cuts(len: usize, seed: u16, max_piece: usize) -> Vec<usize> {
    let mut state = u32::from(seed) | 1 << 16;
    let mut pieces = Vec::new();
    let mut left = len;
    while left > 0 {
        // xorshift32
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % (max_piece + 1)).min(left);
        pieces.push(n);
        left -= n;
    }
    pieces.push(0);
    pieces
}

fuzz_target!(|data: &[u8]| {
    let [a, b, c, d, input @ ..] = data else { return };
    let max_line = match a % 4 {
        0 => DEFAULT_MAX_LINE,
        1 => usize::from(a >> 2),             // 0..=63: tiny, most lines too long
        2 => 64 + 4 * usize::from(a >> 2),    // 64..=316: around key lengths
        _ => 1 << (a >> 2 & 15),              // powers of two up to 32 KiB
    };
    let max_chunk = match b % 4 {
        0 => DEFAULT_MAX_CHUNK,
        1 => 1,
        _ => 1 + usize::from(b >> 2),         // 1..=64
    };
    let max_piece = 1 + usize::from(c % 64);
    let seed = u16::from_le_bytes([*c, *d]);

    let expected = reference(input, max_line);

    let whole = run_decode(input, &[input.len()], max_line, max_chunk);
    assert_eq!(whole, expected, "one piece, decode");
    let split = run_decode(input, &cuts(input.len(), seed, max_piece), max_line, max_chunk);
    assert_eq!(split, expected, "pieces, decode");
    let fed = run_feed(input, &cuts(input.len(), seed.rotate_left(7), max_piece), max_line, max_chunk);
    assert_eq!(fed, expected, "pieces, feed/next_frame");
});

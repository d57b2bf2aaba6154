//! Fuzz P2P message parsing (`annexmesh::p2p::message`): any bytes go to
//! `Message::parse_bytes`; whatever parses must serialize to one line that
//! parses back to the same message. See docs/fuzzing.md.

#![no_main]

use annexmesh::p2p::key::Key;
use annexmesh::p2p::message::Message;
use libfuzzer_sys::fuzz_target;

/// What `m` must come back as after `serialize` and `parse`: identical,
/// except that ERROR text's `\r` and `\n` become spaces, as `serialize`
/// documents.
fn after_round_trip(m: &Message) -> Message {
    match m {
        Message::Error(text) => Message::Error(text.replace(['\n', '\r'], " ")),
        m => m.clone(),
    }
}

fn keys(m: &Message) -> Option<&Key> {
    match m {
        Message::CheckPresent(k)
        | Message::LockContent(k)
        | Message::Remove(k)
        | Message::RemoveBefore { key: k, .. }
        | Message::Get { key: k, .. }
        | Message::Put { key: k, .. } => Some(k),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = Message::parse_bytes(data);
    let utf8 = std::str::from_utf8(data);
    if let Ok(s) = utf8 {
        assert_eq!(parsed, Message::parse(s), "parse_bytes and parse disagree");
    }
    let Ok(m) = parsed else { return };

    if utf8.is_err() {
        // Invalid UTF-8 is only let through in file names and ERROR text.
        assert!(
            matches!(m, Message::Error(_) | Message::Get { .. } | Message::Put { .. }),
            "accepted invalid UTF-8 in {m:?}"
        );
    }
    if let Some(k) = keys(&m) {
        // A key names stored content: it must be what the peer sent, never a
        // lossy replacement, and it must survive its own round trip.
        let text = k.to_string();
        assert!(
            !text.contains('\u{fffd}') || data.windows(3).any(|w| w == "\u{fffd}".as_bytes()),
            "replacement character in key {text:?}"
        );
        assert_eq!(text.parse::<Key>().as_ref(), Ok(k), "key {text:?}");
    }

    let line = m.serialize();
    assert!(!line.contains(['\n', '\r']), "{m:?} serialized to {line:?}");
    let expected = after_round_trip(&m);
    assert_eq!(Message::parse(&line).as_ref(), Ok(&expected), "{m:?} via {line:?}");
    assert_eq!(Message::parse_bytes(line.as_bytes()).as_ref(), Ok(&expected));
    assert_eq!(expected.serialize(), line, "serialize is not stable for {m:?}");
});

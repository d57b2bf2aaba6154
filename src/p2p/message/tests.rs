//! Round trips and refusals of the P2P message grammar, with properties
//! over generated messages.

use super::*;
use proptest::prelude::*;

pub(crate) const HELLO: &str =
    "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

fn k(s: &str) -> Key {
    s.parse().unwrap()
}

fn u(s: &str) -> Uuid {
    Uuid::new(s).unwrap()
}

fn af(s: &str) -> AssociatedFile {
    AssociatedFile(Some(s.to_owned()))
}

fn parse(s: &str) -> Message {
    Message::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// Lines exactly as git-annex writes them, and the messages they carry.
#[test]
fn worked_examples() {
    let sha1 = "SHA1-s5--aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    let cases = [
        (format!("CHECKPRESENT {HELLO}"), Message::CheckPresent(k(HELLO))),
        (
            format!("GET 0 foo%%bar {sha1}"),
            Message::Get { offset: 0, file: af("foo%bar"), key: k(sha1) },
        ),
        (
            format!("GET 10  {sha1}"),
            Message::Get { offset: 10, file: AssociatedFile(None), key: k(sha1) },
        ),
        (format!("PUT dir/a.txt {HELLO}"), Message::Put { file: af("dir/a.txt"), key: k(HELLO) }),
        (
            format!("REMOVE-BEFORE 1234 {HELLO}"),
            Message::RemoveBefore { timestamp: 1234, key: k(HELLO) },
        ),
        (format!("LOCKCONTENT {HELLO}"), Message::LockContent(k(HELLO))),
        ("UNLOCKCONTENT".into(), Message::UnlockContent),
        ("PUT-FROM 10".into(), Message::PutFrom(10)),
        ("SUCCESS-PLUS u1 u2".into(), Message::SuccessPlus(vec![u("u1"), u("u2")])),
        ("SUCCESS-PLUS".into(), Message::SuccessPlus(vec![])),
        ("FAILURE-PLUS u2".into(), Message::FailurePlus(vec![u("u2")])),
        ("ALREADY-HAVE-PLUS u1".into(), Message::AlreadyHavePlus(vec![u("u1")])),
        ("BYPASS a b".into(), Message::Bypass([u("a"), u("b")].into())),
        (
            "AUTH 4b0b1e3c-u tok3n".into(),
            Message::Auth { uuid: u("4b0b1e3c-u"), token: AuthToken::new("tok3n").unwrap() },
        ),
        ("AUTH-SUCCESS s-uuid".into(), Message::AuthSuccess(u("s-uuid"))),
        ("VERSION 4".into(), Message::Version(4)),
        ("CONNECT git-upload-pack".into(), Message::Connect(Service::UploadPack)),
        ("CONNECT git-receive-pack".into(), Message::Connect(Service::ReceivePack)),
        ("CONNECTDONE 0".into(), Message::ConnectDone(0)),
        ("CONNECTDONE -1".into(), Message::ConnectDone(-1)),
        (
            "CHANGED refs/heads/master refs/heads/git-annex".into(),
            Message::Changed(vec!["refs/heads/master".into(), "refs/heads/git-annex".into()]),
        ),
        ("CHANGED ".into(), Message::Changed(vec![])),
        ("DATA 5".into(), Message::Data(5)),
        ("DATA 18446744073709551615".into(), Message::Data(u64::MAX)),
        ("TIMESTAMP 99".into(), Message::Timestamp(99)),
        (
            "ERROR this repository is read-only; write access denied".into(),
            Message::Error("this repository is read-only; write access denied".into()),
        ),
        ("ERROR ".into(), Message::Error(String::new())),
    ];
    for (line, msg) in cases {
        assert_eq!(parse(&line), msg, "{line}");
        assert_eq!(msg.serialize(), line);
    }
    for (line, msg) in [
        ("AUTH-FAILURE", Message::AuthFailure),
        ("NOTIFYCHANGE", Message::NotifyChange),
        ("GETTIMESTAMP", Message::GetTimestamp),
        ("ALREADY-HAVE", Message::AlreadyHave),
        ("SUCCESS", Message::Success),
        ("FAILURE", Message::Failure),
        ("DATA-PRESENT", Message::DataPresent),
        ("VALID", Message::Valid),
        ("INVALID", Message::Invalid),
    ] {
        assert_eq!(parse(line), msg);
        assert_eq!(msg.serialize(), line);
        assert_eq!(msg.command(), line);
    }
}

/// Inputs git-annex accepts that are not in the form it writes.
#[test]
fn lenient_forms() {
    assert_eq!(parse("ERROR"), Message::Error(String::new()));
    assert_eq!(parse("ERROR  two  spaces "), Message::Error(" two  spaces ".into()));
    assert_eq!(parse("CHANGED"), Message::Changed(vec![]));
    assert_eq!(parse("SUCCESS-PLUS  u1\tu2 "), Message::SuccessPlus(vec![u("u1"), u("u2")]));
    assert_eq!(parse("SUCCESS "), Message::Success);
    assert_eq!(parse("VERSION\t1"), Message::Version(1));
    assert_eq!(parse("VERSION 7"), Message::Version(7));
    assert_eq!(
        parse("AUTH u1"),
        Message::Auth { uuid: u("u1"), token: AuthToken::new("").unwrap() }
    );
    // NBSP separates words in git-annex; NEL does not.
    assert_eq!(parse("ERROR\u{a0}x"), Message::Error("x".into()));
    assert!(matches!(Message::parse("ERROR\u{85}x"), Err(ParseError::UnknownCommand(_))));
    // BYPASS is a set.
    assert_eq!(parse("BYPASS b a b").serialize(), "BYPASS a b");
}

#[test]
fn auth_tokens_are_case_insensitive_and_not_logged() {
    let m = parse("AUTH u1 AbC123");
    let Message::Auth { token, .. } = &m else { panic!() };
    assert_eq!(token.as_str(), "abc123");
    assert_eq!(m.serialize(), "AUTH u1 abc123");
    assert!(!format!("{m:?}").contains("abc123"));
    assert!(token.ct_eq(&AuthToken::new("ABC123").unwrap()));
    assert!(!token.ct_eq(&AuthToken::new("abc124").unwrap()));
    assert!(!token.ct_eq(&AuthToken::new("abc12").unwrap()));
}

#[test]
fn associated_file_escaping() {
    let enc = |s: &str| af(s).encode();
    let dec = |s: &str| AssociatedFile::decode(s).unwrap().0;
    assert_eq!(enc("a b\tc"), "a%b%c");
    assert_eq!(enc("100%"), "100%%");
    assert_eq!(enc("wide\u{3000}space"), "wide%space");
    assert_eq!(AssociatedFile(None).encode(), "");
    assert_eq!(dec("100%%"), Some("100%".into()));
    // Lossy: whitespace comes back as '_', control characters too.
    assert_eq!(dec(&enc("a b")), Some("a_b".into()));
    assert_eq!(dec("%%%"), Some("%_".into()));
    assert_eq!(enc("% "), enc(" %"));
    assert_eq!(dec("bell\u{7}\u{85}"), Some("bell__".into()));
    assert_eq!(dec(""), None);
    assert_eq!(af("").encode(), "");
    assert_eq!(AssociatedFile::decode("/etc/passwd"), None);
    assert_eq!(dec("%etc"), Some("_etc".into()));
    let err = Message::parse(&format!("PUT /etc/passwd {HELLO}")).unwrap_err();
    assert!(matches!(err, ParseError::AbsoluteFile { .. }), "{err}");
}

#[test]
fn serialize_never_breaks_the_line() {
    assert_eq!(Message::Error("a\nb\r".into()).serialize(), "ERROR a b ");
    assert_eq!(
        Message::Put { file: af("x\ny\r"), key: k(HELLO) }.serialize(),
        format!("PUT x%y% {HELLO}")
    );
}

#[test]
fn malformed_lines_are_rejected() {
    let err = |s: &str| Message::parse(s).expect_err(s);
    assert_eq!(err(""), ParseError::UnknownCommand(String::new()));
    assert_eq!(err("FOO bar"), ParseError::UnknownCommand("FOO".into()));
    assert_eq!(err("success"), ParseError::UnknownCommand("success".into()));
    assert_eq!(err(" SUCCESS"), ParseError::UnknownCommand(String::new()));
    assert_eq!(err("SUCCESS x"), ParseError::ArgCount { cmd: "SUCCESS".into(), expected: 0 });
    assert_eq!(err("SUCCESS  "), ParseError::ArgCount { cmd: "SUCCESS".into(), expected: 0 });
    assert_eq!(
        err(&format!("UNLOCKCONTENT {HELLO}")),
        ParseError::ArgCount { cmd: "UNLOCKCONTENT".into(), expected: 0 }
    );
    assert_eq!(
        err("CHECKPRESENT"),
        ParseError::ArgCount { cmd: "CHECKPRESENT".into(), expected: 1 }
    );
    assert_eq!(err("PUT-FROM"), ParseError::ArgCount { cmd: "PUT-FROM".into(), expected: 1 });
    assert_eq!(err("PUT-FROM 1 2"), ParseError::ArgCount { cmd: "PUT-FROM".into(), expected: 1 });
    assert_eq!(
        err(&format!("GET 0 {HELLO}")),
        ParseError::ArgCount { cmd: "GET".into(), expected: 3 }
    );
    assert_eq!(
        err("AUTH-SUCCESS"),
        ParseError::ArgCount { cmd: "AUTH-SUCCESS".into(), expected: 1 }
    );
    assert_eq!(err("CONNECT"), ParseError::ArgCount { cmd: "CONNECT".into(), expected: 1 });
    for bad in [
        "PUT-FROM abc",
        "PUT-FROM -1",
        "PUT-FROM +1",
        "PUT-FROM 0x10",
        "VERSION 4a",
        "CONNECTDONE 99999999999",
        "CONNECTDONE -",
    ] {
        assert!(matches!(err(bad), ParseError::BadNumber { .. }), "{bad}");
    }
    let e = err("DATA 99999999999999999999999");
    assert_eq!(
        e,
        ParseError::BadNumber { cmd: "DATA".into(), value: "99999999999999999999999".into() }
    );
    assert_eq!(e.to_string(), "DATA: \"99999999999999999999999\" is not a decimal number in range");
    assert!(matches!(err(&format!("GET x f {HELLO}")), ParseError::BadNumber { .. }));
    for bad in ["CHECKPRESENT nokey", "REMOVE ../x--y", "GET 0 f SHA1-s--x", "REMOVE-BEFORE 5 --x"]
    {
        assert!(matches!(err(bad), ParseError::BadKey { .. }), "{bad}");
    }
    assert_eq!(
        err("CONNECT git-annex-shell"),
        ParseError::BadService { cmd: "CONNECT".into(), value: "git-annex-shell".into() }
    );
    assert!(matches!(err("AUTH u1 not-a-token"), ParseError::BadAuthToken { .. }));
    assert!(matches!(err("AUTH  tok"), ParseError::ArgCount { .. }));
    assert!(matches!(err("SUCCESS-PLUS u1 bad\u{1}"), ParseError::BadUuid { .. }));
}

#[test]
fn invalid_utf8_only_in_file_names_and_error_text() {
    // git-annex escapes per byte: "voilà" (…c3 a0) arrives as "voil\xc3%".
    let line = [b"PUT voil\xc3% ".as_slice(), HELLO.as_bytes()].concat();
    let m = Message::parse_bytes(&line).unwrap();
    assert_eq!(m, Message::Put { file: af("voil\u{fffd}_"), key: k(HELLO) });
    assert_eq!(Message::parse_bytes(b"ERROR bad \xff"), Ok(Message::Error("bad \u{fffd}".into())));
    assert_eq!(Message::parse_bytes(b"GET 0 f WORM--a\xff"), Err(ParseError::NotUtf8));
    assert_eq!(Message::parse_bytes(b"CHANGED refs/heads/\xff"), Err(ParseError::NotUtf8));
    assert_eq!(Message::parse_bytes(b"SUCCESS"), Ok(Message::Success));
}

#[test]
fn min_versions() {
    let key = k(HELLO);
    let cases = [
        (Message::CheckPresent(key.clone()), 0),
        (Message::Get { offset: 0, file: AssociatedFile(None), key: key.clone() }, 0),
        (Message::Version(4), 0),
        (Message::Data(1), 0),
        (Message::Valid, 1),
        (Message::Invalid, 1),
        (Message::SuccessPlus(vec![]), 2),
        (Message::FailurePlus(vec![]), 2),
        (Message::AlreadyHavePlus(vec![]), 2),
        (Message::Bypass(BTreeSet::new()), 2),
        (Message::RemoveBefore { timestamp: 1, key }, 3),
        (Message::GetTimestamp, 3),
        (Message::Timestamp(1), 3),
        (Message::DataPresent, 4),
    ];
    for (m, v) in cases {
        assert_eq!(m.min_version(), v, "{m:?}");
        assert!(u64::from(v) <= MAX_PROTOCOL_VERSION);
    }
}

#[test]
fn haskell_is_space() {
    for c in [
        ' ', '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{a0}', '\u{1680}', '\u{2000}', '\u{200a}',
        '\u{202f}', '\u{205f}', '\u{3000}',
    ] {
        assert!(is_space(c), "{c:?}");
    }
    for c in ['a', '\0', '\u{1c}', '\u{85}', '\u{2028}', '\u{2029}', '\u{200b}', '\u{feff}'] {
        assert!(!is_space(c), "{c:?}");
    }
}

pub(crate) fn arb_key() -> impl Strategy<Value = Key> {
    let hex = "[0-9a-f]{40,64}";
    prop_oneof![
        (any::<u32>(), hex, "(\\.[a-z0-9]{1,4}){0,2}")
            .prop_map(|(s, h, e)| format!("SHA256E-s{s}--{h}{e}")),
        (any::<u64>(), hex).prop_map(|(s, h)| format!("SHA1-s{s}--{h}")),
        (any::<u64>(), any::<u64>(), "[a-zA-Z0-9_][a-zA-Z0-9_. ,+-]{0,40}")
            .prop_map(|(s, m, n)| format!("WORM-s{s}-m{m}--{n}")),
        (any::<u64>(), 1..100u64, hex).prop_map(|(s, c, h)| format!("MD5-s{s}-S1048576-C{c}--{h}")),
    ]
    .prop_map(|s| s.parse().unwrap())
}

pub(crate) fn arb_uuid() -> impl Strategy<Value = Uuid> {
    prop_oneof!["[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{12}", "[^\\s\\p{Cc}]{1,12}"]
        .prop_map(|s| Uuid::new(s).unwrap())
}

/// Files that survive the wire unchanged: relative, non-empty, without
/// whitespace or control characters.
fn arb_lossless_file() -> impl Strategy<Value = AssociatedFile> {
    proptest::option::of("[^\\s\\p{Cc}/][^\\s\\p{Cc}]{0,30}").prop_map(AssociatedFile)
}

/// Every message, except that DATA's payload is not modelled here.
pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
    use Message::*;
    let uuids = || proptest::collection::vec(arb_uuid(), 0..4);
    prop_oneof![
        (arb_uuid(), "[a-z0-9]{0,40}")
            .prop_map(|(uuid, t)| Auth { uuid, token: AuthToken::new(&t).unwrap() }),
        arb_uuid().prop_map(AuthSuccess),
        Just(AuthFailure),
        any::<u64>().prop_map(Version),
        prop_oneof![Just(Service::UploadPack), Just(Service::ReceivePack)].prop_map(Connect),
        any::<i32>().prop_map(ConnectDone),
        Just(NotifyChange),
        proptest::collection::vec("[!-~]{1,30}", 0..4).prop_map(Changed),
        arb_key().prop_map(CheckPresent),
        arb_key().prop_map(LockContent),
        Just(UnlockContent),
        arb_key().prop_map(Remove),
        (any::<u64>(), arb_key()).prop_map(|(timestamp, key)| RemoveBefore { timestamp, key }),
        Just(GetTimestamp),
        (any::<u64>(), arb_lossless_file(), arb_key()).prop_map(|(offset, file, key)| Get {
            offset,
            file,
            key
        }),
        (arb_lossless_file(), arb_key()).prop_map(|(file, key)| Put { file, key }),
        any::<u64>().prop_map(PutFrom),
        Just(AlreadyHave),
        uuids().prop_map(AlreadyHavePlus),
        Just(Success),
        uuids().prop_map(SuccessPlus),
        Just(Failure),
        uuids().prop_map(FailurePlus),
        uuids().prop_map(|us| Bypass(us.into_iter().collect())),
        any::<u64>().prop_map(Data),
        Just(DataPresent),
        Just(Valid),
        Just(Invalid),
        any::<u64>().prop_map(Timestamp),
        "[^\\n\\r]{0,40}".prop_map(Error),
    ]
}

proptest! {
    #[test]
    fn round_trip(m in arb_message()) {
        let line = m.serialize();
        prop_assert!(!line.contains(['\n', '\r']));
        prop_assert_eq!(Message::parse(&line), Ok(m.clone()));
        prop_assert_eq!(Message::parse_bytes(line.as_bytes()), Ok(m));
    }

    /// Any file name goes out as one word; what comes back is stable.
    #[test]
    fn lossy_files_settle_after_one_trip(name in "\\PC{0,20}|[ %\\t\\x01-\\x1f\u{a0}\u{85}a/]{0,12}", offset in any::<u64>(), key in arb_key()) {
        let m = Message::Get { offset, file: AssociatedFile(Some(name.clone())), key };
        match Message::parse(&m.serialize()) {
            Ok(back) => {
                let Message::Get { file: AssociatedFile(f), .. } = &back else { panic!() };
                prop_assert!(f.iter().all(|f| !f.contains(|c: char| is_space(c) || c.is_control())));
                prop_assert_eq!(Message::parse(&back.serialize()), Ok(back));
            }
            Err(e) => {
                prop_assert!(name.starts_with('/'));
                let is_abs = matches!(e, ParseError::AbsoluteFile { .. });
                prop_assert!(is_abs);
            }
        }
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,60}|[A-Z-]{2,17} [ -~]{0,30}") {
        if let Ok(m) = Message::parse(&s) {
            // Whatever parses serializes to something that parses the same.
            prop_assert_eq!(Message::parse(&m.serialize()), Ok(m));
        }
    }
}

//! Sessions and relaying against small fake gateways on loopback.

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use super::*;

const U: &str = "5c2f9a34-1111-4222-8333-944445555666";
const C: &str = "0b1c3a3e-2b1f-4c53-9d1e-6f7a2f2f0a11";

/// A gateway that expects `hello` (preamble and AUTH lines), answers
/// `answer`, then echoes until the client shuts down its side.
async fn fake_gateway(
    hello: String,
    answer: &'static str,
) -> (GatewayAddress, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut got = vec![0; hello.len()];
        sock.read_exact(&mut got).await.unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), hello);
        sock.write_all(answer.as_bytes()).await.unwrap();
        let (mut rd, mut wr) = sock.split();
        tokio::io::copy(&mut rd, &mut wr).await.unwrap();
    });
    let addr = GatewayAddress { tls: false, host: "127.0.0.1".into(), port, repo: None };
    (addr, task)
}

#[tokio::test]
async fn session_then_relay() {
    let token = AuthToken::new("tok").unwrap();
    let hello = format!("ANNEXMESH repo=mesh mode=readonly\nAUTH {C} tok\n");
    let (addr, gw) =
        fake_gateway(hello, "AUTH-SUCCESS 5c2f9a34-1111-4222-8333-944445555666\nVERSION 1\n").await;
    let s = Session::open(&addr, "mesh", Some(Mode::ReadOnly), Uuid::new(C).unwrap(), token)
        .await
        .unwrap();
    assert_eq!(s.repo_uuid.as_str(), U);

    // Bytes the gateway sent right after AUTH-SUCCESS are not lost, and
    // the client's bytes come back through the echo.
    let (mut client_in, relay_in) = tokio::io::duplex(1024);
    let (relay_out, mut client_out) = tokio::io::duplex(1024);
    let relaying = tokio::spawn(relay(relay_in, relay_out, s.reader, s.writer));
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        client_in.write_all(&sent).await.unwrap();
        // EOF here must reach the gateway, which then closes.
    });
    let mut got = Vec::new();
    client_out.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    relaying.await.unwrap().unwrap();
    gw.await.unwrap();
    assert_eq!(&got[..10], b"VERSION 1\n");
    assert!(got[10..] == payload[..], "echoed bytes differ");
}

#[tokio::test]
async fn refusals() {
    let token = || AuthToken::new("tok").unwrap();
    let nil = || Uuid::new(NIL_UUID).unwrap();
    let hello = format!("ANNEXMESH repo=mesh\nAUTH {NIL_UUID} tok\n");
    let (addr, gw) = fake_gateway(hello.clone(), "AUTH-FAILURE\n").await;
    let e = Session::open(&addr, "mesh", None, nil(), token()).await.err().unwrap();
    assert!(format!("{e:#}").contains("AUTH-FAILURE"), "{e:#}");
    gw.abort();
    let (addr, gw) = fake_gateway(hello, "ERROR no such repository mesh\n").await;
    let e = Session::open(&addr, "mesh", None, nil(), token()).await.err().unwrap();
    assert!(format!("{e:#}").contains("no such repository mesh"), "{e:#}");
    gw.abort();
}

#[tokio::test]
async fn relay_ends_when_the_gateway_closes_even_with_input_open() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        sock.write_all(b"bye\n").await.unwrap();
    });
    let addr: GatewayAddress = format!("127.0.0.1:{port}").parse().unwrap();
    let (rd, wr) = tokio::io::split(connect(&addr).await.unwrap());
    let (_keep_open, relay_in) = tokio::io::duplex(64);
    let (relay_out, mut client_out) = tokio::io::duplex(64);
    tokio::time::timeout(
        Duration::from_secs(10),
        relay(relay_in, relay_out, BufReader::new(rd), wr),
    )
    .await
    .expect("relay did not end")
    .unwrap();
    let mut got = Vec::new();
    client_out.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye\n");
}

#[tokio::test]
async fn answers_that_are_not_protocol_lines() {
    let token = || AuthToken::new("tok").unwrap();
    let nil = || Uuid::new(NIL_UUID).unwrap();
    let hello = format!("ANNEXMESH repo=mesh\nAUTH {NIL_UUID} tok\n");
    for (answer, says) in [
        ("HELLO there\n", "unexpected answer from the gateway: unknown command"),
        ("VERSION 1\n", "unexpected answer from the gateway: \"VERSION 1\""),
    ] {
        let (addr, gw) = fake_gateway(hello.clone(), answer).await;
        let e = Session::open(&addr, "mesh", None, nil(), token()).await.err().unwrap();
        assert!(format!("{e:#}").contains(says), "{answer:?}: {e:#}");
        gw.abort();
    }
}

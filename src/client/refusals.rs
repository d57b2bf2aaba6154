//! git-annex answers a refused AUTH with "Unable to authenticate with
//! peer" whatever the reason, and drops the gateway's ERROR text; the P2P
//! program's stderr reaches the user, so it repeats the reason there.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Longest first line looked at: an ERROR text fits easily.
const MAX_LINE: usize = 4096;

/// What the user reads for the gateway's first line, when it is a refusal.
pub fn explain(line: &str) -> Option<String> {
    let line = line.trim_end();
    if let Some(text) = line.strip_prefix("ERROR ") {
        return Some(format!("the gateway refused the connection: {text}"));
    }
    (line == "AUTH-FAILURE").then(|| {
        "the gateway did not accept the token in the address: check it, or make a new one \
         with `annexmesh admin token create`"
            .to_string()
    })
}

/// Passes the gateway's bytes through, printing on stderr why it refused
/// the connection if its first line is a refusal.
pub struct Watch<R> {
    inner: R,
    first: Option<Vec<u8>>,
}

impl<R> Watch<R> {
    pub fn new(inner: R) -> Watch<R> {
        Watch { inner, first: Some(Vec::new()) }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Watch<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !matches!(r, Poll::Ready(Ok(()))) {
            return r;
        }
        if let Some(first) = self.first.as_mut() {
            let new = &buf.filled()[before..];
            let end = new.iter().position(|&b| b == b'\n');
            first.extend_from_slice(&new[..end.unwrap_or(new.len())]);
            if end.is_some() || first.len() > MAX_LINE || new.is_empty() {
                let line = self.first.take().unwrap_or_default();
                if let Some(why) = explain(&String::from_utf8_lossy(&line)) {
                    eprintln!("{}: {why}", super::P2P_PROGRAM);
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn refusals_are_explained_and_the_rest_is_not() {
        let why = explain("ERROR no cluster or node named \"x\" is served here\n").unwrap();
        assert!(why.ends_with("no cluster or node named \"x\" is served here"), "{why}");
        assert!(explain("AUTH-FAILURE").unwrap().contains("token"));
        assert_eq!(explain("AUTH-SUCCESS 5c2f9a34-1111-4222-8333-944445555666"), None);
    }

    /// A reader that is not ready once before each byte.
    struct Slow(Vec<u8>, bool);

    impl AsyncRead for Slow {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.1 = !self.1;
            if self.1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !self.0.is_empty() {
                let b = self.0.remove(0);
                buf.put_slice(&[b]);
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_first_line_is_watched_across_pending_reads() {
        let mut w = Watch::new(Slow(b"ERROR x\nmore".to_vec(), false));
        let mut out = Vec::new();
        w.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"ERROR x\nmore");
        assert!(w.first.is_none(), "the first line was seen whole");
    }

    #[tokio::test]
    async fn bytes_pass_through_unchanged() {
        let data = b"AUTH-SUCCESS u\nVERSION 1\nDATA 3\nabc".to_vec();
        let mut out = Vec::new();
        Watch::new(&data[..]).read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
    }
}

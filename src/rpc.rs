//! The generated gRPC API (see `proto/annexmesh/v1`).

#![allow(clippy::all)]
tonic::include_proto!("annexmesh.v1");

/// Largest gRPC message we send or accept: data chunks are at most
/// `CHUNK_SIZE`, so this leaves generous room for headers.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Size of the data chunks streamed between gateways and agents.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// HTTP/2 flow-control windows for content streams, on both ends: large
/// enough to keep a loopback or LAN link busy between window updates.
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Largest HTTP/2 frame each end accepts: a data chunk fits in one frame
/// rather than sixteen of the protocol's default 16 KiB, which cuts the
/// per-frame work on both ends of every content stream.
pub const MAX_FRAME: u32 = CHUNK_SIZE as u32 + 1024;

/// The one way a mesh member opens a gRPC channel to another (coordinator or
/// agent): connected lazily, so a peer that is down is retried on the next
/// call, with the content-stream windows and frame size on our side too.
pub fn channel(url: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(endpoint(url)?.connect_lazy())
}

/// The endpoint behind `channel`, for a caller that connects eagerly.
pub fn endpoint(url: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    use std::time::Duration;
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        // A dead link or a frozen peer is found within about 20 s.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .max_frame_size(Some(MAX_FRAME)))
}

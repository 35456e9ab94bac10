//! HTTP/1.1 over a bare TCP socket, for requests no client library would send:
//! malformed, half-sent, trickled or oversized.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer as it came off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }
}

/// `host:port` of a `http://host:port` base URL.
pub fn authority(base_url: &str) -> String {
    base_url.trim_start_matches("http://").to_string()
}

pub async fn connect(base_url: &str) -> TcpStream {
    TcpStream::connect(authority(base_url))
        .await
        .expect("connect to the bridge")
}

/// Reads one response: the head, then a `Content-Length` body (or until the
/// server closes). `None` when the connection closed before a status line.
pub async fn read_response(stream: &mut TcpStream, within: Duration) -> Option<RawResponse> {
    tokio::time::timeout(within, read_response_inner(stream))
        .await
        .ok()
        .flatten()
}

async fn read_response_inner(stream: &mut TcpStream) -> Option<RawResponse> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut response = RawResponse {
        status,
        head,
        body: buffer[head_end + 4..].to_vec(),
    };
    let length = response
        .header("content-length")
        .and_then(|value| value.parse::<usize>().ok());
    while length.is_none_or(|length| response.body.len() < length) {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => response.body.extend_from_slice(&chunk[..read]),
        }
    }
    Some(response)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Sends `request` as given and reads the answer.
pub async fn exchange(base_url: &str, request: &[u8]) -> Option<RawResponse> {
    let mut stream = connect(base_url).await;
    stream.write_all(request).await.ok()?;
    read_response(&mut stream, Duration::from_secs(10)).await
}

/// A complete request with `Connection: close` and the given extra header lines.
pub fn request(method: &str, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
        .into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

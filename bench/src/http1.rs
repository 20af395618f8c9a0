//! A minimal blocking HTTP/1.1 client over one kept-alive connection, plus Connect envelopes.
//!
//! It does exactly what the measurements need and nothing more, so that the client adds as
//! little as possible to the round trips it times: one `write` per request, a buffered reader
//! for the response, and bodies read incrementally (content-length, chunked or until close).

use std::{
    cmp::min,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};

/// How long any single read or write may block before the bench gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP/1.1 connection, reused for request after request.
pub struct Conn {
    addr: SocketAddr,
    stream: BufReader<TcpStream>,
}

/// A response's status and headers.
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server said it will close the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        Self::from_stream(addr, stream)
    }

    /// Like [`Conn::open`], but gives up connecting after `timeout`.
    pub fn open_timeout(addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        Self::from_stream(addr, stream)
    }

    fn from_stream(addr: SocketAddr, stream: TcpStream) -> Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            addr,
            stream: BufReader::with_capacity(64 * 1024, stream),
        })
    }

    /// Sends one request in a single write. `content-length` is added for bodies (and for
    /// every POST/PUT, even an empty one).
    pub fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<()> {
        let mut req = Vec::with_capacity(256 + body.len());
        write!(req, "{method} {target} HTTP/1.1\r\nhost: {}\r\n", self.addr)?;
        for (name, value) in headers {
            write!(req, "{name}: {value}\r\n")?;
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            write!(req, "content-length: {}\r\n", body.len())?;
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        self.stream
            .get_mut()
            .write_all(&req)
            .with_context(|| format!("sending {method} {target}"))
    }

    /// Reads the status line and headers of the next final (non-1xx) response.
    pub fn read_head(&mut self) -> Result<Head> {
        loop {
            let line = self.read_line()?;
            ensure!(
                !line.is_empty(),
                "the server closed the connection before responding"
            );
            let mut parts = line.split_whitespace();
            let version = parts.next().unwrap_or_default();
            ensure!(version.starts_with("HTTP/1."), "bad status line {line:?}");
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("bad status line {line:?}"))?;
            let mut headers = Vec::new();
            loop {
                let line = self.read_line()?;
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    break;
                }
                let (name, value) = line
                    .split_once(':')
                    .with_context(|| format!("bad header line {line:?}"))?;
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            if (100..200).contains(&status) {
                continue;
            }
            return Ok(Head { status, headers });
        }
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        self.stream
            .read_line(&mut line)
            .context("reading the response head")?;
        Ok(line)
    }

    /// The body of the response `head` answered to a `method` request.
    pub fn body(&mut self, head: &Head, method: &str) -> Result<Body<'_>> {
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let framing = if method == "HEAD" || head.status == 204 || head.status == 304 {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked {
                left: 0,
                need_crlf: false,
                done: false,
            }
        } else if let Some(len) = head.header("content-length") {
            Framing::Length(len.parse().context("bad content-length")?)
        } else {
            Framing::UntilClose
        };
        Ok(Body {
            reader: &mut self.stream,
            framing,
        })
    }

    /// Sends a request and reads the whole response. For small requests, not for timing.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(Head, Vec<u8>)> {
        self.send(method, target, headers, body)?;
        let head = self.read_head()?;
        let mut data = Vec::new();
        self.body(&head, method)?
            .read_to_end(&mut data)
            .with_context(|| format!("reading the body of {method} {target}"))?;
        Ok((head, data))
    }
}

enum Framing {
    Length(u64),
    Chunked {
        /// Bytes left in the current chunk.
        left: u64,
        /// The CRLF after a finished chunk is still unread. It is read lazily, at the next
        /// read, so that a caller timing a message stops the clock on its last byte.
        need_crlf: bool,
        done: bool,
    },
    UntilClose,
}

/// A response body, decoded as it is read.
pub struct Body<'a> {
    reader: &'a mut BufReader<TcpStream>,
    framing: Framing,
}

impl Body<'_> {
    /// Reads and discards the rest of the body, leaving the connection ready for reuse.
    pub fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn read_exactly(r: &mut impl Read, left: &mut u64, buf: &mut [u8]) -> io::Result<usize> {
    let max = usize::try_from(min(buf.len() as u64, *left)).unwrap_or(buf.len());
    let n = r.read(&mut buf[..max])?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    *left -= n as u64;
    Ok(n)
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.framing {
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => read_exactly(self.reader, left, buf),
            Framing::UntilClose => self.reader.read(buf),
            Framing::Chunked {
                left,
                need_crlf,
                done,
            } => {
                if *done {
                    return Ok(0);
                }
                if *need_crlf {
                    let mut crlf = [0u8; 2];
                    self.reader.read_exact(&mut crlf)?;
                    if &crlf != b"\r\n" {
                        return Err(invalid("chunk not followed by CRLF"));
                    }
                    *need_crlf = false;
                }
                if *left == 0 {
                    let mut line = String::new();
                    self.reader.read_line(&mut line)?;
                    let size = line.trim_end().split(';').next().unwrap_or_default();
                    let size = u64::from_str_radix(size.trim(), 16)
                        .map_err(|_| invalid("bad chunk size line"))?;
                    if size == 0 {
                        // Trailers, then the blank line that ends the body.
                        loop {
                            line.clear();
                            if self.reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                                break;
                            }
                        }
                        *done = true;
                        return Ok(0);
                    }
                    *left = size;
                }
                let n = read_exactly(self.reader, left, buf)?;
                if *left == 0 {
                    *need_crlf = true;
                }
                Ok(n)
            }
        }
    }
}

/// Connect envelope flag: end of stream.
pub const END_STREAM: u8 = 0x02;
/// Connect envelope flag: compressed message (never expected: compression is off).
pub const COMPRESSED: u8 = 0x01;

/// One Connect envelope: a flag byte, a big-endian u32 length, then the message.
pub fn envelope(flags: u8, message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).expect("Connect messages are under 4 GiB");
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Reads one Connect envelope: its flags and its message.
pub fn read_envelope(r: &mut impl Read) -> Result<(u8, Vec<u8>)> {
    let mut prefix = [0u8; 5];
    r.read_exact(&mut prefix)
        .context("reading a Connect envelope prefix")?;
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    if len > 16 << 20 {
        bail!("Connect envelope of {len} bytes: not a message this bench expects");
    }
    let mut message = vec![0u8; len as usize];
    r.read_exact(&mut message)
        .context("reading a Connect envelope message")?;
    Ok((prefix[0], message))
}

/// `s` percent-encoded for a query value: everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

//! Response body framing for streamed (non-secret) bodies: chunked
//! transfer coding, a `Content-Length`, or "until the connection closes".
//! Pure: bytes in, body bytes out, so every split of the input is testable.

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Chunked(Chunk),
    Length(u64),
    UntilEof,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting `HEX[;ext]\r\n`.
    Size,
    /// This many data bytes of the current chunk are still to come.
    Data(u64),
    /// Expecting the `\r\n` after a chunk's data.
    DataEnd,
    /// After the last (empty) chunk: trailer lines until an empty one.
    Trailer,
}

impl Framing {
    /// The framing of a (final) response with this status and head.
    pub(crate) fn for_response(status: u16, headers: &[(String, String)]) -> Result<Framing, &'static str> {
        if super::has_no_body(status) {
            return Ok(Framing::Done);
        }
        Framing::from_headers(headers)
    }

    /// The framing a response head announces.
    pub(crate) fn from_headers(headers: &[(String, String)]) -> Result<Framing, &'static str> {
        let get = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
        if let Some(te) = get("transfer-encoding") {
            if !te.to_ascii_lowercase().split(',').any(|c| c.trim() == "chunked") {
                return Err("unsupported transfer-encoding");
            }
            return Ok(Framing::Chunked(Chunk::Size));
        }
        match get("content-length") {
            Some(v) => v.parse().map(Framing::Length).map_err(|_| "bad Content-Length"),
            None => Ok(Framing::UntilEof),
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        *self == Framing::Done
    }

    /// The end of the connection: fine only where the body may end there.
    pub(crate) fn at_eof(&mut self) -> Result<(), &'static str> {
        match self {
            Framing::UntilEof | Framing::Done => {
                *self = Framing::Done;
                Ok(())
            }
            _ => Err("the connection closed in the middle of the body"),
        }
    }

    /// Moves body bytes from the front of `raw` to `out`, as far as `raw`
    /// allows. Whatever cannot be decoded yet stays in `raw`.
    pub(crate) fn decode(&mut self, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), &'static str> {
        let mut at = 0;
        let result = loop {
            let rest = &raw[at..];
            let used = match self {
                Framing::Done => break Ok(()),
                Framing::UntilEof => {
                    out.extend_from_slice(rest);
                    rest.len()
                }
                Framing::Length(left) => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    out.extend_from_slice(&rest[..n]);
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Framing::Done;
                    }
                    n
                }
                Framing::Chunked(chunk) => match chunk_step(chunk, rest, out) {
                    Err(e) => break Err(e),
                    Ok(Step::Used(n)) => n,
                    Ok(Step::End(n)) => {
                        *self = Framing::Done;
                        n
                    }
                },
            };
            if used == 0 && !self.is_done() {
                break Ok(());
            }
            at += used;
        };
        raw.drain(..at);
        result
    }
}

enum Step {
    /// This many input bytes were used (0: more input is needed).
    Used(usize),
    /// The body ended after this many input bytes.
    End(usize),
}

/// One step of the chunked decoder.
fn chunk_step(chunk: &mut Chunk, rest: &[u8], out: &mut Vec<u8>) -> Result<Step, &'static str> {
    match *chunk {
        Chunk::Size => {
            let Some(end) = find_crlf(rest)? else { return Ok(Step::Used(0)) };
            let line = std::str::from_utf8(&rest[..end]).map_err(|_| "chunk size is not text")?;
            let hex = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(hex, 16).map_err(|_| "bad chunk size")?;
            *chunk = if size == 0 { Chunk::Trailer } else { Chunk::Data(size) };
            Ok(Step::Used(end + 2))
        }
        Chunk::Data(left) => {
            let n = left.min(rest.len() as u64) as usize;
            out.extend_from_slice(&rest[..n]);
            *chunk = if left == n as u64 { Chunk::DataEnd } else { Chunk::Data(left - n as u64) };
            Ok(Step::Used(n))
        }
        Chunk::DataEnd => {
            if rest.len() < 2 {
                return Ok(Step::Used(0));
            }
            if &rest[..2] != b"\r\n" {
                return Err("chunk data is not followed by CRLF");
            }
            *chunk = Chunk::Size;
            Ok(Step::Used(2))
        }
        Chunk::Trailer => match find_crlf(rest)? {
            None => Ok(Step::Used(0)),
            Some(0) => Ok(Step::End(2)),
            Some(end) => Ok(Step::Used(end + 2)),
        },
    }
}

fn find_crlf(rest: &[u8]) -> Result<Option<usize>, &'static str> {
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(i)),
        None if rest.len() > MAX_LINE => Err("chunk header line is too long"),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framing: Framing, input: &[u8], split: usize) -> (Vec<u8>, Framing) {
        let mut f = framing;
        let (mut raw, mut out) = (Vec::new(), Vec::new());
        for piece in input.chunks(split.max(1)) {
            raw.extend_from_slice(piece);
            f.decode(&mut raw, &mut out).unwrap();
        }
        (out, f)
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let input = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 1..input.len() {
            let (out, f) = run(Framing::Chunked(Chunk::Size), input, split);
            assert_eq!(out, b"hello, world", "split {split}");
            assert!(f.is_done(), "split {split}: {f:?}");
        }
    }

    #[test]
    fn an_open_chunked_stream_yields_what_arrived() {
        let (out, f) = run(Framing::Chunked(Chunk::Size), b"3\r\nabc\r\n4\r\nde", 2);
        assert_eq!(out, b"abcde");
        assert_eq!(f, Framing::Chunked(Chunk::Data(2)));
        let mut f = f;
        assert!(f.at_eof().is_err());
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [&b"zz\r\n"[..], b"3\r\nabcX\r\n", &[b'1'; 2000]] {
            let mut f = Framing::Chunked(Chunk::Size);
            let (mut raw, mut out) = (bad.to_vec(), Vec::new());
            assert!(f.decode(&mut raw, &mut out).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn length_and_eof_framing() {
        let (out, f) = run(Framing::Length(3), b"abcdef", 2);
        assert_eq!((out.as_slice(), f), (&b"abc"[..], Framing::Done));
        let (out, mut f) = run(Framing::UntilEof, b"abc", 1);
        assert_eq!(out, b"abc");
        assert!(f.at_eof().is_ok() && f.is_done());
        let chunked = vec![("Transfer-Encoding".to_owned(), "chunked".to_owned())];
        assert_eq!(Framing::from_headers(&chunked), Ok(Framing::Chunked(Chunk::Size)));
        let gzip = vec![("transfer-encoding".to_owned(), "gzip".to_owned())];
        assert!(Framing::from_headers(&gzip).is_err());
        assert_eq!(Framing::for_response(204, &[]), Ok(Framing::Done));
        assert_eq!(Framing::for_response(304, &chunked), Ok(Framing::Done));
        assert_eq!(Framing::for_response(200, &[]), Ok(Framing::UntilEof));
    }
}

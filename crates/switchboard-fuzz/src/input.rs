//! Turning fuzzer bytes into structured input, deterministically.

use std::borrow::Cow;

/// A webhook request decoded from fuzzer bytes.
///
/// The format is a tiny HTTP-like text, so corpus files stay readable and a bare JSON body is a
/// valid input too:
///
/// ```text
/// H x-switchboard-token: secret
/// Q SdkAppid=1400187352
///
/// {"the": "body"}
/// ```
///
/// Bytes that start with `H `, `Q ` or a newline have a head: lines up to the first empty line,
/// `H name: value` (a header, name lowercased) or `Q name=value` (a query parameter); other
/// lines are ignored, and a head without an empty line has an empty body. Any other bytes are
/// all body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FuzzRequest {
    /// Headers, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// Query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

fn has_head(data: &[u8]) -> bool {
    data.starts_with(b"H ") || data.starts_with(b"Q ") || data.starts_with(b"\n")
}

impl FuzzRequest {
    /// Decodes fuzzer bytes; never fails.
    pub fn decode(data: &[u8]) -> FuzzRequest {
        if !has_head(data) {
            return FuzzRequest {
                body: data.to_vec(),
                ..FuzzRequest::default()
            };
        }
        let (head, body) = if let Some(rest) = data.strip_prefix(b"\n") {
            (&[][..], rest)
        } else {
            match data.windows(2).position(|w| w == b"\n\n") {
                Some(at) => (&data[..at], &data[at + 2..]),
                None => (data, &[][..]),
            }
        };
        let mut request = FuzzRequest {
            body: body.to_vec(),
            ..FuzzRequest::default()
        };
        for line in head.split(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(line);
            if let Some(header) = text.strip_prefix("H ") {
                let (name, value) = header.split_once(':').unwrap_or((header, ""));
                request.headers.push((
                    name.trim().to_ascii_lowercase(),
                    value.trim_start().to_owned(),
                ));
            } else if let Some(param) = text.strip_prefix("Q ") {
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                request.query.push((name.to_owned(), value.to_owned()));
            }
        }
        request
    }

    /// Encodes a request so that [`FuzzRequest::decode`] gives it back (for header and query
    /// values without newlines, header names without `:`, query names without `=`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("H {name}: {value}\n").as_bytes());
        }
        for (name, value) in &self.query {
            out.extend_from_slice(format!("Q {name}={value}\n").as_bytes());
        }
        if !out.is_empty() || has_head(&self.body) {
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reads fuzzer bytes front to back; past the end every read gives zeros / empty.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    /// The next byte, 0 past the end.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `N` bytes, zero-padded past the end.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for b in &mut out {
            *b = self.byte();
        }
        out
    }

    /// A big-endian u64 from the next 8 bytes.
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }

    /// A big-endian i64 from the next 8 bytes.
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.array())
    }

    /// A big-endian i32 from the next 4 bytes.
    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.array())
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Bytes as a string: itself if UTF-8, else lossily decoded.
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_the_text_format() {
        let request = FuzzRequest {
            headers: vec![("x-smartsupp-hmac".into(), "ab: cd".into())],
            query: vec![("SdkAppid".into(), "1400=1".into())],
            body: b"{\"a\":\n\n1}".to_vec(),
        };
        assert_eq!(FuzzRequest::decode(&request.encode()), request);
        let bare = FuzzRequest {
            body: b"H not a header".to_vec(),
            ..FuzzRequest::default()
        };
        assert_eq!(bare.encode(), b"\nH not a header");
        assert_eq!(FuzzRequest::decode(&bare.encode()), bare);
        assert_eq!(FuzzRequest::decode(b"{}").body, b"{}");
        let head_only = FuzzRequest::decode(b"H a: b\nQ c");
        assert_eq!(head_only.headers, vec![("a".into(), "b".into())]);
        assert_eq!(head_only.query, vec![("c".into(), String::new())]);
        assert!(head_only.body.is_empty());
    }

    #[test]
    fn the_reader_pads_with_zeros() {
        let mut reader = Reader::new(&[1, 2]);
        assert_eq!(reader.byte(), 1);
        assert_eq!(reader.array::<3>(), [2, 0, 0]);
        assert_eq!(reader.u64(), 0);
        assert!(reader.rest().is_empty());
    }
}

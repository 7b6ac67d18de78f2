//! Primitive encodings shared by every frame body: big-endian integers,
//! length-prefixed strings and byte strings, counted lists.
//!
//! Reading never panics: every read checks the remaining length first and
//! reports what was short or invalid.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codec::CodecError;
use crate::message::{Message, NewMessage};

/// A reader over one frame body; payloads are zero-copy slices of it.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    fn need(&self, n: usize, what: &str) -> Result<(), CodecError> {
        if self.buf.remaining() < n {
            return Err(CodecError::Malformed(format!(
                "truncated {what}: need {n} bytes, {} left",
                self.buf.remaining()
            )));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, CodecError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, CodecError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, CodecError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, CodecError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn array4(&mut self, what: &str) -> Result<[u8; 4], CodecError> {
        self.need(4, what)?;
        let mut out = [0u8; 4];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String, CodecError> {
        let len = usize::from(self.u16(what)?);
        self.need(len, what)?;
        let raw = self.buf.split_to(len);
        String::from_utf8(raw.to_vec())
            .map_err(|_| CodecError::Malformed(format!("{what} is not valid UTF-8")))
    }

    pub(crate) fn bytes(&mut self, what: &str) -> Result<Bytes, CodecError> {
        let len = self.u32(what)? as usize;
        self.need(len, what)?;
        Ok(self.buf.split_to(len))
    }

    pub(crate) fn opt_string(&mut self, what: &str) -> Result<Option<String>, CodecError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.string(what)?)),
            other => Err(CodecError::Malformed(format!(
                "{what}: option flag must be 0 or 1, got {other}"
            ))),
        }
    }

    /// A list count, checked against the bytes left so that a forged count
    /// cannot make the decoder reserve huge amounts of memory.
    pub(crate) fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize, CodecError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item_bytes) > self.buf.remaining() {
            return Err(CodecError::Malformed(format!(
                "{what}: count {n} does not fit in the {} bytes left",
                self.buf.remaining()
            )));
        }
        Ok(n)
    }

    pub(crate) fn ids(&mut self) -> Result<Vec<u64>, CodecError> {
        let n = self.count("ids", 8)?;
        (0..n).map(|_| self.u64("id")).collect()
    }

    pub(crate) fn headers(&mut self) -> Result<Vec<(String, String)>, CodecError> {
        let n = usize::from(self.u16("header count")?);
        if n.saturating_mul(4) > self.buf.remaining() {
            return Err(CodecError::Malformed(format!(
                "header count {n} does not fit in the frame"
            )));
        }
        (0..n)
            .map(|_| Ok((self.string("header name")?, self.string("header value")?)))
            .collect()
    }

    pub(crate) fn new_message(&mut self) -> Result<NewMessage, CodecError> {
        Ok(NewMessage {
            key: self.opt_string("key")?,
            headers: self.headers()?,
            payload: self.bytes("payload")?,
        })
    }

    pub(crate) fn message(&mut self) -> Result<Message, CodecError> {
        Ok(Message {
            id: self.u64("message id")?,
            topic: self.string("message topic")?,
            key: self.opt_string("key")?,
            headers: self.headers()?,
            payload: self.bytes("payload")?,
            publish_time_ms: self.u64("publish time")?,
            attempt: self.u32("attempt")?,
        })
    }

    /// Fails when bytes are left over: a frame must be exactly its body.
    pub(crate) fn finish(self, what: &str) -> Result<(), CodecError> {
        if self.buf.has_remaining() {
            return Err(CodecError::Malformed(format!(
                "{} unexpected trailing bytes after {what}",
                self.buf.remaining()
            )));
        }
        Ok(())
    }
}

/// Why a value cannot be encoded (too long for its length prefix).
fn too_long(what: &str, len: usize, max: usize) -> CodecError {
    CodecError::Unencodable(format!("{what} is {len} bytes; at most {max} fit"))
}

pub(crate) fn put_string(dst: &mut BytesMut, what: &str, s: &str) -> Result<(), CodecError> {
    let len = u16::try_from(s.len()).map_err(|_| too_long(what, s.len(), u16::MAX.into()))?;
    dst.put_u16(len);
    dst.put_slice(s.as_bytes());
    Ok(())
}

pub(crate) fn put_bytes(dst: &mut BytesMut, what: &str, b: &[u8]) -> Result<(), CodecError> {
    let len = u32::try_from(b.len()).map_err(|_| too_long(what, b.len(), u32::MAX as usize))?;
    dst.put_u32(len);
    dst.put_slice(b);
    Ok(())
}

pub(crate) fn put_opt_string(
    dst: &mut BytesMut,
    what: &str,
    s: Option<&str>,
) -> Result<(), CodecError> {
    match s {
        None => dst.put_u8(0),
        Some(s) => {
            dst.put_u8(1);
            put_string(dst, what, s)?;
        }
    }
    Ok(())
}

pub(crate) fn put_count(dst: &mut BytesMut, what: &str, n: usize) -> Result<(), CodecError> {
    let n = u32::try_from(n).map_err(|_| too_long(what, n, u32::MAX as usize))?;
    dst.put_u32(n);
    Ok(())
}

pub(crate) fn put_ids(dst: &mut BytesMut, ids: &[u64]) -> Result<(), CodecError> {
    put_count(dst, "ids", ids.len())?;
    for id in ids {
        dst.put_u64(*id);
    }
    Ok(())
}

pub(crate) fn put_headers(
    dst: &mut BytesMut,
    headers: &[(String, String)],
) -> Result<(), CodecError> {
    let n = u16::try_from(headers.len())
        .map_err(|_| too_long("header list", headers.len(), u16::MAX.into()))?;
    dst.put_u16(n);
    for (name, value) in headers {
        put_string(dst, "header name", name)?;
        put_string(dst, "header value", value)?;
    }
    Ok(())
}

pub(crate) fn put_new_message(dst: &mut BytesMut, m: &NewMessage) -> Result<(), CodecError> {
    put_opt_string(dst, "key", m.key.as_deref())?;
    put_headers(dst, &m.headers)?;
    put_bytes(dst, "payload", &m.payload)
}

pub(crate) fn put_message(dst: &mut BytesMut, m: &Message) -> Result<(), CodecError> {
    dst.put_u64(m.id);
    put_string(dst, "message topic", &m.topic)?;
    put_opt_string(dst, "key", m.key.as_deref())?;
    put_headers(dst, &m.headers)?;
    put_bytes(dst, "payload", &m.payload)?;
    dst.put_u64(m.publish_time_ms);
    dst.put_u32(m.attempt);
    Ok(())
}

//! The few commands a Redis replica sends its master during a full resynchronisation (PING,
//! AUTH, REPLCONF, PSYNC), read from a socket any pod in the cluster can open. Written by hand:
//! the `redis` crate's parser reads replies from a server the client chose and bounds nothing,
//! while this one faces strangers, so every length it accepts is capped before it is trusted.

/// The most arguments a handshake command has (`REPLCONF capa eof capa psync2` is five).
const MAX_ARGS: usize = 16;
/// The longest argument (a password, a replication id) or inline line.
const MAX_ARG: usize = 1024;

/// Why a client's bytes are not a command this server accepts.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// An array header, bulk header or inline line that is not what RESP allows.
    #[error("malformed request")]
    Malformed,
    /// More arguments, or a longer argument or line, than a replica ever sends.
    #[error("request larger than a replica's handshake")]
    TooLarge,
}

/// A command's arguments and the bytes it took; `None` until all of it has arrived.
pub type Parsed = Result<Option<(Vec<Vec<u8>>, usize)>, ProtocolError>;

/// One command parsed from the front of `buf`: its arguments and the bytes it took, or `None`
/// when `buf` holds only part of it. Arrays of bulk strings (what replicas send) and inline
/// commands (what a person with telnet sends) are both read.
pub fn parse(buf: &[u8]) -> Parsed {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf),
        Some(_) => parse_inline(buf),
    }
}

/// The position just after the next `\r\n` at or after `from`, and the line before it; `None`
/// when it has not arrived. A line longer than [`MAX_ARG`] is refused without waiting for it.
fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = buf.get(from..).ok_or(ProtocolError::Malformed)?;
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end > MAX_ARG => Err(ProtocolError::TooLarge),
        Some(end) => Ok(Some((&rest[..end], from + end + 2))),
        None if rest.len() > MAX_ARG + 1 => Err(ProtocolError::TooLarge),
        None => Ok(None),
    }
}

/// A decimal count in `0..=max` (RESP's lengths; `-1`, a null, is not a request).
fn count(digits: &[u8], max: usize) -> Result<usize, ProtocolError> {
    if digits.is_empty() || digits.len() > 6 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ProtocolError::Malformed);
    }
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or(ProtocolError::Malformed)?;
    if n > max {
        return Err(ProtocolError::TooLarge);
    }
    Ok(n)
}

fn parse_array(buf: &[u8]) -> Parsed {
    let Some((header, mut at)) = line(buf, 0)? else {
        return Ok(None);
    };
    let n = count(&header[1..], MAX_ARGS)?;
    if n == 0 {
        return Err(ProtocolError::Malformed);
    }
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let Some((bulk, start)) = line(buf, at)? else {
            return Ok(None);
        };
        if bulk.first() != Some(&b'$') {
            return Err(ProtocolError::Malformed);
        }
        let len = count(&bulk[1..], MAX_ARG)?;
        let end = start + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::Malformed);
        }
        args.push(buf[start..end].to_vec());
        at = end + 2;
    }
    Ok(Some((args, at)))
}

fn parse_inline(buf: &[u8]) -> Parsed {
    let Some((text, used)) = line(buf, 0)? else {
        return Ok(None);
    };
    let args: Vec<Vec<u8>> = text
        .split(|b| *b == b' ')
        .filter(|a| !a.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if args.is_empty() {
        return Err(ProtocolError::Malformed);
    }
    if args.len() > MAX_ARGS {
        return Err(ProtocolError::TooLarge);
    }
    Ok(Some((args, used)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn array(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn pipelined_commands_come_out_one_at_a_time() {
        let mut buf = array(&[b"AUTH", b"pw"]);
        buf.extend(array(&[b"REPLCONF", b"listening-port", b"6379"]));
        let (first, used) = parse(&buf).unwrap().unwrap();
        assert_eq!(first, vec![b"AUTH".to_vec(), b"pw".to_vec()]);
        let (second, rest) = parse(&buf[used..]).unwrap().unwrap();
        assert_eq!(second[0], b"REPLCONF");
        assert_eq!(used + rest, buf.len());
    }

    #[test]
    fn inline_commands_are_read() {
        assert_eq!(
            parse(b"PING\r\n").unwrap(),
            Some((vec![b"PING".to_vec()], 6))
        );
    }

    #[test]
    fn hostile_lengths_are_refused_before_waiting_for_the_bytes() {
        assert_eq!(parse(b"*100000\r\n"), Err(ProtocolError::TooLarge));
        assert_eq!(parse(b"*1\r\n$999999\r\n"), Err(ProtocolError::TooLarge));
        assert_eq!(
            parse(b"*1\r\n$99999999999\r\n"),
            Err(ProtocolError::Malformed)
        );
        assert_eq!(parse(b"*-1\r\n"), Err(ProtocolError::Malformed));
        assert_eq!(parse(b"*1\r\n$-1\r\n"), Err(ProtocolError::Malformed));
        assert_eq!(parse(b"*0\r\n"), Err(ProtocolError::Malformed));
        assert_eq!(parse(b"*1\r\n$2\r\nabXY"), Err(ProtocolError::Malformed));
        assert_eq!(parse(&[b'A'; 2000]), Err(ProtocolError::TooLarge));
        assert_eq!(parse(b"*1\r\n:5\r\n"), Err(ProtocolError::Malformed));
    }

    proptest! {
        /// Any bytes: no panic, and a parsed command never claims more bytes than it was given
        /// nor more arguments or longer ones than the caps.
        #[test]
        fn arbitrary_bytes_never_panic_nor_exceed_the_caps(buf in proptest::collection::vec(any::<u8>(), 0..4096)) {
            if let Ok(Some((args, used))) = parse(&buf) {
                prop_assert!(used <= buf.len());
                prop_assert!(!args.is_empty() && args.len() <= MAX_ARGS);
                prop_assert!(args.iter().all(|a| a.len() <= MAX_ARG));
            }
        }

        /// Well-formed arrays parse back to their arguments whole, and any prefix of them asks
        /// for more bytes instead of guessing.
        #[test]
        fn arrays_round_trip_and_prefixes_wait(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
            cut in any::<proptest::sample::Index>(),
        ) {
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let buf = array(&refs);
            prop_assert_eq!(parse(&buf).unwrap(), Some((args.clone(), buf.len())));
            let prefix = &buf[..cut.index(buf.len())];
            prop_assert_eq!(parse(prefix).unwrap(), None);
        }
    }
}

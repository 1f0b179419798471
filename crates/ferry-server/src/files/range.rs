//! The one `Range` a download answers (RFC 9110 §14): `bytes=a-b`,
//! `bytes=a-` or `bytes=-n`. Several ranges, or another unit, are answered
//! with the whole file, as the RFC allows.

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The whole file.
    Whole,
    /// `len` bytes from `start`.
    Part { start: u64, len: u64 },
    /// A range the file does not have: `416`.
    Unsatisfiable,
}

/// Reads `header` (absent: the whole file).
pub fn wanted(header: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    // Digits only; a number too large for u64 is as large as one can be
    // (past any file's end, or its whole length).
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            Some(s.parse().unwrap_or(u64::MAX))
        }
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // The last n bytes.
        (true, _, Some(n)) if n > 0 && size > 0 => {
            let len = n.min(size);
            Wanted::Part {
                start: size - len,
                len,
            }
        }
        (true, _, Some(_)) => Wanted::Unsatisfiable,
        (true, _, None) => Wanted::Whole,
        (false, Some(start), _) if start >= size => Wanted::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => Wanted::Part {
            start,
            len: size - start,
        },
        (false, Some(start), Some(end)) if end >= start => Wanted::Part {
            start,
            len: end.min(size - 1) - start + 1,
        },
        // Malformed: ignored, as the RFC says.
        _ => Wanted::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_the_rfc_says() {
        let part = |start, len| Wanted::Part { start, len };
        assert_eq!(wanted(None, 10), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-3"), 10), part(0, 4));
        assert_eq!(wanted(Some("bytes=4-"), 10), part(4, 6));
        assert_eq!(wanted(Some("bytes=8-100"), 10), part(8, 2));
        assert_eq!(wanted(Some("bytes=-3"), 10), part(7, 3));
        assert_eq!(wanted(Some("bytes=-30"), 10), part(0, 10));
        assert_eq!(wanted(Some("bytes=10-"), 10), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 10), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
        assert_eq!(
            wanted(Some("bytes=-99999999999999999999999"), 10),
            part(0, 10)
        );
        assert_eq!(
            wanted(Some("bytes=99999999999999999999999-"), 10),
            Wanted::Unsatisfiable
        );
        assert_eq!(
            wanted(Some("bytes=2-99999999999999999999999"), 10),
            part(2, 8)
        );
        for ignored in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=-",
            "bytes=-5-",
        ] {
            assert_eq!(wanted(Some(ignored), 10), Wanted::Whole, "{ignored}");
        }
    }
}

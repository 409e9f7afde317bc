//! The hook where STIX patterns are validated at the edge of the bus.
//!
//! Only indicators with `pattern_type: stix` are checked; other pattern languages (`suricata`,
//! `sigma`, `yara`, `snort`, the non-standard `stix2` upstream's tests use, …) pass unchecked.
//!
//! For now [`check_stix_pattern`] performs the structural checks that every valid pattern
//! satisfies (an observation in brackets, balanced brackets and parentheses outside of string
//! literals, terminated string literals). The full STIX 2.1 patterning grammar replaces the body
//! of this function; its callers stay as they are.

/// Checks that `pattern` can be a STIX 2.1 pattern. The error says what is wrong and where.
pub fn check_stix_pattern(pattern: &str) -> Result<(), String> {
    let trimmed = pattern.trim_start();
    if !trimmed.starts_with('[') && !trimmed.starts_with('(') {
        return Err("a pattern starts with an observation expression `[...]`".into());
    }
    let mut depth: Vec<u8> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut saw_observation = false;
    for (offset, byte) in pattern.bytes().enumerate() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'\'') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'\'' => in_string = true,
            b'[' | b'(' => depth.push(byte),
            b']' | b')' => {
                let open = if byte == b']' { b'[' } else { b'(' };
                if depth.pop() != Some(open) {
                    return Err(format!("unbalanced `{}` at byte {offset}", byte as char));
                }
                if byte == b']' {
                    saw_observation = true;
                }
            }
            _ => {}
        }
    }
    if in_string {
        return Err("unterminated string literal".into());
    }
    if !depth.is_empty() {
        return Err("unclosed `[` or `(`".into());
    }
    if !saw_observation {
        return Err("no observation expression `[...]`".into());
    }
    Ok(())
}

/// Validates `pattern` if `pattern_type` says it is a STIX pattern.
pub fn check(pattern: &str, pattern_type: &str) -> Result<(), String> {
    if pattern_type == "stix" {
        check_stix_pattern(pattern)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_patterns() {
        for ok in [
            "[ipv4-addr:value = '6.6.6.6']",
            " [ ipv4-addr:value = '1.1.1.1' ] ",
            "[file:name = 'a]b\\'c']",
            "([a:b = 'c'] AND [d:e = 'f']) WITHIN 5 SECONDS",
            "[url:value = 'http://a/b(c']",
        ] {
            assert_eq!(check_stix_pattern(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn rejects_structurally_broken_patterns() {
        for bad in [
            "",
            "Some string",
            "[]x]",
            "[a:b = 'c'",
            "[a:b = 'c]",
            "ipv4-addr:value = '1'",
            "()",
        ] {
            assert!(check_stix_pattern(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn other_pattern_types_pass_unchecked() {
        assert_eq!(check("alert tcp any any", "suricata"), Ok(()));
        assert!(check("alert tcp any any", "stix").is_err());
    }
}

//! Splits a STIX pattern into tokens exactly where the reference grammar's lexer does.
//!
//! The reference lexer (ANTLR, `STIXPattern.g4` for STIX 2.1) always takes the longest token
//! that any rule matches at the current position and, on a tie, the rule listed first. For this
//! grammar that means:
//!
//! * keywords are upper case (`AND`, `WITHIN`, …), the booleans lower case (`true`, `false`);
//!   a keyword followed by more identifier characters is an identifier (`ANDROID`);
//! * an identifier containing `-` is a separate kind: object types may contain hyphens,
//!   property names may not;
//! * `h'…'`, `b'…'` and `t'…'` are literals only when the whole literal is well formed,
//!   otherwise the letter is an identifier and the quote starts a string;
//! * numbers have no leading zeros (`007` is three tokens) except in the integer part of a
//!   float (`007.5` is one); `+`/`-` belong to the number;
//! * white space (the grammar's set, including several Unicode spaces), `/* … */` and
//!   `// …` comments separate tokens and are otherwise ignored;
//! * every other character is a token of its own that no grammar rule accepts, so the lexer
//!   never fails: the parser reports the unusable token with its offset.
//!
//! Tokens are produced on demand and borrow the pattern text; string contents are decoded only
//! when the parser builds the syntax tree.

/// Keywords of the pattern language. `LAST` is reserved by the grammar but used nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    And,
    Or,
    Not,
    FollowedBy,
    Like,
    Matches,
    IsSuperset,
    IsSubset,
    Exists,
    Last,
    In,
    Start,
    Stop,
    Seconds,
    Within,
    Repeats,
    Times,
}

impl Keyword {
    /// The keyword spelled `word`, if any (keywords are case-sensitive).
    pub(crate) fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "AND" => Self::And,
            "OR" => Self::Or,
            "NOT" => Self::Not,
            "FOLLOWEDBY" => Self::FollowedBy,
            "LIKE" => Self::Like,
            "MATCHES" => Self::Matches,
            "ISSUPERSET" => Self::IsSuperset,
            "ISSUBSET" => Self::IsSubset,
            "EXISTS" => Self::Exists,
            "LAST" => Self::Last,
            "IN" => Self::In,
            "START" => Self::Start,
            "STOP" => Self::Stop,
            "SECONDS" => Self::Seconds,
            "WITHIN" => Self::Within,
            "REPEATS" => Self::Repeats,
            "TIMES" => Self::Times,
            _ => return None,
        })
    }
}

/// Characters that never start or continue a token and carry no meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// A `'` that does not start a complete string literal (no closing quote, or a backslash
    /// followed by something other than `'` or `\`).
    Quote,
    /// `+` or `-` not followed by a number.
    Sign,
    /// `/` that does not start a comment (or starts `/*` without a closing `*/`).
    Slash,
    /// `^`, `!` without `=`, `@`, `"`, a control character, a letter outside ASCII, …
    Other,
}

/// What kind of token; the text is the span `start..end` of the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    LeftBracket,
    RightBracket,
    LeftParen,
    RightParen,
    Colon,
    Dot,
    Comma,
    Asterisk,
    /// `=` or `==`.
    Equal,
    /// `!=` or `<>`.
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Keyword(Keyword),
    /// `[a-zA-Z_][a-zA-Z0-9_]*` that is not a keyword or boolean.
    Identifier,
    /// An identifier that contains at least one `-`.
    HyphenatedIdentifier,
    /// `+`? followed by `0` or a digit run without a leading zero.
    PositiveInteger,
    /// `-` followed by `0` or a digit run without a leading zero.
    NegativeInteger,
    /// `+`? digits* `.` digits+.
    PositiveFloat,
    /// `-` digits* `.` digits+.
    NegativeFloat,
    /// `'…'` with `\'` and `\\` escapes.
    String,
    /// `true` or `false`.
    Bool,
    /// `h'…'` with an even number of hex digits.
    Hex,
    /// `b'…'` with base64 content in complete four-character groups.
    Binary,
    /// `t'YYYY-MM-DDTHH:MM:SS[.s]Z'` with the grammar's ranges per field.
    Timestamp,
    Unusable(Unusable),
    End,
}

/// A token and where it is in the pattern (byte offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The grammar's white space: ASCII space, tab, CR, LF, VT, FF and a set of Unicode spaces.
pub(crate) fn is_pattern_whitespace(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t'
            | '\r'
            | '\n'
            | '\u{0B}'
            | '\u{0C}'
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

fn is_identifier_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_identifier_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// On-demand tokenizer over a pattern.
pub(crate) struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Self {
            src,
            bytes: src.as_bytes(),
            pos: 0,
        }
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos + offset).copied()
    }

    /// Skips white space and comments.
    fn skip_trivia(&mut self) {
        loop {
            let Some(b) = self.peek_at(0) else { return };
            match b {
                b' ' | b'\t' | b'\r' | b'\n' | 0x0B | 0x0C => self.pos += 1,
                b'/' if self.peek_at(1) == Some(b'/') => {
                    // A line comment runs to CR or LF (which is then white space) or the end.
                    let rest = &self.bytes[self.pos..];
                    let len = rest
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(rest.len());
                    self.pos += len;
                }
                b'/' if self.peek_at(1) == Some(b'*') => {
                    // Without a closing `*/` this is no comment: `/` is then a token.
                    match self.src[self.pos + 2..].find("*/") {
                        Some(end) => self.pos += 2 + end + 2,
                        None => return,
                    }
                }
                b if b >= 0x80 => match self.src[self.pos..].chars().next() {
                    Some(c) if is_pattern_whitespace(c) => self.pos += c.len_utf8(),
                    _ => return,
                },
                _ => return,
            }
        }
    }

    /// The next token; after the last one, [`TokenKind::End`] forever.
    pub(crate) fn next_token(&mut self) -> Token {
        self.skip_trivia();
        let start = self.pos;
        let kind = self.scan();
        Token {
            kind,
            start,
            end: self.pos,
        }
    }

    /// Consumes one token starting at `self.pos` (not trivia) and says what it was.
    fn scan(&mut self) -> TokenKind {
        let Some(b) = self.peek_at(0) else {
            return TokenKind::End;
        };
        let single = |lexer: &mut Self, kind| {
            lexer.pos += 1;
            kind
        };
        match b {
            b'[' => single(self, TokenKind::LeftBracket),
            b']' => single(self, TokenKind::RightBracket),
            b'(' => single(self, TokenKind::LeftParen),
            b')' => single(self, TokenKind::RightParen),
            b':' => single(self, TokenKind::Colon),
            b',' => single(self, TokenKind::Comma),
            b'*' => single(self, TokenKind::Asterisk),
            b'=' => {
                self.pos += if self.peek_at(1) == Some(b'=') { 2 } else { 1 };
                TokenKind::Equal
            }
            b'!' if self.peek_at(1) == Some(b'=') => {
                self.pos += 2;
                TokenKind::NotEqual
            }
            b'<' => match self.peek_at(1) {
                Some(b'>') => {
                    self.pos += 2;
                    TokenKind::NotEqual
                }
                Some(b'=') => {
                    self.pos += 2;
                    TokenKind::LessOrEqual
                }
                _ => single(self, TokenKind::Less),
            },
            b'>' => {
                if self.peek_at(1) == Some(b'=') {
                    self.pos += 2;
                    TokenKind::GreaterOrEqual
                } else {
                    single(self, TokenKind::Greater)
                }
            }
            b'\'' => self.string(),
            b'h' | b'b' | b't' if self.peek_at(1) == Some(b'\'') => {
                let body = self.pos + 2;
                let literal = match b {
                    b'h' => self.hex_body(body).map(|end| (end, TokenKind::Hex)),
                    b'b' => self.binary_body(body).map(|end| (end, TokenKind::Binary)),
                    _ => self
                        .timestamp_body(body)
                        .map(|end| (end, TokenKind::Timestamp)),
                };
                match literal {
                    Some((end, kind)) => {
                        self.pos = end;
                        kind
                    }
                    // Not a well-formed literal: the letter alone is an identifier.
                    None => single(self, TokenKind::Identifier),
                }
            }
            b'+' | b'-' | b'.' | b'0'..=b'9' => self.number(),
            b if is_identifier_start(b) => self.word(),
            b'/' => single(self, TokenKind::Unusable(Unusable::Slash)),
            _ => {
                let len = self.src[self.pos..]
                    .chars()
                    .next()
                    .map_or(1, char::len_utf8);
                self.pos += len;
                TokenKind::Unusable(Unusable::Other)
            }
        }
    }

    /// `'…'`: any character but `'` and `\`, or the escapes `\'` and `\\`.
    fn string(&mut self) -> TokenKind {
        let mut i = self.pos + 1;
        loop {
            match self.bytes.get(i) {
                Some(b'\'') => {
                    self.pos = i + 1;
                    return TokenKind::String;
                }
                Some(b'\\') if matches!(self.bytes.get(i + 1), Some(b'\'' | b'\\')) => i += 2,
                Some(b'\\') | None => {
                    // No string literal here: the quote alone is an unusable token.
                    self.pos += 1;
                    return TokenKind::Unusable(Unusable::Quote);
                }
                Some(_) => i += 1,
            }
        }
    }

    /// After `h'`: pairs of hex digits and a closing quote. Returns the end offset.
    fn hex_body(&self, mut i: usize) -> Option<usize> {
        while self.bytes.get(i)?.is_ascii_hexdigit() {
            i += 1;
        }
        let digits = i - self.pos - 2;
        (self.bytes.get(i) == Some(&b'\'') && digits.is_multiple_of(2)).then_some(i + 1)
    }

    /// After `b'`: base64 in groups of four, the last one possibly padded with `=` or `==`,
    /// at least one group, then a closing quote. Returns the end offset.
    fn binary_body(&self, mut i: usize) -> Option<usize> {
        let start = i;
        while is_base64(*self.bytes.get(i)?) {
            i += 1;
        }
        let chars = i - start;
        let padding = match (self.bytes.get(i), self.bytes.get(i + 1)) {
            (Some(b'='), Some(b'=')) => 2,
            (Some(b'='), _) => 1,
            _ => 0,
        };
        let complete = match padding {
            0 => chars > 0 && chars.is_multiple_of(4),
            1 => chars % 4 == 3,
            _ => chars % 4 == 2,
        };
        (complete && self.bytes.get(i + padding) == Some(&b'\'')).then_some(i + padding + 1)
    }

    /// After `t'`: `YYYY-MM-DDTHH:MM:SS[.fraction]Z'` with month 01–12, day 01–31, hour 00–23,
    /// minute 00–59 and second 00–60 (the grammar does not check days per month). Returns the
    /// end offset.
    fn timestamp_body(&self, i: usize) -> Option<usize> {
        let b = |k: usize| self.bytes.get(i + k).copied().unwrap_or(0);
        let digit = |k: usize| b(k).is_ascii_digit();
        let two = |k: usize| (b(k).wrapping_sub(b'0'), b(k + 1).wrapping_sub(b'0'));
        let in_range = |k: usize, low: u8, high: u8| {
            let (tens, ones) = two(k);
            tens <= 9 && ones <= 9 && (low..=high).contains(&(tens * 10 + ones))
        };
        let fixed = (0..4).all(digit)
            && b(4) == b'-'
            && in_range(5, 1, 12)
            && b(7) == b'-'
            && in_range(8, 1, 31)
            && b(10) == b'T'
            && in_range(11, 0, 23)
            && b(13) == b':'
            && in_range(14, 0, 59)
            && b(16) == b':'
            && in_range(17, 0, 60);
        if !fixed {
            return None;
        }
        let mut k = 19;
        if b(k) == b'.' {
            k += 1;
            let first = k;
            while digit(k) {
                k += 1;
            }
            if k == first {
                return None;
            }
        }
        (b(k) == b'Z' && b(k + 1) == b'\'').then_some(i + k + 2)
    }

    /// Integers and floats with an optional sign; a sign or dot alone.
    fn number(&mut self) -> TokenKind {
        let sign = match self.peek_at(0) {
            Some(b'+') => Some(false),
            Some(b'-') => Some(true),
            _ => None,
        };
        let digits_start = self.pos + usize::from(sign.is_some());
        let mut i = digits_start;
        while self.bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let int_digits = i - digits_start;
        let negative = sign == Some(true);
        if self.bytes.get(i) == Some(&b'.') && self.bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
        {
            i += 1;
            while self.bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            self.pos = i;
            return if negative {
                TokenKind::NegativeFloat
            } else {
                TokenKind::PositiveFloat
            };
        }
        if int_digits > 0 {
            // No leading zeros: `0` is a number of its own.
            self.pos = if self.bytes[digits_start] == b'0' {
                digits_start + 1
            } else {
                i
            };
            return if negative {
                TokenKind::NegativeInteger
            } else {
                TokenKind::PositiveInteger
            };
        }
        self.pos += 1;
        if sign.is_some() {
            TokenKind::Unusable(Unusable::Sign)
        } else {
            TokenKind::Dot
        }
    }

    /// Keywords, booleans and identifiers (with or without hyphens).
    fn word(&mut self) -> TokenKind {
        let start = self.pos;
        let mut hyphen = false;
        let mut i = start + 1;
        while let Some(&c) = self.bytes.get(i) {
            if c == b'-' {
                hyphen = true;
            } else if !is_identifier_continue(c) {
                break;
            }
            i += 1;
        }
        self.pos = i;
        if hyphen {
            return TokenKind::HyphenatedIdentifier;
        }
        let word = &self.src[start..i];
        if word == "true" || word == "false" {
            TokenKind::Bool
        } else if let Some(keyword) = Keyword::from_word(word) {
            TokenKind::Keyword(keyword)
        } else {
            TokenKind::Identifier
        }
    }
}

/// Decodes the content of a string literal token (`'…'` with `\'` and `\\`).
pub(crate) fn decode_string(token_text: &str) -> String {
    let inner = &token_text[1..token_text.len() - 1];
    if !inner.contains('\\') {
        return inner.to_owned();
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        // The lexer guarantees that a backslash is followed by `'` or `\`.
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(TokenKind, &str)> {
        let mut lexer = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            let token = lexer.next_token();
            if token.kind == TokenKind::End {
                assert_eq!(token.start, src.len(), "{src:?}: End before the end");
                return out;
            }
            out.push((token.kind, &src[token.start..token.end]));
        }
    }

    use Keyword as K;
    use TokenKind as T;

    #[test]
    fn numbers_follow_longest_match_without_leading_zeros() {
        assert_eq!(
            kinds("007 007.5 -0 +12 1. .5 -.5 1.2.3 + - ."),
            [
                (T::PositiveInteger, "0"),
                (T::PositiveInteger, "0"),
                (T::PositiveInteger, "7"),
                (T::PositiveFloat, "007.5"),
                (T::NegativeInteger, "-0"),
                (T::PositiveInteger, "+12"),
                (T::PositiveInteger, "1"),
                (T::Dot, "."),
                (T::PositiveFloat, ".5"),
                (T::NegativeFloat, "-.5"),
                (T::PositiveFloat, "1.2"),
                (T::PositiveFloat, ".3"),
                (T::Unusable(Unusable::Sign), "+"),
                (T::Unusable(Unusable::Sign), "-"),
                (T::Dot, "."),
            ]
        );
    }

    #[test]
    fn words_are_keywords_only_when_spelled_exactly() {
        assert_eq!(
            kinds("AND and ANDROID AND-x true True false_ ipv4-addr a- LAST 5SECONDS"),
            [
                (T::Keyword(K::And), "AND"),
                (T::Identifier, "and"),
                (T::Identifier, "ANDROID"),
                (T::HyphenatedIdentifier, "AND-x"),
                (T::Bool, "true"),
                (T::Identifier, "True"),
                (T::Identifier, "false_"),
                (T::HyphenatedIdentifier, "ipv4-addr"),
                (T::HyphenatedIdentifier, "a-"),
                (T::Keyword(K::Last), "LAST"),
                (T::PositiveInteger, "5"),
                (T::Keyword(K::Seconds), "SECONDS"),
            ]
        );
    }

    #[test]
    fn prefixed_literals_fall_back_to_identifier_and_string() {
        assert_eq!(
            kinds("h'0aFf' h'abc' h'' b'AAAA' b'AAA=' b'AA==' b'' b'A===' x'00'"),
            [
                (T::Hex, "h'0aFf'"),
                (T::Identifier, "h"),
                (T::String, "'abc'"),
                (T::Hex, "h''"),
                (T::Binary, "b'AAAA'"),
                (T::Binary, "b'AAA='"),
                (T::Binary, "b'AA=='"),
                (T::Identifier, "b"),
                (T::String, "''"),
                (T::Identifier, "b"),
                (T::String, "'A==='"),
                (T::Identifier, "x"),
                (T::String, "'00'"),
            ]
        );
        assert_eq!(
            kinds("t'2020-02-31T23:59:60.5Z' t'2020-13-01T00:00:00Z'"),
            [
                (T::Timestamp, "t'2020-02-31T23:59:60.5Z'"),
                (T::Identifier, "t"),
                (T::String, "'2020-13-01T00:00:00Z'"),
            ]
        );
    }

    #[test]
    fn strings_escapes_and_unusable_quotes() {
        assert_eq!(
            kinds(r"'a\'b\\' 'x\ny'"),
            [
                (T::String, r"'a\'b\\'"),
                (T::Unusable(Unusable::Quote), "'"),
                (T::Identifier, "x"),
                (T::Unusable(Unusable::Other), "\\"),
                (T::Identifier, "ny"),
                (T::Unusable(Unusable::Quote), "'"),
            ]
        );
        assert_eq!(decode_string(r"'a\'b\\c'"), r"a'b\c");
    }

    #[test]
    fn operators_comments_and_unicode_space() {
        assert_eq!(
            kinds("= == != <> < <= > >= ! /* c */ // line\n\u{3000}\u{A0}/ /* open é"),
            [
                (T::Equal, "="),
                (T::Equal, "=="),
                (T::NotEqual, "!="),
                (T::NotEqual, "<>"),
                (T::Less, "<"),
                (T::LessOrEqual, "<="),
                (T::Greater, ">"),
                (T::GreaterOrEqual, ">="),
                (T::Unusable(Unusable::Other), "!"),
                (T::Unusable(Unusable::Slash), "/"),
                (T::Unusable(Unusable::Slash), "/"),
                (T::Asterisk, "*"),
                (T::Identifier, "open"),
                (T::Unusable(Unusable::Other), "é"),
            ]
        );
    }
}

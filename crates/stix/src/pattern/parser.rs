//! Recursive-descent parser for the STIX 2.1 patterning grammar, with the reference
//! validator's extra checks.
//!
//! The grammar (OASIS `STIXPattern.g4` for 2.1, as the reference validator `stix2-patterns`
//! implements it), loosest binding first:
//!
//! ```text
//! pattern      = obs-fby EOF
//! obs-fby      = obs-or  ("FOLLOWEDBY" obs-or)*
//! obs-or       = obs-and ("OR" obs-and)*
//! obs-and      = obs-qual ("AND" obs-qual)*
//! obs-qual     = ("[" cmp-or "]" | "(" obs-fby ")") qualifier*
//! qualifier    = "START" Timestamp "STOP" Timestamp | "WITHIN" (PosInt | PosFloat) "SECONDS"
//!              | "REPEATS" PosInt "TIMES"
//! cmp-or       = cmp-and ("OR" cmp-and)*
//! cmp-and      = test ("AND" test)*
//! test         = path "NOT"? ("=" | "!=") primitive | path "NOT"? ("<" | "<=" | ">" | ">=") orderable
//!              | path "NOT"? "IN" set | path "NOT"? ("LIKE" | "MATCHES" | "ISSUBSET" | "ISSUPERSET") String
//!              | "(" cmp-or ")" | "NOT"? "EXISTS" path
//! path         = (Identifier | HyphenatedIdentifier) ":" (Identifier | String)
//!                ("." (Identifier | String) | "[" (PosInt | NegInt | "*") "]")*
//! set          = "(" (primitive ("," primitive)*)? ")"
//! primitive    = orderable | Bool
//! orderable    = PosInt | NegInt | PosFloat | NegFloat | String | Binary | Hex | Timestamp
//! ```
//!
//! Besides the grammar, the reference validator rejects (and so do we): the same qualifier kind
//! twice directly on a bracketed observation (`[…] WITHIN 1 SECONDS WITHIN 2 SECONDS`; on a
//! parenthesised expression it is allowed), hash values that do not fit their algorithm (see
//! [`super::hashes`]), and a comment before the first `[`.

use super::ast::{
    Comparison, ComparisonExpression, Literal, ObjectPath, ObservationExpression, PathStep,
    Pattern, Qualifier, Test,
};
use super::error::{MAX_NESTING, PatternError, PatternErrorKind};
use super::hashes;
use super::lexer::{
    Keyword, Lexer, Token, TokenKind, Unusable, decode_string, is_pattern_whitespace,
};

type Result<T> = std::result::Result<T, PatternError>;

/// Parses and validates a whole pattern.
pub(crate) fn parse_pattern(src: &str) -> Result<Pattern> {
    let mut parser = Parser::new(src);
    let observation = parser.observation_expressions()?;
    if parser.token.kind != TokenKind::End {
        return Err(
            parser.unexpected("`AND`, `OR`, `FOLLOWEDBY`, a qualifier or the end of the pattern")
        );
    }
    check_no_leading_comment(src)?;
    Ok(Pattern { observation })
}

/// Parses an object path alone, e.g. `file:hashes.'SHA-256'`.
pub(crate) fn parse_object_path(src: &str) -> Result<ObjectPath> {
    let mut parser = Parser::new(src);
    let path = parser.object_path()?;
    if parser.token.kind != TokenKind::End {
        return Err(parser.unexpected("`.`, `[` or the end of the object path"));
    }
    Ok(path)
}

/// The reference validator looks at the raw text: after any `(` and white space the next
/// character must be `[`. In a pattern the grammar accepts, only a comment can be there instead.
fn check_no_leading_comment(src: &str) -> Result<()> {
    let offset = src
        .char_indices()
        .find(|&(_, c)| c != '(' && !is_pattern_whitespace(c))
        .map_or(src.len(), |(i, _)| i);
    if src[offset..].starts_with('[') {
        Ok(())
    } else {
        Err(PatternError::new(
            offset,
            PatternErrorKind::CommentBeforeFirstBracket,
        ))
    }
}

struct Parser<'a> {
    src: &'a str,
    lexer: Lexer<'a>,
    /// The current, not yet consumed token.
    token: Token,
    /// Open parentheses and brackets around the current position.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        let mut lexer = Lexer::new(src);
        let token = lexer.next_token();
        Self {
            src,
            lexer,
            token,
            depth: 0,
        }
    }

    /// Consumes the current token and returns it.
    fn bump(&mut self) -> Token {
        let token = self.token;
        self.token = self.lexer.next_token();
        token
    }

    fn text(&self, token: Token) -> &'a str {
        &self.src[token.start..token.end]
    }

    fn at_keyword(&self, keyword: Keyword) -> bool {
        self.token.kind == TokenKind::Keyword(keyword)
    }

    /// An error at the current token: `expected` there, found the token.
    fn unexpected(&self, expected: &'static str) -> PatternError {
        PatternError::new(
            self.token.start,
            PatternErrorKind::Unexpected {
                expected,
                found: self.describe(self.token),
            },
        )
    }

    /// Consumes a token of `kind` or fails saying `expected`.
    fn expect(&mut self, kind: TokenKind, expected: &'static str) -> Result<Token> {
        if self.token.kind == kind {
            Ok(self.bump())
        } else {
            Err(self.unexpected(expected))
        }
    }

    /// Describes a token for an error message.
    fn describe(&self, token: Token) -> String {
        let text = self.text(token);
        let shown = || {
            let mut short: String = text.chars().take(40).collect();
            if short.len() < text.len() {
                short.push('…');
            }
            short
        };
        match token.kind {
            TokenKind::End => "the end of the pattern".into(),
            TokenKind::Keyword(_) => format!("keyword `{text}`"),
            TokenKind::Identifier | TokenKind::HyphenatedIdentifier => {
                format!("identifier `{}`", shown())
            }
            TokenKind::PositiveInteger | TokenKind::NegativeInteger => {
                format!("integer `{}`", shown())
            }
            TokenKind::PositiveFloat | TokenKind::NegativeFloat => format!("float `{}`", shown()),
            TokenKind::String => format!("string `{}`", shown()),
            TokenKind::Bool => format!("boolean `{text}`"),
            TokenKind::Hex => "hex literal".into(),
            TokenKind::Binary => "binary literal".into(),
            TokenKind::Timestamp => format!("timestamp `{text}`"),
            TokenKind::Unusable(Unusable::Quote) => {
                "`'` that starts no string (unterminated, or an escape other than \\' and \\\\)"
                    .into()
            }
            TokenKind::Unusable(Unusable::Slash) => "`/` (not a complete comment)".into(),
            TokenKind::Unusable(_) => format!("unexpected character {text:?}"),
            _ => format!("`{text}`"),
        }
    }

    /// Enters a parenthesis or bracket, failing beyond [`MAX_NESTING`].
    fn enter_group(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(PatternError::new(
                self.token.start,
                PatternErrorKind::TooDeep,
            ));
        }
        Ok(())
    }

    /// Consumes the closing token of a group.
    fn leave_group(&mut self, close: TokenKind, expected: &'static str) -> Result<()> {
        self.expect(close, expected)?;
        self.depth -= 1;
        Ok(())
    }

    /// `operand (op operand)*` for the given binary operators, loosest first, built into flat
    /// lists by [`combine`]. Parsing a flat run in a loop keeps the recursion depth at two
    /// frames per parenthesis, however many operators there are.
    fn operator_run<T>(
        &mut self,
        keywords: &[Keyword],
        mut operand: impl FnMut(&mut Self) -> Result<T>,
        lists: &[fn(Vec<T>) -> T],
    ) -> Result<T> {
        let first = operand(self)?;
        let mut rest = Vec::new();
        while let TokenKind::Keyword(keyword) = self.token.kind {
            let Some(level) = keywords.iter().position(|&k| k == keyword) else {
                break;
            };
            self.bump();
            rest.push((level, operand(self)?));
        }
        Ok(combine(first, rest, 0, lists))
    }

    /// `a FOLLOWEDBY b`, `a OR b`, `a AND b` over qualified observations.
    fn observation_expressions(&mut self) -> Result<ObservationExpression> {
        self.operator_run(
            &[Keyword::FollowedBy, Keyword::Or, Keyword::And],
            Self::qualified_observation,
            &[
                ObservationExpression::FollowedBy,
                ObservationExpression::Or,
                ObservationExpression::And,
            ],
        )
    }

    /// `[…]` or `(…)`, then any qualifiers.
    ///
    /// This function, [`Self::observation_expressions`] and [`Self::operator_run`] recurse once
    /// per parenthesis; the work is done in helpers so that their frames stay small.
    fn qualified_observation(&mut self) -> Result<ObservationExpression> {
        let bracketed = match self.token.kind {
            TokenKind::LeftBracket => true,
            TokenKind::LeftParen => false,
            _ => return Err(self.unexpected("`[` or `(`")),
        };
        self.enter_group()?;
        self.bump();
        let expression = if bracketed {
            self.bracketed_observation()?
        } else {
            self.observation_expressions()?
        };
        self.close_observation(expression, bracketed)
    }

    /// The comparison expression inside `[…]`, up to but not including the `]`.
    fn bracketed_observation(&mut self) -> Result<ObservationExpression> {
        self.comparison_expression()
            .map(ObservationExpression::Observation)
    }

    /// Consumes the `]` or `)` closing an observation and the qualifiers after it.
    fn close_observation(
        &mut self,
        expression: ObservationExpression,
        bracketed: bool,
    ) -> Result<ObservationExpression> {
        if bracketed {
            self.leave_group(TokenKind::RightBracket, "`]`, `AND` or `OR`")?;
        } else {
            self.leave_group(
                TokenKind::RightParen,
                "`)`, `AND`, `OR`, `FOLLOWEDBY` or a qualifier",
            )?;
        }
        let qualifiers = self.qualifiers(bracketed)?;
        Ok(if qualifiers.is_empty() {
            expression
        } else {
            ObservationExpression::Qualified {
                expression: Box::new(expression),
                qualifiers,
            }
        })
    }

    /// Qualifiers after an observation expression; on a `[…]` (`bracketed`) each kind at most
    /// once. (A function of its own keeps the recursive path's stack frames small.)
    fn qualifiers(&mut self, bracketed: bool) -> Result<Vec<Qualifier>> {
        let mut qualifiers: Vec<Qualifier> = Vec::new();
        loop {
            let start = self.token.start;
            let qualifier = match self.token.kind {
                TokenKind::Keyword(Keyword::Start) => self.start_stop()?,
                TokenKind::Keyword(Keyword::Within) => self.within()?,
                TokenKind::Keyword(Keyword::Repeats) => self.repeats()?,
                _ => return Ok(qualifiers),
            };
            if bracketed
                && qualifiers
                    .iter()
                    .any(|q| q.keyword() == qualifier.keyword())
            {
                return Err(PatternError::new(
                    start,
                    PatternErrorKind::DuplicateQualifier {
                        keyword: qualifier.keyword(),
                    },
                ));
            }
            qualifiers.push(qualifier);
        }
    }

    /// The text between the quotes of a timestamp token.
    fn timestamp_text(&self, token: Token) -> String {
        let text = self.text(token);
        text[2..text.len() - 1].to_owned()
    }

    fn start_stop(&mut self) -> Result<Qualifier> {
        self.bump();
        let start = self.expect(TokenKind::Timestamp, "a timestamp `t'…'` after `START`")?;
        self.expect(TokenKind::Keyword(Keyword::Stop), "`STOP`")?;
        let stop = self.expect(TokenKind::Timestamp, "a timestamp `t'…'` after `STOP`")?;
        Ok(Qualifier::StartStop {
            start: self.timestamp_text(start),
            stop: self.timestamp_text(stop),
        })
    }

    fn within(&mut self) -> Result<Qualifier> {
        self.bump();
        let seconds = match self.token.kind {
            TokenKind::PositiveInteger | TokenKind::PositiveFloat => self.bump(),
            _ => return Err(self.unexpected("a non-negative number of seconds")),
        };
        self.expect(TokenKind::Keyword(Keyword::Seconds), "`SECONDS`")?;
        Ok(Qualifier::Within {
            seconds: self.text(seconds).to_owned(),
        })
    }

    fn repeats(&mut self) -> Result<Qualifier> {
        self.bump();
        let times = self.expect(
            TokenKind::PositiveInteger,
            "a non-negative integer after `REPEATS`",
        )?;
        self.expect(TokenKind::Keyword(Keyword::Times), "`TIMES`")?;
        Ok(Qualifier::Repeats {
            times: self.text(times).to_owned(),
        })
    }

    /// `a OR b`, `a AND b` over comparisons.
    fn comparison_expression(&mut self) -> Result<ComparisonExpression> {
        self.operator_run(
            &[Keyword::Or, Keyword::And],
            Self::comparison,
            &[ComparisonExpression::Or, ComparisonExpression::And],
        )
    }

    /// One comparison, or a parenthesised comparison expression.
    fn comparison(&mut self) -> Result<ComparisonExpression> {
        if self.token.kind != TokenKind::LeftParen {
            return self
                .single_comparison()
                .map(|comparison| ComparisonExpression::Comparison(Box::new(comparison)));
        }
        self.enter_group()?;
        self.bump();
        let inner = self.comparison_expression()?;
        self.leave_group(TokenKind::RightParen, "`)`, `AND` or `OR`")?;
        Ok(inner)
    }

    /// `path [NOT] op value` or `[NOT] EXISTS path`. (Not inlined into [`Self::comparison`],
    /// so that its locals stay off the recursive path's stack frames.)
    fn single_comparison(&mut self) -> Result<Comparison> {
        match self.token.kind {
            TokenKind::Keyword(Keyword::Not | Keyword::Exists) => {
                let negated = self.at_keyword(Keyword::Not);
                if negated {
                    self.bump();
                }
                self.expect(TokenKind::Keyword(Keyword::Exists), "`EXISTS`")?;
                let path = self.object_path()?;
                Ok(Comparison {
                    path,
                    negated,
                    test: Test::Exists,
                })
            }
            TokenKind::Identifier | TokenKind::HyphenatedIdentifier => {
                let path = self.object_path()?;
                let negated = self.at_keyword(Keyword::Not);
                if negated {
                    self.bump();
                }
                let (test, value_offset) = self.test()?;
                let comparison = Comparison {
                    path,
                    negated,
                    test,
                };
                hashes::check_comparison(&comparison)
                    .map_err(|kind| PatternError::new(value_offset, kind))?;
                Ok(comparison)
            }
            _ => Err(self.unexpected("an object path, `(`, `NOT` or `EXISTS`")),
        }
    }

    /// An operator and its operand, and the offset where the operand starts.
    fn test(&mut self) -> Result<(Test, usize)> {
        /// What follows an operator, and how the test is built from it.
        enum Operand {
            Literal {
                allow_bool: bool,
                make: fn(Literal) -> Test,
            },
            Set,
            String(fn(String) -> Test),
        }
        let literal = |allow_bool, make| Operand::Literal { allow_bool, make };
        let operand = match self.token.kind {
            TokenKind::Equal => literal(true, Test::Equal),
            TokenKind::NotEqual => literal(true, Test::NotEqual),
            TokenKind::Less => literal(false, Test::Less),
            TokenKind::LessOrEqual => literal(false, Test::LessOrEqual),
            TokenKind::Greater => literal(false, Test::Greater),
            TokenKind::GreaterOrEqual => literal(false, Test::GreaterOrEqual),
            TokenKind::Keyword(Keyword::In) => Operand::Set,
            TokenKind::Keyword(Keyword::Like) => Operand::String(Test::Like),
            TokenKind::Keyword(Keyword::Matches) => Operand::String(Test::Matches),
            TokenKind::Keyword(Keyword::IsSubset) => Operand::String(Test::IsSubset),
            TokenKind::Keyword(Keyword::IsSuperset) => Operand::String(Test::IsSuperset),
            _ => {
                return Err(self.unexpected(
                    "`NOT` or a comparison operator (=, !=, <, <=, >, >=, IN, LIKE, MATCHES, ISSUBSET, ISSUPERSET)",
                ));
            }
        };
        self.bump();
        let value_offset = self.token.start;
        let test = match operand {
            Operand::Literal { allow_bool, make } => make(self.literal(allow_bool)?),
            Operand::Set => Test::In(self.set()?),
            Operand::String(make) => {
                let token = self.expect(TokenKind::String, "a string literal")?;
                make(decode_string(self.text(token)))
            }
        };
        Ok((test, value_offset))
    }

    /// `(a, b, …)` or `()`.
    fn set(&mut self) -> Result<Vec<Literal>> {
        self.expect(TokenKind::LeftParen, "`(` starting a list of values")?;
        let mut values = Vec::new();
        if self.token.kind == TokenKind::RightParen {
            self.bump();
            return Ok(values);
        }
        loop {
            values.push(self.literal(true)?);
            match self.token.kind {
                TokenKind::Comma => {
                    self.bump();
                }
                TokenKind::RightParen => {
                    self.bump();
                    return Ok(values);
                }
                _ => return Err(self.unexpected("`,` or `)`")),
            }
        }
    }

    /// A literal; booleans only where `allow_bool` (not after `<`, `<=`, `>`, `>=`).
    fn literal(&mut self, allow_bool: bool) -> Result<Literal> {
        let token = self.token;
        let text = self.text(token);
        let literal = match token.kind {
            TokenKind::PositiveInteger | TokenKind::NegativeInteger => {
                Literal::Integer(text.to_owned())
            }
            TokenKind::PositiveFloat | TokenKind::NegativeFloat => Literal::Float(text.to_owned()),
            TokenKind::String => Literal::String(decode_string(text)),
            TokenKind::Bool if allow_bool => Literal::Bool(text == "true"),
            TokenKind::Binary => Literal::Binary(text[2..text.len() - 1].to_owned()),
            TokenKind::Hex => Literal::Hex(text[2..text.len() - 1].to_owned()),
            TokenKind::Timestamp => Literal::Timestamp(text[2..text.len() - 1].to_owned()),
            _ if allow_bool => return Err(self.unexpected("a literal value")),
            _ => return Err(self.unexpected("a number, string, binary, hex or timestamp literal")),
        };
        self.bump();
        Ok(literal)
    }

    /// A property name: an identifier without hyphens or a quoted string.
    fn key(&mut self, expected: &'static str) -> Result<String> {
        match self.token.kind {
            TokenKind::Identifier => {
                let token = self.bump();
                Ok(self.text(token).to_owned())
            }
            TokenKind::String => {
                let token = self.bump();
                Ok(decode_string(self.text(token)))
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    fn object_path(&mut self) -> Result<ObjectPath> {
        let object_type = match self.token.kind {
            TokenKind::Identifier | TokenKind::HyphenatedIdentifier => {
                let token = self.bump();
                self.text(token).to_owned()
            }
            _ => return Err(self.unexpected("an object type")),
        };
        self.expect(TokenKind::Colon, "`:` after the object type")?;
        let property = self.key("a property name (without `-`, or quoted)")?;
        let mut steps = Vec::new();
        loop {
            match self.token.kind {
                TokenKind::Dot => {
                    self.bump();
                    steps.push(PathStep::Key(
                        self.key("a property name (without `-`, or quoted)")?,
                    ));
                }
                TokenKind::LeftBracket => {
                    self.bump();
                    let step = match self.token.kind {
                        TokenKind::PositiveInteger | TokenKind::NegativeInteger => {
                            let token = self.bump();
                            PathStep::Index(self.text(token).to_owned())
                        }
                        TokenKind::Asterisk => {
                            self.bump();
                            PathStep::AnyIndex
                        }
                        _ => return Err(self.unexpected("a list index or `*`")),
                    };
                    self.expect(TokenKind::RightBracket, "`]`")?;
                    steps.push(step);
                }
                _ => break,
            }
        }
        Ok(ObjectPath {
            object_type,
            property,
            steps,
        })
    }
}

/// Builds `first` followed by `(operator level, operand)` pairs into flat lists, operators of
/// level 0 binding loosest: `a AND b OR c` (levels Or = 0, And = 1) becomes `Or[And[a, b], c]`.
fn combine<T>(first: T, rest: Vec<(usize, T)>, level: usize, lists: &[fn(Vec<T>) -> T]) -> T {
    let Some(make_list) = lists.get(level) else {
        // Past the tightest operator `rest` is empty.
        return first;
    };
    let mut items = Vec::new();
    let mut head = first;
    let mut tail = Vec::new();
    for (operator_level, operand) in rest {
        if operator_level == level {
            items.push(combine(head, std::mem::take(&mut tail), level + 1, lists));
            head = operand;
        } else {
            tail.push((operator_level, operand));
        }
    }
    let last = combine(head, tail, level + 1, lists);
    if items.is_empty() {
        last
    } else {
        items.push(last);
        make_list(items)
    }
}

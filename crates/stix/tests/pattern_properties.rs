//! Property tests of the STIX pattern parser and printer: any syntax tree prints as text that
//! parses back to the same tree; arbitrary text never panics the parser, and what it accepts
//! survives print → parse; a single equality is a point IoC with the same value.

use proptest::prelude::*;
use threatbus_stix::pattern::{
    self, Comparison, ComparisonExpression, Literal, ObjectPath, ObservationExpression, PathStep,
    Pattern, Qualifier, Test,
};

fn object_type() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_-]{0,10}".prop_filter("booleans are not identifiers", |t| {
        t != "true" && t != "false"
    })
}

/// Any property name: the printer quotes what is not a plain identifier. `hashes` is left out
/// so that hash-value checks do not apply to random values.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
        any::<String>(),
        Just("AND".to_owned()),
        Just("true".to_owned()),
        Just(String::new()),
    ]
    .prop_filter("no hash checks", |k| k != "hashes")
}

fn integer() -> impl Strategy<Value = String> {
    "[+-]?(0|[1-9][0-9]{0,24})"
}

fn non_negative_integer() -> impl Strategy<Value = String> {
    "[+]?(0|[1-9][0-9]{0,12})"
}

fn float() -> impl Strategy<Value = String> {
    "[+-]?[0-9]{0,6}\\.[0-9]{1,6}"
}

fn timestamp() -> impl Strategy<Value = String> {
    (
        (0u32..10000, 1u32..=12, 1u32..=31),
        (0u32..=23, 0u32..=59, 0u32..=60),
        proptest::option::of("[0-9]{1,9}"),
    )
        .prop_map(|((y, mo, d), (h, mi, s), fraction)| {
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{fraction}Z")
        })
}

fn binary() -> impl Strategy<Value = String> {
    (
        "([A-Za-z0-9+/]{4}){0,4}",
        prop_oneof![
            "[A-Za-z0-9+/]{4}",
            "[A-Za-z0-9+/]{3}=",
            "[A-Za-z0-9+/]{2}=="
        ],
    )
        .prop_map(|(groups, last)| groups + &last)
}

fn literal(allow_bool: bool) -> BoxedStrategy<Literal> {
    let orderable = prop_oneof![
        integer().prop_map(Literal::Integer),
        float().prop_map(Literal::Float),
        any::<String>().prop_map(Literal::String),
        binary().prop_map(Literal::Binary),
        "([0-9a-fA-F]{2}){0,8}".prop_map(Literal::Hex),
        timestamp().prop_map(Literal::Timestamp),
    ];
    if allow_bool {
        prop_oneof![4 => orderable, 1 => any::<bool>().prop_map(Literal::Bool)].boxed()
    } else {
        orderable.boxed()
    }
}

fn object_path() -> impl Strategy<Value = ObjectPath> {
    let step = prop_oneof![
        key().prop_map(PathStep::Key),
        integer().prop_map(PathStep::Index),
        Just(PathStep::AnyIndex),
    ];
    (object_type(), key(), proptest::collection::vec(step, 0..4)).prop_map(
        |(object_type, property, steps)| ObjectPath {
            object_type,
            property,
            steps,
        },
    )
}

fn test() -> impl Strategy<Value = Test> {
    prop_oneof![
        literal(true).prop_map(Test::Equal),
        literal(true).prop_map(Test::NotEqual),
        literal(false).prop_map(Test::Less),
        literal(false).prop_map(Test::LessOrEqual),
        literal(false).prop_map(Test::Greater),
        literal(false).prop_map(Test::GreaterOrEqual),
        proptest::collection::vec(literal(true), 0..4).prop_map(Test::In),
        any::<String>().prop_map(Test::Like),
        any::<String>().prop_map(Test::Matches),
        any::<String>().prop_map(Test::IsSubset),
        any::<String>().prop_map(Test::IsSuperset),
        Just(Test::Exists),
    ]
}

fn comparison_expression() -> impl Strategy<Value = ComparisonExpression> {
    let leaf = (object_path(), any::<bool>(), test()).prop_map(|(path, negated, test)| {
        ComparisonExpression::Comparison(Box::new(Comparison {
            path,
            negated,
            test,
        }))
    });
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 2..4).prop_map(ComparisonExpression::And),
            proptest::collection::vec(inner, 2..4).prop_map(ComparisonExpression::Or),
        ]
    })
}

fn qualifier() -> impl Strategy<Value = Qualifier> {
    prop_oneof![
        prop_oneof![
            non_negative_integer(),
            "[+]?[0-9]{0,4}\\.[0-9]{1,4}".boxed()
        ]
        .prop_map(|seconds| Qualifier::Within { seconds }),
        non_negative_integer().prop_map(|times| Qualifier::Repeats { times }),
        (timestamp(), timestamp()).prop_map(|(start, stop)| Qualifier::StartStop { start, stop }),
    ]
}

fn observation_expression() -> impl Strategy<Value = ObservationExpression> {
    let leaf = comparison_expression().prop_map(ObservationExpression::Observation);
    leaf.prop_recursive(4, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 2..4).prop_map(ObservationExpression::And),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(ObservationExpression::Or),
            proptest::collection::vec(inner.clone(), 2..4)
                .prop_map(ObservationExpression::FollowedBy),
            (inner, proptest::collection::vec(qualifier(), 1..4)).prop_map(
                |(expression, qualifiers)| ObservationExpression::Qualified {
                    expression: Box::new(expression),
                    qualifiers,
                }
            ),
        ]
    })
}

/// Text that often looks like a pattern: fragments of pattern syntax glued together.
fn pattern_like_text() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("["),
        Just("]"),
        Just("("),
        Just(")"),
        Just("a:b"),
        Just("x-y:'z'"),
        Just(".c"),
        Just("[0]"),
        Just("[*]"),
        Just(" = "),
        Just(" != "),
        Just(" > "),
        Just(" IN "),
        Just(" LIKE "),
        Just(" AND "),
        Just(" OR "),
        Just(" NOT "),
        Just(" FOLLOWEDBY "),
        Just("EXISTS "),
        Just(" WITHIN 5 SECONDS"),
        Just(" REPEATS 2 TIMES"),
        Just(" START t'2020-01-01T00:00:00Z' STOP t'2020-01-01T00:00:01Z'"),
        Just("'s'"),
        Just("'\\''"),
        Just("1"),
        Just("-1.5"),
        Just("true"),
        Just("h'00'"),
        Just("b'AAAA'"),
        Just(","),
        Just("/* c */"),
        Just("'"),
        Just("\\"),
        Just(" "),
    ];
    proptest::collection::vec(fragment, 0..24).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn printed_trees_parse_back_to_the_same_tree(observation in observation_expression()) {
        let tree = Pattern { observation };
        let text = tree.to_string();
        prop_assert_eq!(pattern::parse(&text), Ok(tree), "{}", text);
    }

    #[test]
    fn arbitrary_text_never_panics_and_round_trips(text in any::<String>()) {
        if let Ok(tree) = pattern::parse(&text) {
            prop_assert_eq!(pattern::parse(&tree.to_string()), Ok(tree));
        }
    }

    #[test]
    fn pattern_like_text_round_trips(text in pattern_like_text()) {
        match pattern::parse(&text) {
            Ok(tree) => {
                let printed = tree.to_string();
                prop_assert_eq!(pattern::parse(&printed), Ok(tree.clone()), "{}", printed);
                let _ = tree.point_ioc();
            }
            Err(error) => prop_assert!(error.offset <= text.len()),
        }
    }

    #[test]
    fn a_single_equality_is_a_point_ioc(path in object_path(), value in literal(true)) {
        let text = Pattern {
            observation: ObservationExpression::Observation(ComparisonExpression::Comparison(Box::new(
                Comparison { path: path.clone(), negated: false, test: Test::Equal(value.clone()) },
            ))),
        }
        .to_string();
        let ioc = pattern::point_ioc(&text);
        prop_assert_eq!(ioc.map(|i| (i.path, i.value)), Some((path.normalized(), value)));
        let spaced = format!("  ({text})\n");
        prop_assert!(pattern::is_point_ioc(&spaced));
    }
}

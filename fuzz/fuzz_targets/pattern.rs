//! Fuzzes the STIX pattern parser: no input may panic, hang or overflow the stack; an error
//! points into the input; an accepted pattern prints as text that parses back to the same tree
//! and prints the same again; the point-IoC helpers agree with the tree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use threatbus_stix::pattern;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match pattern::parse(text) {
        Ok(tree) => {
            let printed = tree.to_string();
            let reparsed = match pattern::parse(&printed) {
                Ok(reparsed) => reparsed,
                Err(e) => panic!("{text:?} printed as {printed:?}, which fails: {e}"),
            };
            assert_eq!(reparsed, tree, "{text:?} printed as {printed:?}");
            assert_eq!(reparsed.to_string(), printed);
            assert_eq!(pattern::point_ioc(text), tree.point_ioc());
            assert_eq!(pattern::check(text, "stix"), Ok(()));
        }
        Err(error) => {
            assert!(text.is_char_boundary(error.offset), "{error} in {text:?}");
            assert!(!error.to_string().is_empty());
            assert!(!pattern::is_point_ioc(text));
        }
    }
});

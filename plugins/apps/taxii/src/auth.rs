//! HTTP Basic authentication against the configured users.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::config::User;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user name, or `-` when no users are configured (anonymous reads).
    pub name: String,
    pub write: bool,
}

/// Why a request is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No `Authorization` header, or not a Basic one.
    NoCredentials,
    /// An unknown user or a wrong password.
    WrongCredentials,
}

/// Checks the `Authorization` header. Without configured users everybody reads and nobody
/// writes.
pub fn authenticate(
    users: &BTreeMap<String, User>,
    authorization: Option<&[u8]>,
) -> Result<Caller, Refused> {
    if users.is_empty() {
        return Ok(Caller {
            name: "-".into(),
            write: false,
        });
    }
    let header = authorization.ok_or(Refused::NoCredentials)?;
    let header = std::str::from_utf8(header).map_err(|_| Refused::WrongCredentials)?;
    let (scheme, encoded) = header
        .trim()
        .split_once(' ')
        .ok_or(Refused::NoCredentials)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Refused::NoCredentials);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| Refused::WrongCredentials)?;
    let decoded = String::from_utf8(decoded).map_err(|_| Refused::WrongCredentials)?;
    let (name, password) = decoded.split_once(':').ok_or(Refused::WrongCredentials)?;
    let user = users.get(name).ok_or(Refused::WrongCredentials)?;
    if !same(user.password.as_bytes(), password.as_bytes()) {
        return Err(Refused::WrongCredentials);
    }
    Ok(Caller {
        name: name.to_owned(),
        write: user.write,
    })
}

/// Compares without stopping at the first difference, so that the time taken does not tell
/// how much of a guessed password was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        difference |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> BTreeMap<String, User> {
        BTreeMap::from([
            (
                "reader".to_owned(),
                User {
                    password: "r-pass".into(),
                    write: false,
                },
            ),
            (
                "writer".to_owned(),
                User {
                    password: "w:pass".into(),
                    write: true,
                },
            ),
        ])
    }

    fn basic(credentials: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
        .into_bytes()
    }

    #[test]
    fn users_passwords_and_refusals() {
        let users = users();
        let reader = authenticate(&users, Some(&basic("reader:r-pass"))).unwrap();
        assert_eq!((reader.name.as_str(), reader.write), ("reader", false));
        // A password may hold a colon.
        assert!(
            authenticate(&users, Some(&basic("writer:w:pass")))
                .unwrap()
                .write
        );
        assert_eq!(authenticate(&users, None), Err(Refused::NoCredentials));
        assert_eq!(
            authenticate(&users, Some(b"Bearer abc")),
            Err(Refused::NoCredentials)
        );
        for wrong in [
            "reader:r-pas",
            "reader:r-passs",
            "nobody:r-pass",
            "reader",
            ":",
        ] {
            assert_eq!(
                authenticate(&users, Some(&basic(wrong))),
                Err(Refused::WrongCredentials),
                "{wrong}"
            );
        }
        assert_eq!(
            authenticate(&users, Some(b"Basic ")),
            Err(Refused::NoCredentials)
        );
        assert_eq!(
            authenticate(&users, Some(b"Basic !!!")),
            Err(Refused::WrongCredentials)
        );
        let anonymous = authenticate(&BTreeMap::new(), None).unwrap();
        assert!(!anonymous.write);
    }
}

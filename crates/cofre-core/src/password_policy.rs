//! The password policy for secrets Cofre makes for targets (rotation): how long, which character
//! classes must appear, which characters never. Pure: the generator (cofre-crypto) draws from
//! [`PasswordPolicy::classes`], and [`PasswordPolicy::admits`] is what its property test holds it to.

use crate::FieldError;
use serde::{Deserialize, Serialize};

pub const MIN_LENGTH: usize = 12;
pub const MAX_LENGTH: usize = 128;
/// A policy must leave at least this much entropy (bits) in what it generates: a policy so narrow
/// that a target's password becomes guessable is refused, whoever sets it.
pub const MIN_ENTROPY_BITS: f64 = 64.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Upper,
    Lower,
    Digit,
    Symbol,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Upper, Class::Lower, Class::Digit, Class::Symbol];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Upper => "upper",
            Class::Lower => "lower",
            Class::Digit => "digit",
            Class::Symbol => "symbol",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The class's characters: printable ASCII only, so every target's tools (a terminal for
    /// `passwd`, `chpasswd`'s stdin) pass them through unchanged. No space: it is trimmed by some.
    pub fn chars(self) -> impl Iterator<Item = u8> {
        let all = 0x21u8..=0x7e;
        all.filter(move |b| match self {
            Class::Upper => b.is_ascii_uppercase(),
            Class::Lower => b.is_ascii_lowercase(),
            Class::Digit => b.is_ascii_digit(),
            Class::Symbol => b.is_ascii_punctuation(),
        })
    }

    fn of(b: u8) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.chars().any(|x| x == b))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPolicy {
    pub length: usize,
    /// Every one appears at least once; no other class appears.
    pub classes: Vec<Class>,
    /// Characters never used (e.g. quotes a target's tooling mishandles).
    pub exclude: String,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            length: 24,
            classes: Class::ALL.to_vec(),
            exclude: String::new(),
        }
    }
}

impl PasswordPolicy {
    /// Validates a policy as given (`classes` as `upper,lower,digit,symbol`), naming the field.
    pub fn new(length: usize, classes: &str, exclude: &str) -> Result<PasswordPolicy, FieldError> {
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
            return Err(FieldError::new(
                "length",
                format!("must be between {MIN_LENGTH} and {MAX_LENGTH}"),
            ));
        }
        let mut parsed = Vec::new();
        for c in classes.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let class = Class::parse(c).ok_or_else(|| {
                FieldError::new(
                    "classes",
                    format!("{c:?} is not one of upper, lower, digit, symbol"),
                )
            })?;
            parsed.push(class);
        }
        parsed.sort();
        parsed.dedup();
        if parsed.is_empty() {
            return Err(FieldError::new(
                "classes",
                "at least one of upper, lower, digit, symbol",
            ));
        }
        if let Some(bad) = exclude.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(FieldError::new(
                "exclude",
                format!("{bad:?} is not a printable ASCII character (only those are generated)"),
            ));
        }
        let mut ex: Vec<char> = exclude.chars().collect();
        ex.sort_unstable();
        ex.dedup();
        let policy = PasswordPolicy {
            length,
            classes: parsed,
            exclude: ex.into_iter().collect(),
        };
        for (class, chars) in policy.classes() {
            if chars.is_empty() {
                return Err(FieldError::new(
                    "exclude",
                    format!("excludes every {} character", class.as_str()),
                ));
            }
        }
        if policy.entropy_bits() < MIN_ENTROPY_BITS {
            return Err(FieldError::new(
                "length",
                format!(
                    "{length} characters from {} leave {:.0} bits of entropy; at least {MIN_ENTROPY_BITS:.0} are needed (longer, or more classes)",
                    policy.alphabet().len(),
                    policy.entropy_bits()
                ),
            ));
        }
        Ok(policy)
    }

    /// Each required class with the characters it may use (exclusions removed).
    pub fn classes(&self) -> Vec<(Class, Vec<u8>)> {
        self.classes
            .iter()
            .map(|&c| {
                (
                    c,
                    c.chars()
                        .filter(|b| !self.exclude.as_bytes().contains(b))
                        .collect(),
                )
            })
            .collect()
    }

    /// Every character a generated password may contain.
    pub fn alphabet(&self) -> Vec<u8> {
        self.classes().into_iter().flat_map(|(_, c)| c).collect()
    }

    /// A lower bound: `length` uniform draws from the alphabet, less what the one-of-each rule
    /// costs (at most `log2` of the classes' count per required class; ignored as small).
    pub fn entropy_bits(&self) -> f64 {
        let n = self.alphabet().len();
        if n < 2 {
            return 0.0;
        }
        self.length as f64 * (n as f64).log2()
    }

    /// Whether `password` follows this policy: its length, one of each class, nothing else.
    pub fn admits(&self, password: &str) -> bool {
        let bytes = password.as_bytes();
        let alphabet = self.alphabet();
        bytes.len() == self.length
            && bytes.iter().all(|b| alphabet.contains(b))
            && self
                .classes
                .iter()
                .all(|&c| bytes.iter().any(|&b| Class::of(b) == Some(c)))
    }

    /// `upper,lower,digit,symbol`, as `set --classes` takes it.
    pub fn classes_text(&self) -> String {
        self.classes
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_names_the_field_it_refuses() {
        assert_eq!(
            PasswordPolicy::new(8, "upper", "").unwrap_err().field,
            "length"
        );
        assert_eq!(
            PasswordPolicy::new(24, "upper,emoji", "")
                .unwrap_err()
                .field,
            "classes"
        );
        assert_eq!(
            PasswordPolicy::new(24, "", "").unwrap_err().field,
            "classes"
        );
        assert_eq!(
            PasswordPolicy::new(24, "digit", "0123456789")
                .unwrap_err()
                .field,
            "exclude"
        );
        assert_eq!(
            PasswordPolicy::new(24, "digit", "é").unwrap_err().field,
            "exclude"
        );
        // 16 digits are 53 bits: too few.
        assert_eq!(
            PasswordPolicy::new(16, "digit", "").unwrap_err().field,
            "length"
        );
        assert!(PasswordPolicy::new(20, "digit", "").is_ok());
    }

    #[test]
    fn excluded_characters_leave_the_alphabet() {
        let p = PasswordPolicy::new(24, "symbol,lower", "'\"\\").unwrap();
        let a = p.alphabet();
        assert!(!a.contains(&b'\'') && !a.contains(&b'"') && !a.contains(&b'\\'));
        assert!(a.contains(&b'a') && a.contains(&b'!'));
        assert!(!a.contains(&b'A') && !a.contains(&b'0'));
        assert_eq!(p.classes_text(), "lower,symbol");
        assert!(p.admits("abcdefghijklmnopqrstuvw!"));
        assert!(!p.admits("abcdefghijklmnopqrstuvwx"), "no symbol");
        assert!(!p.admits("abcdefghijklmnopqrstuvw'"), "excluded");
        assert!(!p.admits("abc!"), "too short");
    }
}

//! NHS numbers: the identifier that keys a patient's record in England, Wales and the Isle of Man.
//!
//! An NHS number is ten digits; the tenth is a check digit computed with the modulus 11 algorithm
//! (NHS Data Dictionary, "NHS Number"): multiply the first nine digits by the weights 10 down to 2,
//! sum, take the remainder modulo 11 and subtract it from 11. A result of 11 gives check digit 0;
//! a result of 10 means the number is invalid and is never issued.

use std::fmt;

/// The FHIR identifier system for NHS numbers.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// The FHIR identifier system for ODS organisation codes.
pub const ODS_CODE_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

/// A validated NHS number, stored as its ten digits without spaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NhsNumber(String);

/// Why a string is not a valid NHS number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NhsNumberError {
    /// The input, ignoring spaces and hyphens, is not exactly ten digits.
    #[error("NHS number '{0}' must be 10 digits (spaces allowed, e.g. 943 476 5919)")]
    Format(String),
    /// The ten digits fail the modulus 11 check digit rule.
    #[error(
        "NHS number '{number}' fails the modulus 11 check: its check digit is {found} but the first nine digits give {expected}"
    )]
    CheckDigit {
        /// The number as given.
        number: String,
        /// The tenth digit of the input.
        found: u32,
        /// What the first nine digits require ("none": such a number is never issued).
        expected: String,
    },
}

impl NhsNumber {
    /// Parses and validates an NHS number; spaces and hyphens between digits are ignored.
    pub fn parse(input: &str) -> Result<Self, NhsNumberError> {
        let digits: String = input.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NhsNumberError::Format(input.to_string()));
        }
        let values: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum: u32 = values[..9]
            .iter()
            .zip((2..=10).rev())
            .map(|(d, w)| d * w)
            .sum();
        let check = match 11 - sum % 11 {
            11 => Some(0),
            10 => None,
            c => Some(c),
        };
        if check != Some(values[9]) {
            return Err(NhsNumberError::CheckDigit {
                number: input.to_string(),
                found: values[9],
                expected: check.map_or_else(
                    || "none (no valid check digit exists)".into(),
                    |c| c.to_string(),
                ),
            });
        }
        Ok(Self(digits))
    }

    /// The ten digits, no spaces.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NhsNumber {
    /// Formats as the NHS displays it: 3-3-4 digits separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", &self.0[..3], &self.0[3..6], &self.0[6..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_published_example_numbers() {
        // Test numbers from NHS Digital's documentation.
        for n in [
            "9434765919",
            "943 476 5919",
            "943-476-5919",
            "4010232137",
            "9000000009",
        ] {
            assert!(NhsNumber::parse(n).is_ok(), "{n}");
        }
        assert_eq!(
            NhsNumber::parse("9434765919").unwrap().to_string(),
            "943 476 5919"
        );
    }

    #[test]
    fn refuses_wrong_check_digit_and_names_it() {
        let err = NhsNumber::parse("9434765918").unwrap_err();
        assert_eq!(
            err.to_string(),
            "NHS number '9434765918' fails the modulus 11 check: its check digit is 8 but the first nine digits give 9"
        );
    }

    #[test]
    fn refuses_numbers_whose_check_would_be_ten() {
        // 1234567890: weighted sum 1*10+2*9+...+9*2 = 210, 210 % 11 = 1, 11 - 1 = 10: never issued.
        let err = NhsNumber::parse("1234567890").unwrap_err();
        assert!(matches!(err, NhsNumberError::CheckDigit { .. }), "{err}");
    }

    #[test]
    fn refuses_bad_format() {
        for n in ["", "123", "94347659190", "94347659a9"] {
            assert!(
                matches!(NhsNumber::parse(n), Err(NhsNumberError::Format(_))),
                "{n}"
            );
        }
    }

    proptest! {
        #[test]
        fn exactly_one_check_digit_or_none_is_valid(first in proptest::collection::vec(0u8..10, 9)) {
            let prefix: String = first.iter().map(|d| char::from(b'0' + d)).collect();
            let valid = (0..10).filter(|c| NhsNumber::parse(&format!("{prefix}{c}")).is_ok()).count();
            prop_assert!(valid <= 1);
        }
    }
}

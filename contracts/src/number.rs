//! Whole numbers as JSON Schema counts them: `5` and `5.0` are both the integer 5, so a field
//! published as `"type": "integer"` takes either. Use with `#[serde(deserialize_with = ...)]`.

use serde::Deserializer;
use serde::de::{self, Visitor};

struct WholeNumber;

impl Visitor<'_> for WholeNumber {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // Below 2^63 in magnitude the cast is exact for a value without a fraction.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if v.fract() == 0.0 && v.abs() < LIMIT {
            #[allow(clippy::cast_possible_truncation)]
            Ok(v as i64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

/// An `i64` from a JSON integer, or from a number without a fraction that fits.
///
/// # Errors
/// The value is not a number, has a fraction, or does not fit.
pub fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(WholeNumber)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Count {
        #[serde(deserialize_with = "super::whole_number")]
        n: i64,
    }

    fn parse(json: &str) -> Result<i64, serde_json::Error> {
        serde_json::from_str::<Count>(json).map(|c| c.n)
    }

    #[test]
    fn takes_integers_and_numbers_without_a_fraction() {
        assert_eq!(parse(r#"{"n": 5}"#).unwrap(), 5);
        assert_eq!(parse(r#"{"n": -7}"#).unwrap(), -7);
        assert_eq!(parse(r#"{"n": 15833.0}"#).unwrap(), 15833);
        assert_eq!(parse(r#"{"n": 1e3}"#).unwrap(), 1000);
    }

    #[test]
    fn a_large_number_without_a_fraction_is_read_exactly() {
        // serde_json's default float parsing may land one step off the nearest double, which
        // here has a fraction (steps of 0.25 below 2^51): the workspace turns on its
        // `float_roundtrip` so that what JSON Schema calls an integer stays one.
        for n in [
            2_251_799_813_685_247_i64,
            4_503_599_627_370_495,
            9_007_199_254_740_991,
        ] {
            assert_eq!(parse(&format!(r#"{{"n": {n}.0}}"#)).unwrap(), n);
        }
    }

    #[test]
    fn refuses_fractions_overflows_and_other_types() {
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": 1e19}"#,
            r#"{"n": 18446744073709551615}"#,
            r#"{"n": "5"}"#,
            r#"{"n": null}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

//! Money written for people, per locale.

use mercato_contracts::money::Money;

use super::Locale;

/// Digits after the decimal separator (ISO 4217); most currencies have two.
fn exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

fn symbol(currency: &str) -> Option<&'static str> {
    match currency {
        "EUR" => Some("€"),
        "USD" => Some("$"),
        "GBP" => Some("£"),
        "JPY" => Some("¥"),
        _ => None,
    }
}

fn grouped(mut whole: u64, separator: char) -> String {
    let mut groups = Vec::new();
    loop {
        if whole < 1000 {
            groups.push(whole.to_string());
            break;
        }
        groups.push(format!("{:03}", whole % 1000));
        whole /= 1000;
    }
    groups.reverse();
    groups.join(&separator.to_string())
}

/// `€1,234.50` in English, `1.234,50 €` in German; a currency without a known symbol is
/// written by its code (`CHF 12.00`, `12,00 CHF`).
#[must_use]
pub fn format_money(money: &Money, locale: Locale) -> String {
    let currency = money.currency.as_str();
    let exponent = exponent(currency);
    let unit = 10_u64.pow(exponent);
    // unsigned_abs: i64::MIN has no positive i64.
    let magnitude = money.amount_minor.unsigned_abs();
    let (group, decimal) = match locale {
        Locale::En => (',', '.'),
        Locale::De => ('.', ','),
    };
    let mut number = grouped(magnitude / unit, group);
    if exponent > 0 {
        let width = exponent as usize;
        number.push(decimal);
        number.push_str(&format!("{:0width$}", magnitude % unit));
    }
    let sign = if money.amount_minor < 0 { "-" } else { "" };
    match (locale, symbol(currency)) {
        (Locale::En, Some(symbol)) => format!("{sign}{symbol}{number}"),
        (Locale::En, None) => format!("{sign}{currency} {number}"),
        (Locale::De, Some(symbol)) => format!("{sign}{number} {symbol}"),
        (Locale::De, None) => format!("{sign}{number} {currency}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(amount_minor: i64, currency: &str, locale: Locale) -> String {
        format_money(&Money::new(amount_minor, currency.parse().unwrap()), locale)
    }

    #[test]
    fn english_puts_the_symbol_first_and_groups_with_commas() {
        assert_eq!(written(1999, "EUR", Locale::En), "€19.99");
        assert_eq!(written(123_456_705, "USD", Locale::En), "$1,234,567.05");
        assert_eq!(written(5, "GBP", Locale::En), "£0.05");
    }

    #[test]
    fn german_puts_the_symbol_last_and_swaps_the_separators() {
        assert_eq!(written(1999, "EUR", Locale::De), "19,99 €");
        assert_eq!(written(123_456_705, "EUR", Locale::De), "1.234.567,05 €");
    }

    #[test]
    fn currencies_without_minor_units_or_symbols_are_written_correctly() {
        assert_eq!(written(1500, "JPY", Locale::En), "¥1,500");
        assert_eq!(written(1500, "CHF", Locale::En), "CHF 15.00");
        assert_eq!(written(1500, "CHF", Locale::De), "15,00 CHF");
        assert_eq!(written(1_234, "KWD", Locale::En), "KWD 1.234");
    }

    #[test]
    fn negative_and_extreme_amounts_do_not_overflow() {
        assert_eq!(written(-250, "EUR", Locale::En), "-€2.50");
        assert_eq!(
            written(i64::MIN, "EUR", Locale::En),
            "-€92,233,720,368,547,758.08"
        );
    }
}

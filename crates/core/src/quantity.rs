//! Kubernetes resource quantities (`10Gi`, `500M`, `1.5e9`) as bytes, for counting what the
//! reclaimer frees. Only what a storage request can say: no negative values, `m` rounds up.

/// The bytes a quantity stands for, rounded up; `None` when it does not parse.
pub fn bytes(quantity: &str) -> Option<u64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let (multiplier, divisor): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1000u128.pow(2), 1),
        "G" => (1000u128.pow(3), 1),
        "T" => (1000u128.pow(4), 1),
        "P" => (1000u128.pow(5), 1),
        "E" => (1000u128.pow(6), 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        exponent => {
            let power = exponent.strip_prefix(['e', 'E'])?;
            let power: u32 = power.strip_prefix('+').unwrap_or(power).parse().ok()?;
            (10u128.checked_pow(power)?, 1)
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let numerator = digits.checked_mul(multiplier)?;
    let denominator = scale.checked_mul(divisor)?;
    u64::try_from(numerator.div_ceil(denominator)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_requests_read_as_bytes() {
        for (quantity, expected) in [
            ("10Gi", Some(10 << 30)),
            ("1Mi", Some(1 << 20)),
            ("500M", Some(500_000_000)),
            ("1.5Gi", Some(3 << 29)),
            ("1e3", Some(1000)),
            ("1E+3", Some(1000)),
            ("2k", Some(2000)),
            ("1500m", Some(2)),
            ("42", Some(42)),
            (" 3Ki ", Some(3072)),
        ] {
            assert_eq!(bytes(quantity), expected, "{quantity}");
        }
    }

    #[test]
    fn what_is_not_a_quantity_is_none() {
        for quantity in ["", "Gi", "-1Gi", "10GB", "ten", "1.2.3", "1e", "99999999Ei"] {
            assert_eq!(bytes(quantity), None, "{quantity}");
        }
    }
}

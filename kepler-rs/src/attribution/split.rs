//! Exact proportional splitting of an integer amount (microjoules) by integer weights.
//!
//! Every share is `floor(total * w / W)` computed in 128-bit integers, and the few microjoules
//! of remainder go to the largest fractional parts (ties to the earliest). The parts therefore
//! always add up to the total exactly: conservation holds by construction, not within a
//! tolerance.

/// Splits `total` in proportion to `weights`. Returns `None` when every weight is zero (the
/// caller decides who takes energy that nobody can be charged for).
pub fn split_exact(total: u64, weights: &[u64]) -> Option<Vec<u64>> {
    let weight_sum: u128 = weights.iter().map(|w| *w as u128).sum();
    if weight_sum == 0 {
        return None;
    }
    let total = total as u128;
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut assigned: u128 = 0;
    for (i, w) in weights.iter().enumerate() {
        let scaled = total * (*w as u128);
        let part = scaled / weight_sum;
        assigned += part;
        parts.push(part as u64);
        remainders.push((scaled % weight_sum, i));
    }
    let mut left = total - assigned; // < number of non-zero weights
                                     // Largest remainder first; stable on index for determinism.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (rem, i) in remainders {
        if left == 0 || rem == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn simple_cases() {
        assert_eq!(split_exact(100, &[3, 1]), Some(vec![75, 25]));
        assert_eq!(split_exact(10, &[1, 1, 1]), Some(vec![4, 3, 3]));
        assert_eq!(split_exact(5, &[0, 0]), None);
        assert_eq!(split_exact(0, &[1, 2]), Some(vec![0, 0]));
        assert_eq!(split_exact(7, &[0, 5]), Some(vec![0, 7]));
        assert_eq!(
            split_exact(u64::MAX, &[u64::MAX, u64::MAX]),
            Some(vec![u64::MAX / 2 + 1, u64::MAX / 2])
        );
    }

    proptest! {
        #[test]
        fn parts_sum_to_total_and_follow_weights(total in any::<u64>(), weights in proptest::collection::vec(any::<u64>(), 1..50)) {
            let Some(parts) = split_exact(total, &weights) else {
                prop_assert!(weights.iter().all(|w| *w == 0));
                return Ok(());
            };
            let sum: u128 = parts.iter().map(|p| *p as u128).sum();
            prop_assert_eq!(sum, total as u128);
            let wsum: u128 = weights.iter().map(|w| *w as u128).sum();
            for (p, w) in parts.iter().zip(&weights) {
                let exact = total as u128 * *w as u128 / wsum;
                prop_assert!(*p as u128 == exact || *p as u128 == exact + 1);
                if *w == 0 { prop_assert_eq!(*p, 0); }
            }
        }
    }
}

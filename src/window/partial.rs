//! Partial aggregates: what a window keeps instead of its readings.

/// Sum, count, min and max of some readings. Merging two partials gives
/// the partial of the union, so windows of any size are built from the
/// base windows' partials without holding a single raw reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Partial {
    pub sum: f64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

impl Default for Partial {
    fn default() -> Self {
        Partial {
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Partial {
    pub fn of(value: f64) -> Self {
        Partial {
            sum: value,
            count: 1,
            min: value,
            max: value,
        }
    }

    pub fn merge(&mut self, other: &Partial) {
        self.sum += other.sum;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_the_partial_of_the_union() {
        let mut a = Partial::of(1.0);
        a.merge(&Partial::of(5.0));
        let mut b = Partial::of(-2.0);
        b.merge(&a);
        assert_eq!(
            b,
            Partial {
                sum: 4.0,
                count: 3,
                min: -2.0,
                max: 5.0
            }
        );
        assert_eq!(Partial::default().mean(), None);
        let mut e = Partial::default();
        e.merge(&b);
        assert_eq!(e, b);
    }
}

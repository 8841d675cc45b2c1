use std::time::Duration;

/// Scales every delay and poll of the simulators: `1.0` is real speed (the demo can run so),
/// tests use a small fraction so a 5-second driver poll takes milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    scale: f64,
}

impl Clock {
    pub fn new(scale: f64) -> Self {
        assert!(
            scale.is_finite() && scale >= 0.0,
            "a time scale is a non-negative number, not {scale}"
        );
        Self { scale }
    }

    /// Real speed.
    pub fn real() -> Self {
        Self::new(1.0)
    }

    /// How long `upstream` (a duration as upstream code states it) lasts in this world.
    pub fn scaled(&self, upstream: Duration) -> Duration {
        upstream.mul_f64(self.scale)
    }

    pub async fn sleep(&self, upstream: Duration) {
        tokio::time::sleep(self.scaled(upstream)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_scale_linearly() {
        let clock = Clock::new(0.01);
        assert_eq!(
            clock.scaled(Duration::from_secs(5)),
            Duration::from_millis(50)
        );
        assert_eq!(
            Clock::real().scaled(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }

    #[test]
    #[should_panic(expected = "non-negative")]
    fn a_negative_scale_is_refused() {
        Clock::new(-1.0);
    }
}

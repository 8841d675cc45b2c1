use std::str::FromStr;

use crate::{Error, Result};

/// Who plays an upstream controller in a world: the real one, built from its Go module, or the
/// simulators (crates/sim).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Player {
    Real,
    Sim,
}

impl Player {
    /// `$<variable>` (`real` or `sim`), else `default`.
    pub(crate) fn from_env(variable: &'static str, default: Self) -> Result<Self> {
        match std::env::var(variable) {
            Ok(value) => value.parse().map_err(|_| Error::InvalidOption {
                option: variable,
                value,
                expected: "real or sim",
            }),
            Err(_) => Ok(default),
        }
    }
}

impl FromStr for Player {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        match value {
            "real" => Ok(Self::Real),
            "sim" => Ok(Self::Sim),
            other => Err(Error::InvalidOption {
                option: "player",
                value: other.to_owned(),
                expected: "real or sim",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_and_sim_name_a_player() {
        assert_eq!("real".parse::<Player>().unwrap(), Player::Real);
        assert_eq!("sim".parse::<Player>().unwrap(), Player::Sim);
        for other in ["", "Real", "simulated", "true"] {
            assert!(other.parse::<Player>().is_err(), "{other}");
        }
    }
}

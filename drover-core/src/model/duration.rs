//! ISO 8601 durations (`PT30S`, `PT2H`, `P7D`), as Azure Batch writes time limits.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written in ISO 8601 (`P[nW][nD][T[nH][nM][n[.n]S]]`). Years and months are refused:
/// their length is not fixed. Values beyond ~292 years (Azure's "unlimited") saturate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsoDuration(pub Duration);

impl IsoDuration {
    /// Parses `s`, naming what is wrong on failure.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{s:?} is not an ISO 8601 duration ({why}); e.g. PT30S, PT2H, P7D");
        let rest = s.strip_prefix('P').ok_or_else(|| bad("must start with P"))?;
        if rest.is_empty() {
            return Err(bad("empty"));
        }
        let mut total = 0f64;
        let mut in_time = false;
        let mut num = String::new();
        let mut any = false;
        for c in rest.chars() {
            match c {
                'T' if !in_time && num.is_empty() => in_time = true,
                '0'..='9' | '.' | ',' => num.push(if c == ',' { '.' } else { c }),
                unit => {
                    let n: f64 = num.parse().map_err(|_| bad("a number is missing or malformed"))?;
                    let secs = match (in_time, unit) {
                        (false, 'W') => 604_800.0,
                        (false, 'D') => 86_400.0,
                        (true, 'H') => 3_600.0,
                        (true, 'M') => 60.0,
                        (true, 'S') => 1.0,
                        (false, 'Y' | 'M') => return Err(bad("years and months have no fixed length")),
                        _ => return Err(bad(&format!("unexpected {unit:?}"))),
                    };
                    total += n * secs;
                    num.clear();
                    any = true;
                }
            }
        }
        if !num.is_empty() || !any {
            return Err(bad("a unit is missing"));
        }
        let d = if total >= u64::MAX as f64 / 2.0 {
            Duration::from_secs(u64::MAX / 2)
        } else {
            Duration::from_secs_f64(total)
        };
        Ok(IsoDuration(d))
    }
}

impl fmt::Display for IsoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0.as_secs();
        let (d, h, m, s) = (total / 86_400, total % 86_400 / 3_600, total % 3_600 / 60, total % 60);
        let ms = self.0.subsec_millis();
        write!(f, "P")?;
        if d > 0 {
            write!(f, "{d}D")?;
        }
        if h > 0 || m > 0 || s > 0 || ms > 0 || d == 0 {
            write!(f, "T")?;
            if h > 0 {
                write!(f, "{h}H")?;
            }
            if m > 0 {
                write!(f, "{m}M")?;
            }
            if ms > 0 {
                write!(f, "{s}.{ms:03}S")?;
            } else if s > 0 || (h == 0 && m == 0) {
                write!(f, "{s}S")?;
            }
        }
        Ok(())
    }
}

impl Serialize for IsoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IsoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IsoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_azure_durations() {
        let secs = |s: &str| IsoDuration::parse(s).map(|d| d.0.as_secs_f64());
        assert_eq!(secs("PT30S"), Ok(30.0));
        assert_eq!(secs("PT2H"), Ok(7200.0));
        assert_eq!(secs("P7D"), Ok(604_800.0));
        assert_eq!(secs("P1DT1H1M1.5S"), Ok(90_061.5));
        assert_eq!(secs("P2W"), Ok(1_209_600.0));
        assert!(IsoDuration::parse("P10675199DT2H48M5.4775807S").is_ok());
        for bad in ["", "30S", "P", "PT", "P1Y", "PT5", "P1H", "PTx"] {
            assert!(IsoDuration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prints_what_it_parses() {
        for s in ["PT30S", "PT2H", "P7D", "P1DT1H1M1.500S", "PT0S"] {
            assert_eq!(IsoDuration::parse(s).map(|d| d.to_string()), Ok(s.to_string()));
        }
    }
}

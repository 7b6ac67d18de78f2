//! Weighted traffic split between versions of a service.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::Rng;

/// Per-service version weights.
#[derive(Debug, Default)]
pub(crate) struct Splits {
    by_service: RwLock<HashMap<String, Vec<(String, u32)>>>,
    /// Whether any split is set: without one, requests skip the lock and
    /// the lookup.
    any: AtomicBool,
}

impl Splits {
    /// Sets (or with an empty list or zero total weight, clears) a split.
    pub(crate) fn set(&self, service: &str, weights: Vec<(String, u32)>) {
        let mut map = self.by_service.write().unwrap_or_else(|p| p.into_inner());
        if weights.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() == 0 {
            map.remove(service);
        } else {
            map.insert(service.to_owned(), weights);
        }
        self.any.store(!map.is_empty(), Ordering::Release);
    }

    /// The version to send one request of `service` to, if split.
    pub(crate) fn pick(&self, service: &str) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let map = self.by_service.read().unwrap_or_else(|p| p.into_inner());
        let weights = map.get(service)?;
        pick(weights, rand::rng().random_range(0..total(weights)))
    }
}

fn total(weights: &[(String, u32)]) -> u64 {
    weights.iter().map(|(_, w)| u64::from(*w)).sum()
}

fn pick(weights: &[(String, u32)], mut roll: u64) -> Option<String> {
    for (version, w) in weights {
        if roll < u64::from(*w) {
            return Some(version.clone());
        }
        roll -= u64::from(*w);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_map_onto_weights() {
        let w = vec![("v1".to_owned(), 90), ("v2".to_owned(), 10)];
        assert_eq!(pick(&w, 0).as_deref(), Some("v1"));
        assert_eq!(pick(&w, 89).as_deref(), Some("v1"));
        assert_eq!(pick(&w, 90).as_deref(), Some("v2"));
        assert_eq!(pick(&w, 99).as_deref(), Some("v2"));
        let s = Splits::default();
        s.set("svc", vec![("v1".into(), 0)]);
        assert_eq!(s.pick("svc"), None);
    }
}

//! Longest-prefix routing on whole path segments.

use crate::Route;

/// Routes sorted longest prefix first.
#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub(crate) fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self { routes }
    }

    /// The route for `path`: `/v1/products` matches `/v1/products` and
    /// `/v1/products/1`, not `/v1/productsx`.
    pub(crate) fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            let p = r.prefix.as_str();
            path.starts_with(p)
                && (path.len() == p.len() || p.ends_with('/') || path.as_bytes()[p.len()] == b'/')
        })
    }

    /// Every prefix, for the 404 that lists them.
    pub(crate) fn prefixes(&self) -> Vec<String> {
        let mut p: Vec<String> = self.routes.iter().map(|r| r.prefix.clone()).collect();
        p.sort();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_on_segment_boundaries_wins() {
        let t = RouteTable::new(vec![
            Route::new("/", "web", true),
            Route::new("/v1/products", "catalog", true),
            Route::new("/v1/products/admin", "admin", false),
        ]);
        assert_eq!(t.find("/v1/products").unwrap().service, "catalog");
        assert_eq!(t.find("/v1/products/7").unwrap().service, "catalog");
        assert_eq!(t.find("/v1/products/admin/x").unwrap().service, "admin");
        assert_eq!(t.find("/v1/productsx").unwrap().service, "web");
        let t = RouteTable::new(vec![Route::new("/v1/orders", "orders", false)]);
        assert!(t.find("/v1/order").is_none());
        assert!(t.find("/v1/ordersx").is_none());
    }
}

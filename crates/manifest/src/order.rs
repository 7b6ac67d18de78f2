//! Dependency order: which services start first, and the cycles that make
//! an order impossible.
//!
//! Services are identified by their index in declaration order; `deps[i]`
//! lists the indices service `i` depends on.

use crate::model::{Manifest, ServiceSpec};

impl Manifest {
    /// The services in the order to start them: every service after the
    /// services it depends on, and otherwise in declaration order (at each
    /// step the earliest-declared service whose dependencies have all
    /// started goes next), so the order is predictable from the file.
    /// Stopping uses the reverse.
    pub fn start_order(&self) -> Vec<&ServiceSpec> {
        let deps = dependency_indices(&self.services);
        stable_topological_order(&deps)
            .into_iter()
            .filter_map(|i| self.services.get(i))
            .collect()
    }
}

/// `deps[i]`: the indices of the services `services[i]` depends on; unknown
/// names and self-references (rejected by validation) are left out.
fn dependency_indices(services: &[ServiceSpec]) -> Vec<Vec<usize>> {
    services
        .iter()
        .enumerate()
        .map(|(i, service)| {
            service
                .depends_on
                .iter()
                .filter_map(|name| services.iter().position(|s| &s.name == name))
                .filter(|&j| j != i)
                .collect()
        })
        .collect()
}

/// Indices `0..deps.len()` ordered dependencies first; among the services
/// that could go next, the lowest index wins. Services caught in a cycle
/// (which validation rejects) come last, in index order, so none is lost.
pub(crate) fn stable_topological_order(deps: &[Vec<usize>]) -> Vec<usize> {
    let mut placed = vec![false; deps.len()];
    let mut order = Vec::with_capacity(deps.len());
    while let Some(next) = (0..deps.len()).find(|&i| {
        !placed[i]
            && deps[i]
                .iter()
                .all(|&d| placed.get(d).copied().unwrap_or(true))
    }) {
        placed[next] = true;
        order.push(next);
    }
    order.extend((0..deps.len()).filter(|&i| !placed[i]));
    order
}

/// A dependency cycle, found at the dependency that closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cycle {
    /// The services on the cycle, in dependency direction, first not
    /// repeated: `[a, b]` is `a -> b -> a`.
    pub(crate) services: Vec<usize>,
    /// The service whose dependency closes the cycle.
    pub(crate) from: usize,
    /// Which of `deps[from]` closes it.
    pub(crate) edge: usize,
}

/// The cycles in `deps`, one per dependency that closes a cycle during a
/// depth-first walk in declaration order: enough to report each independent
/// cycle once, without listing every elementary cycle of a tangle.
pub(crate) fn cycles(deps: &[Vec<usize>]) -> Vec<Cycle> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnPath,
        Done,
    }

    struct Walk<'d> {
        deps: &'d [Vec<usize>],
        marks: Vec<Mark>,
        path: Vec<usize>,
        found: Vec<Cycle>,
    }

    impl Walk<'_> {
        fn visit(&mut self, node: usize) {
            self.marks[node] = Mark::OnPath;
            self.path.push(node);
            let deps = self.deps;
            for (edge, &dep) in deps[node].iter().enumerate() {
                match self.marks.get(dep) {
                    Some(Mark::Unvisited) => self.visit(dep),
                    Some(Mark::OnPath) => {
                        let start = self.path.iter().position(|&n| n == dep).unwrap_or(0);
                        self.found.push(Cycle {
                            services: self.path[start..].to_vec(),
                            from: node,
                            edge,
                        });
                    }
                    Some(Mark::Done) | None => {}
                }
            }
            self.path.pop();
            self.marks[node] = Mark::Done;
        }
    }

    let mut walk = Walk {
        deps,
        marks: vec![Mark::Unvisited; deps.len()],
        path: Vec::new(),
        found: Vec::new(),
    };
    for node in 0..deps.len() {
        if walk.marks[node] == Mark::Unvisited {
            walk.visit(node);
        }
    }
    walk.found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_and_the_rest_keeps_declaration_order() {
        // 0 depends on 2; 1 is independent; 3 depends on 0 and 1.
        let deps = vec![vec![2], vec![], vec![], vec![0, 1]];
        assert_eq!(stable_topological_order(&deps), [1, 2, 0, 3]);
        // Without dependencies the declaration order is kept.
        assert_eq!(
            stable_topological_order(&[vec![], vec![], vec![]]),
            [0, 1, 2]
        );
    }

    #[test]
    fn a_chain_is_started_from_its_end() {
        let deps = vec![vec![1], vec![2], vec![]];
        assert_eq!(stable_topological_order(&deps), [2, 1, 0]);
    }

    #[test]
    fn services_in_a_cycle_are_not_lost() {
        let deps = vec![vec![1], vec![0], vec![]];
        assert_eq!(stable_topological_order(&deps), [2, 0, 1]);
    }

    #[test]
    fn a_two_service_cycle_is_found_at_the_closing_dependency() {
        let deps = vec![vec![1], vec![0]];
        assert_eq!(
            cycles(&deps),
            [Cycle {
                services: vec![0, 1],
                from: 1,
                edge: 0
            }]
        );
    }

    #[test]
    fn independent_cycles_are_each_found_once_and_acyclic_graphs_have_none() {
        // 0 -> 1 -> 2 -> 0, and 3 -> 4 -> 3; 5 depends on 0 without a cycle.
        let deps = vec![vec![1], vec![2], vec![0], vec![4], vec![3], vec![0]];
        let found: Vec<Vec<usize>> = cycles(&deps).into_iter().map(|c| c.services).collect();
        assert_eq!(found, [vec![0, 1, 2], vec![3, 4]]);
        assert!(cycles(&[vec![1, 2], vec![2], vec![]]).is_empty());
    }
}

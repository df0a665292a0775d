//! The assignment solvers: exact branch and bound for small problems, greedy by value density
//! plus a local-improvement pass for large ones.
//!
//! The problem: each item gets one tier; item `i` in tier `t` costs `cost[i][t]` (infinite where
//! a constraint forbids it) and uses `size[i]` bytes of that tier's free room; minimise the total
//! cost. This is a generalised assignment problem (a multiple knapsack when there are two tiers of
//! interest), NP-hard in general, so the exact search is only used for small item counts.

// Item and tier indices address several parallel tables at once (sizes, costs, free room,
// assignment); index loops read better here than zipped iterators.
#![allow(clippy::needless_range_loop)]

/// One assignment problem (pinned and weight-0 items already removed).
pub(crate) struct Problem {
    /// Item sizes in bytes.
    pub sizes: Vec<u64>,
    /// `cost[i][t]`: seconds per step, `f64::INFINITY` where not allowed.
    pub cost: Vec<Vec<f64>>,
    /// Free bytes per tier.
    pub free: Vec<u128>,
}

/// Result of a solver: the tier index of each item, or the index of an item that found no room.
pub(crate) type Solution = Result<Vec<usize>, usize>;

impl Problem {
    fn tiers(&self) -> usize {
        self.free.len()
    }

    fn allowed(&self, i: usize, t: usize) -> bool {
        self.cost[i][t].is_finite()
    }

    /// Total cost of an assignment.
    pub fn total(&self, assign: &[usize]) -> f64 {
        assign
            .iter()
            .enumerate()
            .map(|(i, &t)| self.cost[i][t])
            .sum()
    }

    /// Cheapest allowed cost of item `i` among tiers strictly slower (higher index) than `t`.
    fn fallback(&self, i: usize, t: usize) -> f64 {
        (t + 1..self.tiers())
            .map(|u| self.cost[i][u])
            .fold(f64::INFINITY, f64::min)
    }
}

/// Greedy: fill tiers fastest first; in each tier take the items that save the most time per
/// byte (against their cheapest slower alternative) while they fit; then improve by single moves
/// and pairwise swaps until nothing improves or `rounds` passes are done.
pub(crate) fn greedy(p: &Problem, rounds: usize) -> Solution {
    let n = p.sizes.len();
    let tiers = p.tiers();
    let mut assign: Vec<Option<usize>> = vec![None; n];
    let mut free = p.free.clone();
    for t in 0..tiers {
        // (forced first, density descending, index ascending)
        let mut cands: Vec<(bool, f64, usize)> = Vec::new();
        for i in 0..n {
            if assign[i].is_some() || !p.allowed(i, t) {
                continue;
            }
            let fb = p.fallback(i, t);
            if fb.is_infinite() {
                cands.push((true, f64::INFINITY, i));
            } else {
                let saving = fb - p.cost[i][t];
                if saving > 0.0 {
                    let density = saving / (p.sizes[i].max(1) as f64);
                    cands.push((false, density, i));
                }
            }
        }
        cands.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
        for (_, _, i) in cands {
            let size = u128::from(p.sizes[i]);
            if size <= free[t] {
                free[t] -= size;
                assign[i] = Some(t);
            }
        }
    }
    // Anything left (its preferred tiers were full): cheapest allowed tier with room.
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = match assign[i] {
            Some(t) => t,
            None => {
                let size = u128::from(p.sizes[i]);
                let best = (0..tiers)
                    .filter(|&t| p.allowed(i, t) && size <= free[t])
                    .min_by(|&a, &b| p.cost[i][a].total_cmp(&p.cost[i][b]));
                match best {
                    Some(t) => {
                        free[t] -= size;
                        t
                    }
                    None => return Err(i),
                }
            }
        };
        out.push(t);
    }
    improve(p, &mut out, &mut free, rounds);
    Ok(out)
}

/// One pass of ejection moves: item `i` moves from its tier `c` into a cheaper tier `a` that
/// lacks room, pushing out to `c` the items of `a` that lose the least per byte by the move,
/// when the total cost drops (a 1-for-k exchange, which pairwise swaps cannot do).
fn eject(p: &Problem, assign: &mut [usize], free: &mut [u128]) -> bool {
    let n = assign.len();
    let tiers = p.tiers();
    let mut improved = false;
    for a in 0..tiers {
        for c in 0..tiers {
            if a == c {
                continue;
            }
            // Items in `a` that may go to `c`, by loss per byte of that move, lowest first.
            let mut pool: Vec<(f64, usize)> = (0..n)
                .filter(|&j| assign[j] == a && p.allowed(j, c))
                .map(|j| {
                    let loss = p.cost[j][c] - p.cost[j][a];
                    (loss / p.sizes[j].max(1) as f64, j)
                })
                .collect();
            pool.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            for i in 0..n {
                if assign[i] != c || !p.allowed(i, a) {
                    continue;
                }
                let gain = p.cost[i][c] - p.cost[i][a];
                let si = u128::from(p.sizes[i]);
                if gain <= 0.0 || si <= free[a] {
                    continue; // not cheaper there, or a plain move (done elsewhere)
                }
                let (mut room, mut out_bytes, mut loss) = (free[a], 0u128, 0.0);
                let mut chosen = Vec::new();
                for &(_, j) in &pool {
                    if room >= si || loss >= gain {
                        break;
                    }
                    if assign[j] != a {
                        continue;
                    }
                    let sj = u128::from(p.sizes[j]);
                    room += sj;
                    out_bytes += sj;
                    loss += p.cost[j][c] - p.cost[j][a];
                    chosen.push(j);
                }
                let fits_c = free[c] + si >= out_bytes;
                if room >= si && fits_c && loss < gain - 1e-12 * gain.abs() {
                    for &j in &chosen {
                        assign[j] = c;
                    }
                    assign[i] = a;
                    free[a] = room - si;
                    free[c] = free[c] + si - out_bytes;
                    improved = true;
                }
            }
        }
    }
    improved
}

/// Local search: move single items to a cheaper tier with room, swap pairs between tiers,
/// eject several items of a cheaper tier to make room for one that gains more.
pub(crate) fn improve(p: &Problem, assign: &mut [usize], free: &mut [u128], rounds: usize) {
    let n = assign.len();
    let tiers = p.tiers();
    let eps = |x: f64| 1e-12 * x.abs().max(1e-30);
    for _ in 0..rounds {
        let mut improved = false;
        for i in 0..n {
            let cur = assign[i];
            let size = u128::from(p.sizes[i]);
            let best = (0..tiers)
                .filter(|&t| t != cur && p.allowed(i, t) && size <= free[t])
                .min_by(|&a, &b| p.cost[i][a].total_cmp(&p.cost[i][b]));
            if let Some(t) = best {
                if p.cost[i][t] < p.cost[i][cur] - eps(p.cost[i][cur]) {
                    free[cur] += size;
                    free[t] -= size;
                    assign[i] = t;
                    improved = true;
                }
            }
        }
        if n <= 1500 {
            for i in 0..n {
                for j in (i + 1)..n {
                    let (a, b) = (assign[i], assign[j]);
                    if a == b || !p.allowed(i, b) || !p.allowed(j, a) {
                        continue;
                    }
                    let before = p.cost[i][a] + p.cost[j][b];
                    let after = p.cost[i][b] + p.cost[j][a];
                    if after >= before - eps(before) {
                        continue;
                    }
                    let (si, sj) = (u128::from(p.sizes[i]), u128::from(p.sizes[j]));
                    // a loses i and gains j; b loses j and gains i.
                    if free[a] + si < sj || free[b] + sj < si {
                        continue;
                    }
                    free[a] = free[a] + si - sj;
                    free[b] = free[b] + sj - si;
                    assign[i] = b;
                    assign[j] = a;
                    improved = true;
                }
            }
        }
        if n <= 3000 && eject(p, assign, free) {
            improved = true;
        }
        if !improved {
            break;
        }
    }
}

/// Outcome of the exact search.
pub(crate) struct Exact {
    /// The best assignment found, if any is feasible.
    pub assign: Option<Vec<usize>>,
    /// Whether the search finished (false: stopped at the node limit; best found is returned).
    pub complete: bool,
}

/// Exact branch and bound: items in decreasing size, tiers in increasing cost, pruned by the
/// bound "cost so far + cheapest allowed cost of every remaining item" (capacities ignored),
/// seeded with the greedy solution. Stops after `node_limit` nodes.
pub(crate) fn exact(p: &Problem, node_limit: u64, rounds: usize) -> Exact {
    let n = p.sizes.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| p.sizes[b].cmp(&p.sizes[a]).then(a.cmp(&b)));
    let min_cost: Vec<f64> = (0..n)
        .map(|i| p.cost[i].iter().copied().fold(f64::INFINITY, f64::min))
        .collect();
    let mut suffix = vec![0.0; n + 1];
    for k in (0..n).rev() {
        suffix[k] = suffix[k + 1] + min_cost[order[k]];
    }
    let tier_order: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut ts: Vec<usize> = (0..p.tiers()).filter(|&t| p.allowed(i, t)).collect();
            ts.sort_by(|&a, &b| p.cost[i][a].total_cmp(&p.cost[i][b]).then(a.cmp(&b)));
            ts
        })
        .collect();
    let (mut best, mut best_assign) = match greedy(p, rounds) {
        Ok(a) => (p.total(&a), Some(a)),
        Err(_) => (f64::INFINITY, None),
    };
    let mut search = Search {
        p,
        order: &order,
        suffix: &suffix,
        tier_order: &tier_order,
        free: p.free.clone(),
        assign: vec![0; n],
        best: &mut best,
        best_assign: &mut best_assign,
        nodes: 0,
        node_limit,
    };
    search.dfs(0, 0.0);
    let complete = search.nodes <= node_limit;
    Exact {
        assign: best_assign,
        complete,
    }
}

struct Search<'a> {
    p: &'a Problem,
    order: &'a [usize],
    suffix: &'a [f64],
    tier_order: &'a [Vec<usize>],
    free: Vec<u128>,
    assign: Vec<usize>,
    best: &'a mut f64,
    best_assign: &'a mut Option<Vec<usize>>,
    nodes: u64,
    node_limit: u64,
}

impl Search<'_> {
    fn dfs(&mut self, k: usize, cost: f64) {
        self.nodes += 1;
        if self.nodes > self.node_limit {
            return;
        }
        let bound = cost + self.suffix[k];
        if bound >= *self.best - 1e-12 * self.best.abs() {
            return;
        }
        if k == self.order.len() {
            *self.best = cost;
            *self.best_assign = Some(self.assign.clone());
            return;
        }
        let i = self.order[k];
        let size = u128::from(self.p.sizes[i]);
        for idx in 0..self.tier_order[i].len() {
            let t = self.tier_order[i][idx];
            if size > self.free[t] {
                continue;
            }
            self.free[t] -= size;
            self.assign[i] = t;
            self.dfs(k + 1, cost + self.p.cost[i][t]);
            self.free[t] += size;
        }
    }
}

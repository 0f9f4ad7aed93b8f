//! The role tree and its DRF sorter, kept sorted incrementally.
//!
//! Every role is a node (`eng` is the parent of `eng/batch`); a node holds
//! its frameworks ("clients") sorted by their dominant share of what they
//! hold in this role, and its children sorted by the weighted dominant
//! share of their whole subtree. A change of one framework's allocation
//! re-sorts that framework in its role and the role's ancestors in their
//! parents: O(depth · log n), so an allocation after one task ends costs
//! microseconds however big the cluster is. Only a change of the cluster
//! total makes every share stale; [`RoleTree::refresh`] then re-sorts all.
//!
//! Only clients that want offers (active, not suppressed in the role) are
//! in the sorted sets, and a subtree with none is not entered: with
//! thousands of frameworks, most of them suppressed once their work is
//! placed, a pick walked them all for every agent.

use foldhash::{HashMap, HashMapExt};
use std::collections::BTreeSet;

use mezzo_proto::reservation::Role;
use mezzo_proto::resources::Resources;

use super::quota::Quota;

/// Index of a role node. The virtual root is 0.
pub(crate) type RoleIx = usize;
/// Index of a framework.
pub(crate) type FwIx = u32;

/// A sort key: a non-negative share's bits order like the share itself.
pub(crate) fn key(share: f64) -> u64 {
    if share.is_finite() && share > 0.0 {
        share.to_bits()
    } else {
        0
    }
}

#[derive(Debug, Default)]
pub(crate) struct Node {
    pub role: Option<Role>,
    pub parent: Option<RoleIx>,
    pub weight: f64,
    pub quota: Quota,
    /// Held by this role and its descendants (offered + used).
    pub subtree: Resources,
    /// Held by this role's own frameworks.
    pub own: Resources,
    /// This node's key in its parent's `children`.
    key: u64,
    own_key: u64,
    children: BTreeSet<(u64, RoleIx)>,
    /// The clients that want offers, by key.
    clients: BTreeSet<(u64, FwIx)>,
    /// Each client's holding in this role and its key (in `clients` if
    /// it wants offers).
    pub client_alloc: HashMap<FwIx, (Resources, u64)>,
    /// Clients wanting offers here and in every role below.
    wanting: usize,
}

impl Node {
    pub fn clients(&self) -> impl Iterator<Item = FwIx> + '_ {
        self.client_alloc.keys().copied()
    }
}

#[derive(Debug)]
pub(crate) struct RoleTree {
    pub nodes: Vec<Node>,
    pub index: HashMap<Role, RoleIx>,
}

impl Default for RoleTree {
    fn default() -> Self {
        RoleTree {
            nodes: vec![Node {
                weight: 1.0,
                ..Default::default()
            }],
            index: HashMap::new(),
        }
    }
}

impl RoleTree {
    pub fn get(&self, role: &Role) -> Option<RoleIx> {
        self.index.get(role).copied()
    }

    /// The node of `role`, created with its ancestors if new.
    pub fn ensure(&mut self, role: &Role) -> RoleIx {
        if let Some(ix) = self.index.get(role) {
            return *ix;
        }
        let parent = match role.parent() {
            Some(p) => self.ensure(&p),
            None => 0,
        };
        let ix = self.nodes.len();
        self.nodes.push(Node {
            role: Some(role.clone()),
            parent: Some(parent),
            weight: 1.0,
            ..Default::default()
        });
        self.nodes[parent].children.insert((0, ix));
        self.index.insert(role.clone(), ix);
        ix
    }

    /// `ix` and its ancestors up to (not including) the root.
    pub fn path(&self, ix: RoleIx) -> impl Iterator<Item = RoleIx> + '_ {
        let mut cur = Some(ix).filter(|i| *i != 0);
        std::iter::from_fn(move || {
            let i = cur?;
            cur = self.nodes[i].parent.filter(|p| *p != 0);
            Some(i)
        })
    }

    pub fn is_within(&self, ix: RoleIx, ancestor: RoleIx) -> bool {
        self.path(ix).any(|i| i == ancestor)
    }

    /// Adds a client that wants no offers until [`RoleTree::set_wants`].
    pub fn add_client(&mut self, role: RoleIx, fw: FwIx) {
        self.nodes[role]
            .client_alloc
            .entry(fw)
            .or_insert((Resources::default(), 0));
    }

    /// Removes a client; its holding must have been taken back first.
    pub fn remove_client(&mut self, role: RoleIx, fw: FwIx, total: &Resources) {
        self.set_wants(role, fw, false);
        let node = &mut self.nodes[role];
        if let Some((held, _)) = node.client_alloc.remove(&fw)
            && !held.is_empty()
        {
            self.change(role, None, &held, false, total);
        }
    }

    /// Puts a client in (or out of) the order [`RoleTree::pick`] walks.
    pub fn set_wants(&mut self, role: RoleIx, fw: FwIx, wants: bool) {
        let node = &mut self.nodes[role];
        let Some(&(_, k)) = node.client_alloc.get(&fw) else {
            return;
        };
        let changed = if wants {
            node.clients.insert((k, fw))
        } else {
            node.clients.remove(&(k, fw))
        };
        if !changed {
            return;
        }
        let mut cur = Some(role);
        while let Some(ix) = cur {
            let node = &mut self.nodes[ix];
            if wants {
                node.wanting += 1;
            } else {
                node.wanting -= 1;
            }
            cur = node.parent;
        }
    }

    /// Adds (`grow`) or takes back `r` held by `fw` (if any) in `role`,
    /// and re-sorts what moved.
    pub fn change(&mut self, role: RoleIx, fw: Option<FwIx>, r: &Resources, grow: bool, total: &Resources) {
        let apply = |x: &mut Resources| {
            if grow {
                x.add(r);
            } else {
                *x = x.saturating_sub(r);
            }
        };
        let node = &mut self.nodes[role];
        if let Some(fw) = fw
            && let Some((held, k)) = node.client_alloc.get_mut(&fw)
        {
            let wants = node.clients.remove(&(*k, fw));
            apply(held);
            *k = key(held.dominant_share(total));
            if wants {
                node.clients.insert((*k, fw));
            }
        }
        apply(&mut node.own);
        node.own_key = key(node.own.dominant_share(total));
        let mut cur = role;
        while cur != 0 {
            let node = &mut self.nodes[cur];
            apply(&mut node.subtree);
            let new = key(node.subtree.dominant_share(total) / node.weight);
            let old = std::mem::replace(&mut node.key, new);
            let parent = node.parent.unwrap_or(0);
            let set = &mut self.nodes[parent].children;
            set.remove(&(old, cur));
            set.insert((new, cur));
            cur = parent;
        }
    }

    pub fn set_weight(&mut self, role: RoleIx, weight: f64, total: &Resources) {
        self.nodes[role].weight = weight;
        self.change(role, None, &Resources::default(), true, total);
    }

    /// Recomputes every key (the cluster total changed).
    pub fn refresh(&mut self, total: &Resources) {
        for node in &mut self.nodes {
            node.key = key(node.subtree.dominant_share(total) / node.weight);
            node.own_key = key(node.own.dominant_share(total));
            let wanting = std::mem::take(&mut node.clients);
            for (fw, (held, k)) in node.client_alloc.iter_mut() {
                let old = *k;
                *k = key(held.dominant_share(total));
                if wanting.contains(&(old, *fw)) {
                    node.clients.insert((*k, *fw));
                }
            }
        }
        for ix in 0..self.nodes.len() {
            let mut children: Vec<RoleIx> = self.nodes[ix].children.iter().map(|(_, c)| *c).collect();
            children.sort_unstable();
            self.nodes[ix].children = children.into_iter().map(|c| (self.nodes[c].key, c)).collect();
        }
    }

    /// The first (role, framework) in DRF order under `from` for which
    /// `ok` holds; `enter(role)` may prune a whole subtree (e.g. at its
    /// quota limit). A role's own frameworks compete with its children as
    /// one more child, like Mesos' virtual leaf.
    pub fn pick(
        &self,
        from: RoleIx,
        enter: &mut impl FnMut(RoleIx) -> bool,
        ok: &mut impl FnMut(RoleIx, FwIx) -> bool,
    ) -> Option<(RoleIx, FwIx)> {
        let node = &self.nodes[from];
        let mut own_done = node.clients.is_empty();
        for &(k, child) in &node.children {
            if !own_done && node.own_key <= k {
                own_done = true;
                if let Some(hit) = self.pick_own(from, ok) {
                    return Some(hit);
                }
            }
            if self.nodes[child].wanting > 0
                && enter(child)
                && let Some(hit) = self.pick(child, enter, ok)
            {
                return Some(hit);
            }
        }
        if !own_done {
            return self.pick_own(from, ok);
        }
        None
    }

    /// Checks the wanting sets and counts against `wants` (tests).
    #[cfg(test)]
    pub fn check_wanting(&self, wants: impl Fn(RoleIx, FwIx) -> bool) -> Result<(), String> {
        let mut below = vec![0usize; self.nodes.len()];
        for (ix, node) in self.nodes.iter().enumerate() {
            for (&fw, &(_, k)) in &node.client_alloc {
                if node.clients.contains(&(k, fw)) != wants(ix, fw) {
                    return Err(format!("framework {fw} in role {ix}: in the order {}", !wants(ix, fw)));
                }
            }
            if node.clients.len() != node.client_alloc.keys().filter(|f| wants(ix, **f)).count() {
                return Err(format!("role {ix}: a stale entry in the order"));
            }
            let mut cur = Some(ix);
            while let Some(c) = cur {
                below[c] += node.clients.len();
                cur = self.nodes[c].parent;
            }
        }
        for (ix, node) in self.nodes.iter().enumerate() {
            if node.wanting != below[ix] {
                return Err(format!(
                    "role {ix}: {} wanting counted, {} there",
                    node.wanting, below[ix]
                ));
            }
        }
        Ok(())
    }

    fn pick_own(&self, role: RoleIx, ok: &mut impl FnMut(RoleIx, FwIx) -> bool) -> Option<(RoleIx, FwIx)> {
        self.nodes[role]
            .clients
            .iter()
            .find(|(_, fw)| ok(role, *fw))
            .map(|(_, fw)| (role, *fw))
    }
}

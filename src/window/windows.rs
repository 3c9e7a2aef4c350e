//! The windows of one level of one (series, field): a deque sorted by
//! start. Readings arrive mostly in time order, so a new window is pushed
//! at the back, pruning pops from the front, and a late window is a binary
//! search and an insert. 48 bytes a window (a `BTreeMap` took ~130).

use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct Sorted<W> {
    items: VecDeque<(i64, W)>,
}

impl<W> Default for Sorted<W> {
    fn default() -> Self {
        Sorted {
            items: VecDeque::new(),
        }
    }
}

impl<W: Default> Sorted<W> {
    fn find(&self, start: i64) -> Result<usize, usize> {
        // Fast path: at or after the back.
        match self.items.back() {
            None => Err(0),
            Some((s, _)) if *s == start => Ok(self.items.len() - 1),
            Some((s, _)) if *s < start => Err(self.items.len()),
            _ => self.items.binary_search_by_key(&start, |(s, _)| *s),
        }
    }

    /// The window starting at `start`, created empty if missing.
    pub fn entry(&mut self, start: i64) -> &mut W {
        let i = match self.find(start) {
            Ok(i) => i,
            Err(i) => {
                if self.items.capacity() == 0 {
                    // Many series hold one window: no room for four.
                    self.items.reserve_exact(1);
                }
                self.items.insert(i, (start, W::default()));
                i
            }
        };
        &mut self.items[i].1
    }

    pub fn get(&self, start: i64) -> Option<&W> {
        self.find(start).ok().map(|i| &self.items[i].1)
    }

    pub fn get_mut(&mut self, start: i64) -> Option<&mut W> {
        self.find(start).ok().map(|i| &mut self.items[i].1)
    }

    /// Windows with `lo <= start < hi`.
    pub fn range_mut(&mut self, lo: i64, hi: i64) -> impl Iterator<Item = (i64, &mut W)> {
        let a = self.items.partition_point(|(s, _)| *s < lo);
        let b = self.items.partition_point(|(s, _)| *s < hi);
        self.items.range_mut(a..b.max(a)).map(|(s, w)| (*s, w))
    }

    /// Windows with `lo <= start < hi`.
    pub fn range(&self, lo: i64, hi: i64) -> impl Iterator<Item = (i64, &W)> {
        let a = self.items.partition_point(|(s, _)| *s < lo);
        let b = self.items.partition_point(|(s, _)| *s < hi);
        self.items.range(a..b.max(a)).map(|(s, w)| (*s, w))
    }

    /// Drops windows starting before `cut`.
    pub fn prune_before(&mut self, cut: i64) {
        let n = self.items.partition_point(|(s, _)| *s < cut);
        self.items.drain(..n);
        if self.items.capacity() > 64 && self.items.len() * 4 < self.items.capacity() {
            self.items.shrink_to(self.items.len() * 2);
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&W) -> bool) {
        self.items.retain(|(_, w)| keep(w));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_whatever_the_arrival_order() {
        let mut s: Sorted<u32> = Sorted::default();
        for t in [5, 1, 9, 3, 9, 7] {
            *s.entry(t) += 1;
        }
        let all: Vec<(i64, u32)> = s.range(i64::MIN, i64::MAX).map(|(t, w)| (t, *w)).collect();
        assert_eq!(all, [(1, 1), (3, 1), (5, 1), (7, 1), (9, 2)]);
        assert_eq!(s.range(3, 7).count(), 2);
        assert_eq!(s.get(4), None);
        assert_eq!(s.get(9), Some(&2));
        s.prune_before(5);
        assert_eq!(s.len(), 3);
        assert_eq!(s.range_mut(6, 100).count(), 2);
        s.prune_before(100);
        assert!(s.is_empty());
    }
}

//! A log's segments in offset order. There is always at least one: the active segment,
//! the one appends go to. The type keeps that true, so no caller has to check.

use std::collections::BTreeMap;

use super::segment::Segment;

#[derive(Debug)]
pub struct Segments {
    /// By base offset; never empty (every method that removes keeps the last one).
    map: BTreeMap<i64, Segment>,
}

impl Segments {
    pub fn new(first: Segment) -> Self {
        let mut map = BTreeMap::new();
        map.insert(first.base_offset, first);
        Segments { map }
    }

    /// Segments opened from disk; `None` when there are none.
    pub fn from_opened(map: BTreeMap<i64, Segment>) -> Option<Self> {
        (!map.is_empty()).then_some(Segments { map })
    }

    pub fn active(&self) -> &Segment {
        self.map.values().next_back().expect("a log always has a segment")
    }

    pub fn active_mut(&mut self) -> &mut Segment {
        self.map.values_mut().next_back().expect("a log always has a segment")
    }

    pub fn oldest(&self) -> &Segment {
        self.map.values().next().expect("a log always has a segment")
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.map.values()
    }

    /// The segment that may hold `offset`, then every later one.
    pub fn starting_at(&self, offset: i64) -> impl Iterator<Item = &Segment> {
        self.map.range(..=offset).next_back().into_iter().chain(self.map.range(offset + 1..)).map(|(_, s)| s)
    }

    /// The segment that may hold `offset` (the oldest when `offset` is below it).
    pub fn holding_mut(&mut self, offset: i64) -> &mut Segment {
        let base = self.map.range(..=offset).next_back().map_or(self.oldest().base_offset, |(b, _)| *b);
        self.map.get_mut(&base).expect("a base offset of the map")
    }

    /// Start a new active segment (its base is the log end offset).
    pub fn roll(&mut self, next: Segment) {
        debug_assert!(next.base_offset >= self.active().base_offset);
        self.map.insert(next.base_offset, next);
    }

    /// Take the oldest segment out if `f` says so and it is not the active one.
    pub fn pop_oldest_if(&mut self, f: impl FnOnce(&Segment) -> bool) -> Option<Segment> {
        if self.map.len() < 2 || !f(self.oldest()) {
            return None;
        }
        self.map.pop_first().map(|(_, s)| s)
    }

    /// Take out every segment whose base offset is above `offset`, as long as one stays;
    /// `None` (nothing taken) when none would.
    pub fn split_above(&mut self, offset: i64) -> Option<Vec<Segment>> {
        if self.oldest().base_offset > offset {
            return None;
        }
        Some(self.map.split_off(&(offset + 1)).into_values().collect())
    }

    /// The segment at `base` and its size, if there is one.
    pub fn size_of(&self, base: i64) -> Option<u64> {
        self.map.get(&base).map(|s| s.size())
    }

    /// Put a cleaned segment in place of the segments with base offsets in
    /// [`new.base_offset`, `end`), returning them. Never the active segment: the caller
    /// checked that `end` is at most its base.
    pub fn replace(&mut self, new: Segment, end: i64) -> Vec<Segment> {
        debug_assert!(end <= self.active().base_offset);
        let bases: Vec<i64> = self.map.range(new.base_offset..end).map(|(b, _)| *b).collect();
        let old = bases.iter().filter_map(|b| self.map.remove(b)).collect();
        self.map.insert(new.base_offset, new);
        old
    }

    /// Make `first` the only segment and return the others, for the caller to delete.
    /// `Segment::create` truncates the files of a segment with the same base offset, so a
    /// replaced segment of that base is dropped here, not returned: deleting it would
    /// delete the new one's files.
    pub fn reset(&mut self, first: Segment) -> Vec<Segment> {
        let base = first.base_offset;
        let old = std::mem::replace(&mut self.map, BTreeMap::from([(base, first)]));
        old.into_iter().filter(|(b, _)| *b != base).map(|(_, s)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(dir: &std::path::Path, bases: &[i64]) -> Segments {
        let mut s = Segments::new(Segment::create(dir, bases[0], 4096).unwrap());
        for b in &bases[1..] {
            s.roll(Segment::create(dir, *b, 4096).unwrap());
        }
        s
    }

    #[test]
    fn the_active_segment_is_never_taken_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = segments(dir.path(), &[0, 10, 20]);
        assert_eq!(s.pop_oldest_if(|_| true).unwrap().base_offset, 0);
        assert_eq!(s.pop_oldest_if(|_| true).unwrap().base_offset, 10);
        assert!(s.pop_oldest_if(|_| true).is_none());
        assert_eq!((s.len(), s.active().base_offset), (1, 20));
    }

    #[test]
    fn split_above_keeps_one_or_takes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = segments(dir.path(), &[5, 10, 20]);
        assert!(s.split_above(4).is_none(), "every segment is above 4");
        assert_eq!(s.len(), 3);
        let taken: Vec<i64> = s.split_above(10).unwrap().iter().map(|s| s.base_offset).collect();
        assert_eq!(taken, vec![20]);
        assert_eq!(s.active().base_offset, 10);
        assert_eq!(s.starting_at(12).map(|s| s.base_offset).collect::<Vec<_>>(), vec![10]);
    }

    #[test]
    fn reset_returns_the_old_segments_but_not_one_of_the_new_base() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = segments(dir.path(), &[0, 10]);
        let old: Vec<i64> =
            s.reset(Segment::create(dir.path(), 10, 4096).unwrap()).iter().map(|s| s.base_offset).collect();
        assert_eq!(old, vec![0]);
        assert_eq!((s.len(), s.oldest().base_offset), (1, 10));
    }
}

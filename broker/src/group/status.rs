//! Burrow's evaluation of a consumer, computed by the coordinator from the group's own
//! commits: lag alone cannot tell a consumer that is slowly catching up from one that is
//! stuck, but the last few commits of each partition can.
//!
//! Per partition, over a window of the last `WINDOW` commits (each with the lag at the
//! time of the commit), in Burrow's order:
//! - any commit in the window with zero lag, or lag now zero: `ok`;
//! - the committed offset went back: `rewind`;
//! - no commit for longer than the window spans, with lag: `stop`. "No commit" means none
//!   by the whole group: librdkafka commits only the partitions it has new offsets for, so a
//!   live consumer reading one partition at a time must not look stopped on the others;
//! - the same offset committed again and again while lag does not fall: `stall`;
//! - offsets move but lag never falls: `warn` (the consumer is slower than producers).
//!
//! The group's status is the worst of its partitions'.

use std::collections::VecDeque;

/// Commits remembered per partition (Burrow's `intervals` default).
pub const WINDOW: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok = 0,
    Warn = 1,
    Stall = 2,
    Stop = 3,
    Rewind = 4,
}

/// One commit of one partition: the offset, the records behind the high watermark then
/// (None when this broker held no replica to ask), and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitSample {
    pub offset: i64,
    pub lag: Option<i64>,
    pub at_ms: i64,
}

/// The last commits of one partition, oldest first.
#[derive(Debug, Clone, Default)]
pub struct CommitWindow(VecDeque<CommitSample>);

impl CommitWindow {
    pub fn push(&mut self, s: CommitSample) {
        if self.0.len() == WINDOW {
            self.0.pop_front();
        }
        self.0.push_back(s);
    }

    /// The status given the partition's lag now and the group's last commit (any partition).
    pub fn evaluate(&self, lag_now: i64, now_ms: i64, group_last_commit_ms: i64) -> Status {
        let w = &self.0;
        let (Some(first), Some(last)) = (w.front(), w.back()) else { return Status::Ok };
        if lag_now == 0 || w.iter().any(|s| s.lag == Some(0)) {
            return Status::Ok;
        }
        if w.iter().zip(w.iter().skip(1)).any(|(a, b)| b.offset < a.offset) {
            return Status::Rewind;
        }
        if w.len() < 2 {
            return Status::Ok;
        }
        if now_ms - last.at_ms.max(group_last_commit_ms) > last.at_ms - first.at_ms {
            return Status::Stop;
        }
        let lags: Option<Vec<i64>> = w.iter().map(|s| s.lag).collect();
        let Some(lags) = lags else { return Status::Ok };
        let lag_never_falls = lags.windows(2).all(|p| p[1] >= p[0]);
        if first.offset == last.offset && lag_never_falls {
            return Status::Stall;
        }
        if lag_never_falls {
            return Status::Warn;
        }
        Status::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits one second apart: (offset, lag).
    fn window(commits: &[(i64, i64)]) -> CommitWindow {
        let mut w = CommitWindow::default();
        for (i, (offset, lag)) in commits.iter().enumerate() {
            w.push(CommitSample { offset: *offset, lag: Some(*lag), at_ms: i as i64 * 1000 });
        }
        w
    }

    #[test]
    fn burrow_rules() {
        // Catching up: lag falls.
        assert_eq!(window(&[(10, 50), (20, 40), (30, 30)]).evaluate(30, 2500, 2000), Status::Ok);
        // Caught up once in the window.
        assert_eq!(window(&[(10, 0), (20, 5), (30, 9)]).evaluate(9, 2500, 2000), Status::Ok);
        // Moving, but slower than the producers.
        assert_eq!(window(&[(10, 50), (20, 60), (30, 70)]).evaluate(70, 2500, 2000), Status::Warn);
        // Committing the same offset while records pile up.
        assert_eq!(window(&[(10, 50), (10, 60), (10, 70)]).evaluate(70, 2500, 2000), Status::Stall);
        // Silent for longer than the window spans (2 s), with lag.
        assert_eq!(window(&[(10, 50), (20, 40), (30, 30)]).evaluate(30, 4500, 2000), Status::Stop);
        // ...unless the group commits other partitions meanwhile: alive, reading elsewhere.
        assert_eq!(window(&[(10, 50), (20, 40), (30, 30)]).evaluate(30, 4500, 4000), Status::Ok);
        // ...and not when it had nothing left to read.
        assert_eq!(window(&[(10, 50), (20, 40), (30, 30)]).evaluate(0, 9000, 2000), Status::Ok);
        // Reset to an earlier offset.
        assert_eq!(window(&[(30, 10), (5, 35), (6, 34)]).evaluate(34, 2500, 2000), Status::Rewind);
        // Unknown lag at commit time: only the rules that need no lag apply.
        let mut w = CommitWindow::default();
        w.push(CommitSample { offset: 1, lag: None, at_ms: 0 });
        w.push(CommitSample { offset: 1, lag: None, at_ms: 1000 });
        assert_eq!(w.evaluate(5, 1500, 1000), Status::Ok);
        assert_eq!(CommitWindow::default().evaluate(5, 0, 0), Status::Ok);
    }

    #[test]
    fn the_window_keeps_the_last_commits() {
        let w = window(&(0..25).map(|i| (i, 100 + i)).collect::<Vec<_>>());
        assert_eq!(w.0.len(), WINDOW);
        assert_eq!(w.0.front().unwrap().offset, 15);
        assert_eq!(Status::Rewind.max(Status::Warn), Status::Rewind);
    }
}

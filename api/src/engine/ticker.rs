//! The ticker thread: expiries of holds and orders go through the log like any command.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::cell::Cell;
use super::Shared;

pub const TICK_INTERVAL: Duration = Duration::from_millis(250);

/// Ticks every shard every `TICK_INTERVAL` (expiries go through the log like any command).
pub(super) fn run_ticker(shared: &Shared, cells: &[Arc<Cell>]) {
    while !shared.stopping.load(Ordering::Acquire) {
        std::thread::sleep(TICK_INTERVAL);
        for cell in cells {
            cell.tick(shared);
        }
    }
}

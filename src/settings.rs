//! The configuration in force as one immutable snapshot, and the cell that swaps it.
//!
//! A [`Settings`] is the validated [`Config`] plus what is derived from it once (the greeting).
//! A reload builds a new one and [`SettingsCell::store`]s it; readers on the hot path keep their
//! `Arc` and only compare [`SettingsCell::generation`] (one relaxed atomic load) before each read,
//! taking the lock only when it moved.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::config::Config;
use crate::protocol::NICK_PROMPT;
use crate::protocol::format::{Wrap, notices};
use crate::protocol::sanitise_str;

/// A configuration and what is derived from it.
#[derive(Debug)]
pub struct Settings {
    /// The validated configuration.
    pub config: Config,
    /// The MOTD (sanitised like any client text) and the nickname prompt, formatted once.
    pub greeting: Bytes,
    /// Where lines carrying someone's text are broken (`wrap_width`).
    pub wrap: Wrap,
}

impl Settings {
    /// Derives everything from `config`.
    pub fn new(config: Config) -> Settings {
        let motd: Vec<String> = config.motd.iter().map(|l| sanitise_str(l)).collect();
        let greeting = notices(motd.iter().map(String::as_str).chain([NICK_PROMPT]));
        let wrap = Wrap::at(config.wrap_width);
        Settings {
            config,
            greeting,
            wrap,
        }
    }
}

impl Config {
    /// The most history lines any room keeps (`history_lines`, or a `[[rooms]]` table's).
    pub fn history_lines_most(&self) -> usize {
        self.rooms
            .iter()
            .filter_map(|r| r.history_lines)
            .chain([self.history_lines])
            .max()
            .unwrap_or(0)
    }
}

/// A `Settings` reads as its configuration: `settings.max_line_bytes`.
impl Deref for Settings {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

/// The current settings, swapped whole on reload.
#[derive(Debug)]
pub struct SettingsCell {
    current: RwLock<Arc<Settings>>,
    generation: AtomicU64,
}

impl SettingsCell {
    /// A cell holding `settings` as generation 0.
    pub fn new(settings: Settings) -> Self {
        SettingsCell {
            current: RwLock::new(Arc::new(settings)),
            generation: AtomicU64::new(0),
        }
    }

    /// The settings in force.
    pub fn load(&self) -> Arc<Settings> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Bumped by every [`store`](Self::store): compare it to know whether to [`load`](Self::load).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts `settings` in force.
    pub fn store(&self, settings: Settings) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// A reader's copy: the settings it uses and the generation they came from.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The settings this reader acts on.
    pub settings: Arc<Settings>,
    generation: u64,
}

impl Snapshot {
    /// The cell's current settings.
    pub fn of(cell: &SettingsCell) -> Snapshot {
        let generation = cell.generation();
        Snapshot {
            settings: cell.load(),
            generation,
        }
    }

    /// Picks up newer settings; returns true if they changed. One atomic load when they did not.
    pub fn refresh(&mut self, cell: &SettingsCell) -> bool {
        if cell.generation() == self.generation {
            return false;
        }
        *self = Snapshot::of(cell);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_follows_stores_and_only_then() {
        let cell = SettingsCell::new(Settings::new(Config::default()));
        let mut snap = Snapshot::of(&cell);
        assert!(!snap.refresh(&cell));
        let config = Config {
            max_line_bytes: 77,
            motd: vec!["hi\u{1b}[2J".into()],
            ..Config::default()
        };
        cell.store(Settings::new(config));
        assert!(snap.refresh(&cell));
        assert_eq!(snap.settings.max_line_bytes, 77);
        assert!(!snap.refresh(&cell));
        let greeting = String::from_utf8(snap.settings.greeting.to_vec()).unwrap();
        assert_eq!(greeting, "*** hi\r\n*** Choose a nickname:\r\n");
    }
}

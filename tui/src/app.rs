//! hooktop's state and the one function that changes it. `update` is pure and synchronous: it
//! never touches the database or the terminal, it returns [`Effect`]s for the loop to carry out,
//! so every key and every answer from the database can be tested without either.

use std::cmp::Ordering;

use chrono::{DateTime, TimeDelta, Utc};
use common::db::archive::ArchiveTarget;
use common::db::clusters::{Cluster, ClusterKey};
use common::db::dlq::DeadEvent;
use common::db::selection::{self, Progress, Selection, Verdict};
use common::db::stats::TypeCounts;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::action::{Action, Command, Effect};
use crate::keymap::{self, Key, Move};
use crate::model::{Bulk, Choice, Detail, Outcome, Snapshot};
use crate::notify::Alerts;

/// How long an action's report stays in the status line.
pub const STATUS_FOR: TimeDelta = TimeDelta::seconds(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Types,
    Clusters,
    Dead,
}

impl Pane {
    /// The panes in `Tab` order, which is also their order on screen.
    pub const ALL: [Pane; 3] = [Pane::Types, Pane::Clusters, Pane::Dead];
}

/// The panes, each with its own selection, and the one that has the focus. A new pane is a
/// `Pane` variant, its place in [`Pane::ALL`], its rows in [`App::rows`] and
/// [`App::row_keys`], and its widget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panes {
    pub focus: Pane,
    selected: [usize; Pane::ALL.len()],
}

impl Panes {
    fn index(pane: Pane) -> usize {
        Pane::ALL.iter().position(|p| *p == pane).unwrap_or(0)
    }

    pub fn selected(&self, pane: Pane) -> usize {
        self.selected[Self::index(pane)]
    }

    pub fn select(&mut self, pane: Pane, row: usize) {
        self.selected[Self::index(pane)] = row;
    }

    fn step(&mut self, by: usize) {
        self.focus = Pane::ALL[(Self::index(self.focus) + by) % Pane::ALL.len()];
    }
}

/// A column a table can be sorted by; `s` cycles through [`Column::ALL`] in order.
pub trait Column: Copy + PartialEq + 'static {
    const ALL: &'static [Self];
    fn label(self) -> &'static str;
    /// Counts and times put the largest first; names read A to Z.
    fn descending_first(self) -> bool {
        true
    }
}

/// How a table is sorted: a column and a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort<C> {
    pub by: C,
    pub descending: bool,
}

impl<C: Column> Sort<C> {
    pub fn new(by: C) -> Self {
        Sort {
            by,
            descending: by.descending_first(),
        }
    }

    fn cycle(&mut self) {
        let i = C::ALL.iter().position(|c| *c == self.by).unwrap_or(0);
        *self = Sort::new(C::ALL[(i + 1) % C::ALL.len()]);
    }

    fn reverse(&mut self) {
        self.descending = !self.descending;
    }

    /// `order` (ascending by the column) in this sort's direction.
    fn directed(self, order: Ordering) -> Ordering {
        if self.descending {
            order.reverse()
        } else {
            order
        }
    }

    pub fn arrow(self) -> &'static str {
        if self.descending { "▼" } else { "▲" }
    }
}

/// What the event type table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Dead,
    Retrying,
    Received,
    Succeeded,
    Skipped,
    Name,
}

impl Column for SortKey {
    const ALL: &'static [SortKey] = &[
        SortKey::Dead,
        SortKey::Retrying,
        SortKey::Received,
        SortKey::Succeeded,
        SortKey::Skipped,
        SortKey::Name,
    ];

    fn label(self) -> &'static str {
        match self {
            SortKey::Dead => "dead",
            SortKey::Retrying => "retrying",
            SortKey::Received => "received",
            SortKey::Succeeded => "ok",
            SortKey::Skipped => "skipped",
            SortKey::Name => "name",
        }
    }

    fn descending_first(self) -> bool {
        self != SortKey::Name
    }
}

impl SortKey {
    fn value(self, t: &TypeCounts) -> i64 {
        match self {
            SortKey::Dead => t.dead_now,
            SortKey::Retrying => t.retrying_now,
            SortKey::Received => t.received,
            SortKey::Succeeded => t.succeeded,
            SortKey::Skipped => t.skipped,
            SortKey::Name => 0,
        }
    }
}

/// What the error clusters are sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterSort {
    Count,
    LastDeath,
    FirstDeath,
}

impl Column for ClusterSort {
    const ALL: &'static [ClusterSort] = &[
        ClusterSort::Count,
        ClusterSort::LastDeath,
        ClusterSort::FirstDeath,
    ];

    fn label(self) -> &'static str {
        match self {
            ClusterSort::Count => "count",
            ClusterSort::LastDeath => "last death",
            ClusterSort::FirstDeath => "first death",
        }
    }
}

impl ClusterSort {
    fn order(self, a: &Cluster, b: &Cluster) -> Ordering {
        match self {
            ClusterSort::Count => a.count.cmp(&b.count),
            ClusterSort::LastDeath => a.last_death.cmp(&b.last_death),
            ClusterSort::FirstDeath => a.first_death.cmp(&b.first_death),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum DbState {
    Connecting,
    Up,
    Down { since: DateTime<Utc>, error: String },
}

/// A bulk action's question: what it would be for, each choice as previewed.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirm {
    pub op: Bulk,
    /// The narrowed set first (a cluster's or the filter's) when there is one, then all dead
    /// events.
    pub choices: Vec<Choice>,
    pub chosen: usize,
}

impl Confirm {
    pub fn choice(&self) -> &Choice {
        &self.choices[self.chosen]
    }
}

/// A canary retry being watched.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryView {
    /// The preview it was taken from; the rest is retried by its token.
    pub choice: Choice,
    /// The events it retried, newest death first; empty until they are.
    pub ids: Vec<i64>,
    pub progress: Vec<Progress>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone)]
pub struct DetailView {
    pub id: i64,
    /// `None` while loading.
    pub detail: Option<Result<Option<Box<Detail>>, String>>,
    pub scroll: u16,
}

#[derive(Debug, Clone)]
pub enum Overlay {
    None,
    Help,
    Detail(DetailView),
    Confirm(Confirm),
    Canary(CanaryView),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Success,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub text: String,
    pub level: Level,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub alert_below: f64,
    pub notify: bool,
    pub color: bool,
    /// Where purges archive, for the confirmation to say.
    pub archive: ArchiveTarget,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            alert_below: 0.9,
            notify: true,
            color: true,
            archive: ArchiveTarget::Dir("/var/lib/hookd/archive".into()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct App {
    pub settings: Settings,
    pub now: DateTime<Utc>,
    pub db: DbState,
    pub snapshot: Option<Snapshot>,
    /// The dead events grouped by cause; `None` until they are first read.
    pub clusters: Option<Vec<Cluster>>,
    pub panes: Panes,
    pub sort: Sort<SortKey>,
    pub cluster_sort: Sort<ClusterSort>,
    /// The filter in force; the DLQ list in the snapshot may still be for an older one.
    pub filter: String,
    /// The cluster the DLQ list is narrowed to, in force (as `filter`).
    pub cluster: Option<ClusterKey>,
    /// While `/` is being typed: the text so far.
    pub filter_input: Option<String>,
    pub overlay: Overlay,
    /// A preview was asked for, the confirmation opens when it arrives.
    pub counting: Option<Bulk>,
    /// A bulk action is running.
    pub running: Option<Bulk>,
    /// The running retry is the rest of a canary of this many events.
    pub after_canary: Option<usize>,
    pub status: Option<Status>,
    /// Why desktop notifications do not work, if they do not.
    pub notify_note: Option<String>,
    pub alerts: Alerts,
    pub quit: bool,
}

impl App {
    pub fn new(settings: Settings, now: DateTime<Utc>) -> Self {
        App {
            alerts: Alerts::new(settings.alert_below),
            settings,
            now,
            db: DbState::Connecting,
            snapshot: None,
            clusters: None,
            panes: Panes {
                focus: Pane::Dead,
                selected: [0; Pane::ALL.len()],
            },
            sort: Sort::new(SortKey::Dead),
            cluster_sort: Sort::new(ClusterSort::Count),
            filter: String::new(),
            cluster: None,
            filter_input: None,
            overlay: Overlay::None,
            counting: None,
            running: None,
            after_canary: None,
            status: None,
            notify_note: None,
            quit: false,
        }
    }

    /// The event type rows on screen: filtered and sorted.
    pub fn visible_types(&self) -> Vec<&TypeCounts> {
        let Some(snapshot) = &self.snapshot else {
            return Vec::new();
        };
        let needle = self.filter.trim().to_lowercase();
        let mut rows: Vec<&TypeCounts> = snapshot
            .by_type
            .iter()
            .filter(|t| {
                needle.is_empty()
                    || t.source.to_lowercase().contains(&needle)
                    || t.event_type.to_lowercase().contains(&needle)
            })
            .collect();
        let by_name = |a: &&TypeCounts, b: &&TypeCounts| {
            (a.source.as_str(), a.event_type.as_str()).cmp(&(b.source.as_str(), &b.event_type))
        };
        let sort = self.sort;
        rows.sort_by(|a, b| {
            let order = if sort.by == SortKey::Name {
                by_name(a, b)
            } else {
                sort.by.value(a).cmp(&sort.by.value(b))
            };
            // Ties stay in name order whichever way the column goes, so rows do not jump.
            sort.directed(order).then_with(|| by_name(a, b))
        });
        rows
    }

    /// The error clusters on screen: filtered like the event types, and sorted.
    pub fn visible_clusters(&self) -> Vec<&Cluster> {
        let needle = self.filter.trim().to_lowercase();
        let mut rows: Vec<&Cluster> = self
            .clusters
            .iter()
            .flatten()
            .filter(|c| {
                needle.is_empty()
                    || [&c.source, &c.event_type, &c.fingerprint]
                        .iter()
                        .any(|field| field.to_lowercase().contains(&needle))
            })
            .collect();
        let sort = self.cluster_sort;
        rows.sort_by(|a, b| {
            let by_name = (&a.source, &a.event_type, &a.fingerprint).cmp(&(
                &b.source,
                &b.event_type,
                &b.fingerprint,
            ));
            sort.directed(sort.by.order(a, b)).then(by_name)
        });
        rows
    }

    pub fn selected_cluster(&self) -> Option<&Cluster> {
        self.visible_clusters()
            .get(self.panes.selected(Pane::Clusters))
            .copied()
    }

    pub fn dead(&self) -> &[DeadEvent] {
        self.snapshot.as_ref().map_or(&[], |s| s.dead.as_slice())
    }

    pub fn selected_dead(&self) -> Option<&DeadEvent> {
        self.dead().get(self.panes.selected(Pane::Dead))
    }

    /// The status line's message, if it is recent enough to matter.
    pub fn current_status(&self) -> Option<&Status> {
        self.status
            .as_ref()
            .filter(|s| self.now - s.at < STATUS_FOR || s.level == Level::Error)
    }

    fn say(&mut self, level: Level, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            level,
            at: self.now,
        });
    }

    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Key(key) => self.on_key(key),
            Action::Resize => Vec::new(),
            Action::Tick(now) => {
                self.now = self.now.max(now);
                self.due_notifications()
            }
            Action::Snapshot(snapshot) => self.on_snapshot(*snapshot),
            Action::Clusters(clusters) => {
                self.keeping_selections(|app| app.clusters = Some(clusters));
                Vec::new()
            }
            Action::DbDown { since, error } => {
                self.db = DbState::Down { since, error };
                Vec::new()
            }
            Action::Previewed { op, result } => self.on_previewed(op, result),
            Action::Canary(progress) => self.on_canary(progress),
            Action::Retried { id, result } => {
                match result {
                    Ok(()) => self.say(Level::Success, format!("retried event {id}")),
                    Err(e) => self.say(Level::Error, format!("retry of event {id} failed: {e}")),
                }
                vec![Effect::Command(Command::Refresh)]
            }
            Action::Bulk { op, result } => self.on_bulk(op, result),
            Action::Detail { id, result } => {
                if let Overlay::Detail(view) = &mut self.overlay
                    && view.id == id
                {
                    view.detail = Some(result);
                }
                Vec::new()
            }
            Action::Found { key, result } => self.on_found(&key, result),
            Action::NotifyFailed(reason) => {
                self.notify_note = Some(reason);
                Vec::new()
            }
            Action::Quit => self.quit(),
        }
    }

    /// Opens the event a filter named, unless the user has moved on since (another filter,
    /// an overlay of their own).
    fn on_found(&mut self, key: &str, result: Result<Vec<i64>, String>) -> Vec<Effect> {
        if key != self.filter || !matches!(self.overlay, Overlay::None) {
            return Vec::new();
        }
        match result.as_deref() {
            Ok([]) => Vec::new(),
            Ok(ids) => {
                let id = ids[0];
                if ids.len() > 1 {
                    let n = ids.len();
                    self.say(
                        Level::Info,
                        format!("{n} events have the id {key}; showing event {id}"),
                    );
                }
                self.overlay = Overlay::Detail(DetailView {
                    id,
                    detail: None,
                    scroll: 0,
                });
                vec![Effect::Command(Command::LoadDetail(id))]
            }
            Err(e) => {
                self.say(Level::Error, format!("looking up {key}: {e}"));
                Vec::new()
            }
        }
    }

    fn quit(&mut self) -> Vec<Effect> {
        self.quit = true;
        vec![Effect::Quit]
    }

    /// How many rows `pane` has on screen.
    pub fn rows(&self, pane: Pane) -> usize {
        self.row_keys(pane).len()
    }

    /// What identifies each row of `pane`, in screen order.
    fn row_keys(&self, pane: Pane) -> Vec<RowKey> {
        match pane {
            Pane::Types => self
                .visible_types()
                .iter()
                .map(|t| RowKey::Type(t.source.clone(), t.event_type.clone()))
                .collect(),
            Pane::Clusters => self
                .visible_clusters()
                .iter()
                .map(|c| RowKey::Cluster(c.key()))
                .collect(),
            Pane::Dead => self.dead().iter().map(|e| RowKey::Event(e.id)).collect(),
        }
    }

    /// Runs `change` on the data behind the panes, keeping each selection on its row: new
    /// deaths push rows down, and `r` must retry what the user is looking at. A row that is
    /// gone leaves the selection where it was, within bounds.
    fn keeping_selections(&mut self, change: impl FnOnce(&mut Self)) {
        let before: Vec<Option<RowKey>> = Pane::ALL
            .iter()
            .map(|&pane| {
                self.row_keys(pane)
                    .into_iter()
                    .nth(self.panes.selected(pane))
            })
            .collect();
        change(self);
        for (&pane, key) in Pane::ALL.iter().zip(before) {
            let keys = self.row_keys(pane);
            let row = key
                .and_then(|key| keys.iter().position(|k| *k == key))
                .unwrap_or(self.panes.selected(pane))
                .min(keys.len().saturating_sub(1));
            self.panes.select(pane, row);
        }
    }

    fn on_snapshot(&mut self, snapshot: Snapshot) -> Vec<Effect> {
        self.now = self.now.max(snapshot.taken_at);
        self.db = DbState::Up;
        self.alerts.dead.observe(
            self.now,
            &snapshot.recent_dead,
            crate::data::RECENT_DEAD as usize,
        );
        let rate_alert = self
            .alerts
            .rate
            .observe(snapshot.last_5m.event_success_rate());
        self.keeping_selections(|app| app.snapshot = Some(snapshot));
        let mut out = Vec::new();
        if self.settings.notify {
            out.extend(rate_alert.map(Effect::Notify));
        }
        out.extend(self.due_notifications());
        out
    }

    fn due_notifications(&mut self) -> Vec<Effect> {
        let due = self.alerts.dead.due(self.now);
        match due {
            Some(n) if self.settings.notify => vec![Effect::Notify(n)],
            _ => Vec::new(),
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            return self.quit();
        }
        if self.filter_input.is_some() {
            return self.on_filter_key(key);
        }
        match &self.overlay {
            Overlay::None => self.on_main_key(key),
            Overlay::Help => {
                match key.code {
                    KeyCode::Char('q') => return self.quit(),
                    KeyCode::Esc | KeyCode::Char('?') | KeyCode::Enter => {
                        self.overlay = Overlay::None
                    }
                    _ => {}
                }
                Vec::new()
            }
            Overlay::Confirm(confirm) => {
                let confirm = confirm.clone();
                match key.code {
                    KeyCode::Char('y' | 'Y') | KeyCode::Enter => self.confirmed(confirm),
                    KeyCode::Char('n' | 'N') | KeyCode::Esc => {
                        self.overlay = Overlay::None;
                        self.say(Level::Info, "cancelled: nothing changed");
                        Vec::new()
                    }
                    KeyCode::Tab
                    | KeyCode::BackTab
                    | KeyCode::Up
                    | KeyCode::Down
                    | KeyCode::Char('j' | 'k') => {
                        if let Overlay::Confirm(confirm) = &mut self.overlay {
                            confirm.chosen = (confirm.chosen + 1) % confirm.choices.len();
                        }
                        Vec::new()
                    }
                    KeyCode::Char('q') => self.quit(),
                    _ => Vec::new(),
                }
            }
            Overlay::Canary(view) => {
                let view = view.clone();
                self.on_canary_key(view, key.code)
            }
            Overlay::Detail(view) => {
                let id = view.id;
                match key.code {
                    KeyCode::Char('q') => return self.quit(),
                    KeyCode::Esc | KeyCode::Enter => self.overlay = Overlay::None,
                    KeyCode::Char('r') => return self.retry(id),
                    KeyCode::Char('?') => self.overlay = Overlay::Help,
                    code => {
                        if let Overlay::Detail(view) = &mut self.overlay {
                            view.scroll = scroll(view.scroll, code);
                        }
                    }
                }
                Vec::new()
            }
        }
    }

    fn on_main_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let Some(key) = keymap::lookup(key) else {
            return Vec::new();
        };
        match key {
            Key::Quit => return self.quit(),
            Key::Help => self.overlay = Overlay::Help,
            Key::NextPane => self.panes.step(1),
            Key::PrevPane => self.panes.step(Pane::ALL.len() - 1),
            Key::Filter => self.filter_input = Some(self.filter.clone()),
            Key::Escape if self.cluster.is_some() => {
                self.cluster = None;
                self.panes.select(Pane::Dead, 0);
                self.panes.focus = Pane::Clusters;
                self.say(Level::Info, "listing all dead events");
                return vec![Effect::Command(Command::SetCluster(None))];
            }
            Key::Escape if !self.filter.is_empty() => {
                self.filter.clear();
                self.say(Level::Info, "filter cleared");
                return vec![Effect::Command(Command::SetFilter(String::new()))];
            }
            Key::Escape => {
                self.counting = None;
            }
            // The clusters sort when they have the focus; otherwise the event types do, as
            // they did before there were clusters.
            Key::Sort | Key::Reverse if self.panes.focus == Pane::Clusters => {
                if key == Key::Sort {
                    self.cluster_sort.cycle();
                } else {
                    self.cluster_sort.reverse();
                }
                self.panes.select(Pane::Clusters, 0);
            }
            Key::Sort => {
                self.sort.cycle();
                self.panes.select(Pane::Types, 0);
            }
            Key::Reverse => {
                self.sort.reverse();
                self.panes.select(Pane::Types, 0);
            }
            Key::Open => match self.panes.focus {
                Pane::Types => {
                    self.say(Level::Info, "Tab to the dead-letter queue to open an event");
                }
                Pane::Clusters => {
                    if let Some(key) = self.selected_cluster().map(Cluster::key) {
                        return self.list_cluster(key);
                    }
                }
                Pane::Dead => {
                    if let Some(id) = self.selected_dead().map(|e| e.id) {
                        self.overlay = Overlay::Detail(DetailView {
                            id,
                            detail: None,
                            scroll: 0,
                        });
                        return vec![Effect::Command(Command::LoadDetail(id))];
                    }
                }
            },
            Key::Retry => {
                if self.panes.focus != Pane::Dead {
                    self.say(Level::Info, "Tab to the dead-letter queue to pick an event");
                } else if let Some(id) = self.selected_dead().map(|e| e.id) {
                    return self.retry(id);
                } else {
                    self.say(Level::Info, "no dead event selected");
                }
            }
            Key::RetryAll => return self.ask(Bulk::Retry),
            Key::Canary => return self.ask(Bulk::Canary),
            Key::Purge => return self.ask(Bulk::Purge),
            Key::Move(to) => self.move_selection(to),
        }
        Vec::new()
    }

    /// Narrows the DLQ list to `key`'s events and moves there.
    fn list_cluster(&mut self, key: ClusterKey) -> Vec<Effect> {
        self.say(
            Level::Info,
            "listing the cluster's dead events · Esc lists all",
        );
        self.cluster = Some(key.clone());
        self.panes.focus = Pane::Dead;
        self.panes.select(Pane::Dead, 0);
        vec![Effect::Command(Command::SetCluster(Some(key)))]
    }

    fn retry(&mut self, id: i64) -> Vec<Effect> {
        self.say(Level::Info, format!("retrying event {id}…"));
        vec![Effect::Command(Command::Retry(id))]
    }

    /// Bulk actions preview first: the confirmation states what will happen, and the action
    /// is bound to what the preview counted.
    fn ask(&mut self, op: Bulk) -> Vec<Effect> {
        if let Some(running) = self.running {
            let what = match running {
                Bulk::Retry => "a retry",
                Bulk::Canary => "a canary",
                Bulk::Purge => "a purge",
            };
            self.say(Level::Info, format!("{what} is still running"));
            return Vec::new();
        }
        let narrowed = self.narrowed();
        let selections = match op {
            Bulk::Retry => narrowed.into_iter().chain([Selection::All]).collect(),
            Bulk::Canary => vec![narrowed.unwrap_or(Selection::All)],
            Bulk::Purge => Vec::new(),
        };
        self.counting = Some(op);
        vec![Effect::Command(Command::Preview { op, selections })]
    }

    /// The set on screen that a bulk action may be for instead of every dead event: the
    /// cluster listed, else the cluster selected in its pane, else what the filter matches.
    pub fn narrowed(&self) -> Option<Selection> {
        if let Some(key) = &self.cluster {
            return Some(Selection::cluster(key));
        }
        if self.panes.focus == Pane::Clusters
            && let Some(cluster) = self.selected_cluster()
        {
            return Some(Selection::cluster(&cluster.key()));
        }
        match crate::data::filter_selection(&self.filter) {
            Selection::All => None,
            narrowed => Some(narrowed),
        }
    }

    fn on_previewed(&mut self, op: Bulk, result: Result<Vec<Choice>, String>) -> Vec<Effect> {
        if self.counting != Some(op) {
            return Vec::new();
        }
        self.counting = None;
        let choices = match result {
            Ok(choices) => choices,
            Err(e) => {
                self.say(Level::Error, format!("{}: {e}", op_name(op)));
                return Vec::new();
            }
        };
        let Some(chosen) = choices.iter().position(|c| c.count > 0) else {
            let text = match op {
                Bulk::Retry => "no dead events to retry",
                Bulk::Canary => "no dead events to try a canary on",
                Bulk::Purge => {
                    "nothing to purge: no dead events older than 7 days, none superseded"
                }
            };
            self.say(Level::Info, text);
            return Vec::new();
        };
        if matches!(self.overlay, Overlay::None) {
            self.overlay = Overlay::Confirm(Confirm {
                op,
                choices,
                chosen,
            });
        }
        Vec::new()
    }

    fn confirmed(&mut self, confirm: Confirm) -> Vec<Effect> {
        let op = confirm.op;
        let choice = confirm.choice().clone();
        if choice.count == 0 {
            self.say(Level::Info, format!("no {}: nothing to do", choice.what));
            return Vec::new();
        }
        self.overlay = Overlay::None;
        self.running = Some(op);
        let n = choice.count;
        let text = match op {
            Bulk::Retry => format!("retrying {n} dead {}…", events(n as u64)),
            Bulk::Canary => {
                self.overlay = Overlay::Canary(CanaryView {
                    choice: choice.clone(),
                    ids: Vec::new(),
                    progress: Vec::new(),
                    verdict: Verdict::Running,
                });
                format!(
                    "canary: retrying {} of {n}…",
                    crate::data::CANARY_SIZE.min(n)
                )
            }
            Bulk::Purge => format!("purging {n} dead {}…", events(n as u64)),
        };
        self.say(Level::Info, text);
        vec![Effect::Command(Command::Run { op, choice })]
    }

    fn on_bulk(&mut self, op: Bulk, result: Result<Outcome, String>) -> Vec<Effect> {
        self.running = None;
        if self.counting == Some(op) {
            self.counting = None;
        }
        let after_canary = self.after_canary.take();
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                if op == Bulk::Canary && matches!(self.overlay, Overlay::Canary(_)) {
                    self.overlay = Overlay::None;
                }
                self.say(Level::Error, format!("{}: {e}", op_name(op)));
                return vec![Effect::Command(Command::Refresh)];
            }
        };
        match outcome {
            Outcome::Retried(done) => {
                let text = match after_canary {
                    Some(canaries) => {
                        let changed = (done.skipped - canaries as i64).max(0);
                        let mut text = format!(
                            "retried the other {} after the canary's {canaries}",
                            done.retried
                        );
                        if changed > 0 {
                            text.push_str(&format!(
                                ", {changed} had changed since the preview \
                                 (already retried or purged)"
                            ));
                        }
                        text
                    }
                    None => done.to_string(),
                };
                self.say(Level::Success, text);
            }
            // The receipt's archive line joins the status line.
            Outcome::Purged(receipt) => {
                self.say(Level::Success, receipt.to_string().replace('\n', " · "))
            }
            Outcome::CanaryStarted(ids) => {
                let Overlay::Canary(view) = &mut self.overlay else {
                    self.say(
                        Level::Info,
                        format!("canary retried {} events; not watched", ids.len()),
                    );
                    return vec![Effect::Command(Command::Refresh)];
                };
                if ids.is_empty() {
                    self.overlay = Overlay::None;
                    self.say(
                        Level::Info,
                        "no event of the preview is still dead: nothing to try",
                    );
                    return vec![Effect::Command(Command::Refresh)];
                }
                view.ids = ids.clone();
                let n = ids.len();
                self.say(
                    Level::Info,
                    format!("canary: retried {n}; waiting for hookd to process them"),
                );
                return vec![Effect::Command(Command::Watch(ids))];
            }
        }
        vec![Effect::Command(Command::Refresh)]
    }

    fn on_canary(&mut self, progress: Vec<Progress>) -> Vec<Effect> {
        let Overlay::Canary(view) = &mut self.overlay else {
            return Vec::new();
        };
        if view.ids.is_empty() || view.verdict != Verdict::Running {
            return Vec::new();
        }
        view.verdict = selection::verdict(&view.ids, &progress);
        view.progress = progress;
        let n = view.ids.len();
        let rest = (view.choice.count - n as i64).max(0);
        let (level, text) = match view.verdict {
            Verdict::Running => return Vec::new(),
            Verdict::Succeeded => (
                Level::Success,
                format!("canary succeeded: all {n} were processed; y retries the other {rest}"),
            ),
            Verdict::Failed => (
                Level::Error,
                "canary failed again: the rest was not retried".to_owned(),
            ),
        };
        self.say(level, text);
        // The verdict is final: the canary's events need not be read any more.
        vec![Effect::Command(Command::Watch(Vec::new()))]
    }

    fn on_canary_key(&mut self, view: CanaryView, code: KeyCode) -> Vec<Effect> {
        match code {
            KeyCode::Char('y' | 'Y') | KeyCode::Enter if view.verdict == Verdict::Succeeded => {
                self.overlay = Overlay::None;
                self.running = Some(Bulk::Retry);
                self.after_canary = Some(view.ids.len());
                let rest = (view.choice.count - view.ids.len() as i64).max(0);
                self.say(Level::Info, format!("retrying the other {rest}…"));
                vec![Effect::Command(Command::Run {
                    op: Bulk::Retry,
                    choice: view.choice,
                })]
            }
            KeyCode::Char('n' | 'N') | KeyCode::Esc | KeyCode::Enter => {
                self.overlay = Overlay::None;
                let text = match view.verdict {
                    Verdict::Running => {
                        "canary closed before its verdict: the rest was not retried"
                    }
                    Verdict::Succeeded => "stopped after the canary: the rest was not retried",
                    Verdict::Failed => "canary failed again: the rest was not retried",
                };
                self.say(Level::Info, text);
                vec![Effect::Command(Command::Watch(Vec::new()))]
            }
            KeyCode::Char('q') => self.quit(),
            _ => Vec::new(),
        }
    }

    fn move_selection(&mut self, to: Move) {
        let pane = self.panes.focus;
        let len = self.rows(pane);
        let selected = self.panes.selected(pane);
        let last = len.saturating_sub(1);
        let row = match to {
            Move::Down => (selected + 1).min(last),
            Move::Up => selected.saturating_sub(1),
            Move::PageDown => (selected + 10).min(last),
            Move::PageUp => selected.saturating_sub(10),
            Move::Top => 0,
            Move::End => last,
        };
        self.panes.select(pane, row);
    }

    fn on_filter_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let Some(input) = &mut self.filter_input else {
            return Vec::new();
        };
        match key.code {
            KeyCode::Enter => {
                self.filter = input.trim().to_owned();
                self.filter_input = None;
                for pane in Pane::ALL {
                    self.panes.select(pane, 0);
                }
                let text = if self.filter.is_empty() {
                    "filter cleared".to_owned()
                } else {
                    format!("filter: {}", self.filter)
                };
                self.say(Level::Info, text);
                let mut out = vec![Effect::Command(Command::SetFilter(self.filter.clone()))];
                // A new filter is what the user wants the DLQ to show now, so it replaces
                // the cluster. The filter goes first: the refresh in between, if any, still
                // shows the cluster rather than the old filter's list.
                if self.cluster.take().is_some() {
                    out.push(Effect::Command(Command::SetCluster(None)));
                }
                // The text may be an event's id from a provider's dashboard or a log: that
                // event is shown whatever its state, dead or not.
                if !self.filter.is_empty() {
                    out.push(Effect::Command(Command::Find(self.filter.clone())));
                }
                return out;
            }
            KeyCode::Esc => {
                self.filter_input = None;
                return Vec::new();
            }
            KeyCode::Backspace => {
                input.pop();
            }
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => input.clear(),
            KeyCode::Char(c) if !c.is_control() && input.chars().count() < 100 => input.push(c),
            _ => {}
        }
        Vec::new()
    }
}

/// What a row is, whatever its position.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RowKey {
    Type(String, String),
    Cluster(ClusterKey),
    Event(i64),
}

fn scroll(at: u16, code: KeyCode) -> u16 {
    match code {
        KeyCode::Char('j') | KeyCode::Down => at.saturating_add(1),
        KeyCode::Char('k') | KeyCode::Up => at.saturating_sub(1),
        KeyCode::PageDown | KeyCode::Char(' ') => at.saturating_add(10),
        KeyCode::PageUp => at.saturating_sub(10),
        KeyCode::Char('g') | KeyCode::Home => 0,
        _ => at,
    }
}

fn op_name(op: Bulk) -> &'static str {
    match op {
        Bulk::Retry => "retry",
        Bulk::Canary => "canary",
        Bulk::Purge => "purge",
    }
}

pub fn events(n: u64) -> &'static str {
    if n == 1 { "event" } else { "events" }
}

#[cfg(test)]
mod tests;

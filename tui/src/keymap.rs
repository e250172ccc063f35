//! The keys of the main view, in one table: [`App`](crate::app::App) dispatches on it, the help
//! overlay lists it, the status line hints from it, and a test holds the README's key table
//! to it. A new key is a row here and an arm in `App::on_main_key`.

use crossterm::event::{KeyCode, KeyEvent};

/// What a key of the main view asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Quit,
    Help,
    NextPane,
    PrevPane,
    Filter,
    /// Leave a cluster's list, clear the filter, or drop a count that was asked for.
    Escape,
    Sort,
    Reverse,
    Open,
    Retry,
    RetryAll,
    Canary,
    Purge,
    Move(Move),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Down,
    Up,
    PageDown,
    PageUp,
    Top,
    End,
}

/// One row of the help: the keys as shown, what they do, and the codes that do it.
pub struct Binding {
    pub keys: &'static str,
    pub help: &'static str,
    pub codes: &'static [(KeyCode, Key)],
    /// Its place and words in the status line's hints, if it has one.
    pub hint: Option<(u8, &'static str, &'static str)>,
}

const fn ch(c: char) -> KeyCode {
    KeyCode::Char(c)
}

pub const MAIN: &[Binding] = &[
    Binding {
        keys: "j/k, ↓/↑",
        help: "move the selection (PgUp/PgDn, g/G: page, top, end)",
        codes: &[
            (ch('j'), Key::Move(Move::Down)),
            (KeyCode::Down, Key::Move(Move::Down)),
            (ch('k'), Key::Move(Move::Up)),
            (KeyCode::Up, Key::Move(Move::Up)),
            (KeyCode::PageDown, Key::Move(Move::PageDown)),
            (KeyCode::PageUp, Key::Move(Move::PageUp)),
            (ch('g'), Key::Move(Move::Top)),
            (KeyCode::Home, Key::Move(Move::Top)),
            (ch('G'), Key::Move(Move::End)),
            (KeyCode::End, Key::Move(Move::End)),
        ],
        hint: None,
    },
    Binding {
        keys: "Tab",
        help: "next pane: types, clusters, dead letters (Shift-Tab: back)",
        codes: &[
            (KeyCode::Tab, Key::NextPane),
            (KeyCode::BackTab, Key::PrevPane),
        ],
        hint: Some((2, "Tab", "pane")),
    },
    Binding {
        keys: "Enter",
        help: "open a dead event (payload, error, history) or a cluster's list",
        codes: &[(KeyCode::Enter, Key::Open)],
        hint: Some((3, "Enter", "open")),
    },
    Binding {
        keys: "r",
        help: "retry the selected dead event",
        codes: &[(ch('r'), Key::Retry)],
        hint: Some((4, "r", "retry")),
    },
    Binding {
        keys: "R",
        help: "retry the cluster's, filter's or all dead events (asks first)",
        codes: &[(ch('R'), Key::RetryAll)],
        hint: Some((5, "R", "retry all")),
    },
    Binding {
        keys: "c",
        help: "canary: retry 5 of them first, the rest only if they succeed",
        codes: &[(ch('c'), Key::Canary)],
        hint: None,
    },
    Binding {
        keys: "p",
        help: "purge dead over 7 days or superseded, archived first (asks)",
        codes: &[(ch('p'), Key::Purge)],
        hint: Some((6, "p", "purge")),
    },
    Binding {
        keys: "/",
        help: "filter by type, source or text, or open any event by its id",
        codes: &[(ch('/'), Key::Filter)],
        hint: Some((7, "/", "filter")),
    },
    Binding {
        keys: "Esc",
        help: "close an overlay, leave a cluster's list, or clear the filter",
        codes: &[(KeyCode::Esc, Key::Escape)],
        hint: None,
    },
    Binding {
        keys: "s / S",
        help: "sort the types (clusters when focused): next column / reverse",
        codes: &[(ch('s'), Key::Sort), (ch('S'), Key::Reverse)],
        hint: Some((8, "s", "sort")),
    },
    Binding {
        keys: "?",
        help: "this help",
        codes: &[(ch('?'), Key::Help)],
        hint: Some((0, "?", "help")),
    },
    Binding {
        keys: "q",
        help: "quit (also Ctrl-C)",
        codes: &[(ch('q'), Key::Quit)],
        hint: Some((1, "q", "quit")),
    },
];

/// What `event` does in the main view, if anything.
pub fn lookup(event: KeyEvent) -> Option<Key> {
    MAIN.iter()
        .flat_map(|b| b.codes)
        .find(|(code, _)| *code == event.code)
        .map(|(_, key)| *key)
}

/// The status line's hints, in their order.
pub fn hints() -> Vec<(&'static str, &'static str)> {
    let mut hints: Vec<_> = MAIN.iter().filter_map(|b| b.hint).collect();
    hints.sort_by_key(|(rank, _, _)| *rank);
    hints
        .into_iter()
        .map(|(_, key, what)| (key, what))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_code_does_two_things() {
        let codes: Vec<KeyCode> = MAIN.iter().flat_map(|b| b.codes).map(|(c, _)| *c).collect();
        for (i, code) in codes.iter().enumerate() {
            assert!(!codes[i + 1..].contains(code), "{code:?} is bound twice");
        }
    }

    /// README.md's hooktop key table is this table: the same rows, in the same order.
    #[test]
    fn the_readme_key_table_is_this_table() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## hooktop")
            .nth(1)
            .expect("README has a hooktop section");
        let rows: Vec<(String, String)> = section
            .lines()
            .skip_while(|l| !l.starts_with("| key |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
                (cells[0].trim().replace('`', ""), cells[1].trim().to_owned())
            })
            .collect();
        let table: Vec<(String, String)> = MAIN
            .iter()
            .map(|b| (b.keys.to_owned(), b.help.to_owned()))
            .collect();
        assert_eq!(rows, table);
    }
}

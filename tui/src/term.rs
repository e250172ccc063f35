//! The real terminal: raw mode and the alternate screen, undone on every way out (normal exit,
//! error, panic, signal), so hooktop never leaves a shell unusable.

use std::io::{self, Stdout, stdout};

use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// The terminal in dashboard mode; dropping it restores the shell's terminal.
pub struct Tui {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Tui {
    pub fn enter() -> io::Result<Tui> {
        install_panic_hook();
        // Built before the first change, so a failure half-way is undone too.
        let terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
        let tui = Tui { terminal };
        enable_raw_mode()?;
        execute!(stdout(), EnterAlternateScreen, Hide)?;
        Ok(tui)
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back. Safe to call more than once; errors are ignored because the
/// terminal may already be gone (SIGHUP).
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), LeaveAlternateScreen, Show);
}

/// A panic anywhere (the UI or a background task) restores the terminal, prints the message on
/// the normal screen and ends the process: a dashboard with a dead data task would show stale
/// numbers as if they were live.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
        std::process::exit(101);
    }));
}

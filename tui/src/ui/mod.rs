//! Drawing: a pure function of [`App`]. Colour carries meaning (green good, yellow retrying,
//! red dead or down) and every meaning is also in the text, so `NO_COLOR` loses nothing.

use chrono::{DateTime, Utc};
use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Cell, Clear, Padding, Paragraph, Row, Sparkline, StatefulWidget, Table, TableState,
    Widget, Wrap,
};

use crate::app::{App, Column, DbState, DetailView, Level, Overlay, Pane, Sort};
use crate::keymap;
use crate::model::{Bulk, Detail};

#[derive(Clone, Copy)]
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }
    fn good(self) -> Style {
        self.fg(Color::Green)
    }
    fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }
    fn bad(self) -> Style {
        self.fg(Color::Red)
    }
    fn dim(self) -> Style {
        self.fg(Color::DarkGray)
    }
    fn accent(self) -> Style {
        self.fg(Color::Cyan)
    }
    fn level(self, level: Level) -> Style {
        match level {
            Level::Info => Style::new(),
            Level::Success => self.good(),
            Level::Error => self.bad().add_modifier(Modifier::BOLD),
        }
    }
    fn count(self, n: i64, when_nonzero: Style) -> Style {
        if n > 0 { when_nonzero } else { Style::new() }
    }
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let theme = Theme {
            color: self.settings.color,
        };
        let [header, stats, types, clusters, dead, status] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(6),
            Constraint::Fill(2),
            Constraint::Fill(2),
            Constraint::Fill(3),
            Constraint::Length(1),
        ])
        .areas(area);
        render_header(self, theme, header, buf);
        render_stats(self, theme, stats, buf);
        render_types(self, theme, types, buf);
        render_clusters(self, theme, clusters, buf);
        render_dead(self, theme, dead, buf);
        render_status(self, theme, status, buf);
        let above_status = Rect {
            height: area.height.saturating_sub(1),
            ..area
        };
        match &self.overlay {
            Overlay::None => {}
            Overlay::Help => render_help(theme, area, buf),
            Overlay::Detail(view) => render_detail(self, theme, view, above_status, buf),
            Overlay::Confirm(confirm) => {
                render_confirm(theme, confirm, &self.settings.archive, area, buf)
            }
            Overlay::Canary(view) => render_canary(theme, view, area, buf),
        }
    }
}

mod bulk;
mod format;
mod header;
mod overlays;
mod status;
mod tables;

pub use format::{age, clock, count, pct, short_age};
pub use header::resample;

use format::one_line;

use bulk::{render_canary, render_confirm};
use header::{render_header, render_stats};
use overlays::{render_detail, render_help};
use status::render_status;
use tables::{render_clusters, render_dead, render_types};

fn pane_block<'a>(app: &App, theme: Theme, pane: Pane, title: String) -> Block<'a> {
    let focused = app.panes.focus == pane;
    let style = if focused {
        theme.accent().add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    let marker = if focused { "▸" } else { " " };
    Block::bordered()
        .border_style(if focused {
            theme.accent()
        } else {
            Style::new()
        })
        .title(Span::styled(format!("{marker}{title}"), style))
}

/// The sort of a pane, at the right of its title.
fn sort_title<C: Column>(sort: Sort<C>) -> Line<'static> {
    Line::from(format!(" sort: {} {} ", sort.by.label(), sort.arrow())).right_aligned()
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Text::from(text).alignment(Alignment::Right))
}

/// The line under an empty table's header.
fn render_placeholder(area: Rect, text: &str, style: Style, buf: &mut Buffer) {
    let inner = Block::bordered().inner(area);
    if inner.height < 2 {
        return;
    }
    let line = Rect {
        x: inner.x + 2,
        y: inner.y + 1,
        width: inner.width.saturating_sub(2),
        height: 1,
    };
    Span::styled(text.to_owned(), style).render(line, buf);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

#[cfg(test)]
mod tests;

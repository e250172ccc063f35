use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::*;
use crate::action::Action;
use crate::app::Settings;
use crate::fixtures::{self, ago, ch, key};
use crate::model::Outcome;
use common::db::selection::Selection;
use crossterm::event::KeyCode;

fn draw(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| frame.render_widget(app, frame.area()))
        .unwrap();
    terminal
}

#[test]
fn main_screen_at_80x24() {
    let app = fixtures::app();
    insta::assert_snapshot!(draw(&app, 80, 24).backend());
}

#[test]
fn main_screen_at_120x40_with_the_types_pane_focused() {
    let mut app = fixtures::app();
    app.update(key(KeyCode::Tab));
    app.update(ch('j'));
    insta::assert_snapshot!(draw(&app, 120, 40).backend());
}

#[test]
fn detail_view() {
    let mut app = fixtures::app();
    app.update(key(KeyCode::Enter));
    app.update(Action::Detail {
        id: 42,
        result: Ok(Some(Box::new(fixtures::detail()))),
    });
    insta::assert_snapshot!(draw(&app, 80, 30).backend());
}

#[test]
fn retry_all_confirmation() {
    let mut app = fixtures::app();
    app.update(ch('R'));
    app.update(Action::Previewed {
        op: Bulk::Retry,
        result: Ok(vec![fixtures::choice(
            Selection::All,
            &[
                ("stripe", "invoice.payment_failed", 30),
                ("telnyx", "call.hangup", 10),
                ("custom", "order.created", 2),
            ],
        )]),
    });
    insta::assert_snapshot!(draw(&app, 80, 24).backend());
}

/// A cluster listed: the question offers it and every dead event, with the chosen set's types.
#[test]
fn retry_confirmation_with_a_cluster_in_force() {
    let mut app = fixtures::incident();
    app.update(key(KeyCode::BackTab));
    app.update(key(KeyCode::Enter));
    app.update(ch('R'));
    let key = fixtures::incident_clusters()[0].key();
    app.update(Action::Previewed {
        op: Bulk::Retry,
        result: Ok(vec![
            fixtures::choice(
                Selection::cluster(&key),
                &[("stripe", "invoice.payment_failed", 40)],
            ),
            fixtures::choice(
                Selection::All,
                &[
                    ("stripe", "invoice.payment_failed", 40),
                    ("telnyx", "call.hangup", 3),
                    ("custom", "order.created", 2),
                ],
            ),
        ]),
    });
    insta::assert_snapshot!(draw(&app, 100, 32).backend());
}

#[test]
fn canary_in_progress() {
    let mut app = fixtures::incident();
    app.update(key(KeyCode::BackTab));
    app.update(ch('c'));
    let key = fixtures::incident_clusters()[0].key();
    app.update(Action::Previewed {
        op: Bulk::Canary,
        result: Ok(vec![fixtures::choice(
            Selection::cluster(&key),
            &[("stripe", "invoice.payment_failed", 40)],
        )]),
    });
    app.update(ch('y'));
    app.update(Action::Bulk {
        op: Bulk::Canary,
        result: Ok(Outcome::CanaryStarted(vec![105, 104, 103, 102, 101])),
    });
    let error = Some("no business is linked to Stripe customer cus_Q5");
    app.update(Action::Canary(vec![
        fixtures::progress(105, "succeeded", None),
        fixtures::progress(104, "succeeded", None),
        fixtures::progress(103, "processing", error),
        fixtures::progress(102, "pending", error),
        fixtures::progress(101, "pending", error),
    ]));
    insta::assert_snapshot!(draw(&app, 100, 32).backend());
}

/// A purge offers what died over 7 days ago and the superseded ones, each with its count.
#[test]
fn purge_confirmation_with_superseded_events() {
    let mut app = fixtures::app();
    app.update(ch('p'));
    app.update(Action::Previewed {
        op: Bulk::Purge,
        result: Ok(vec![
            fixtures::purge_choice(
                &[
                    ("stripe", "customer.subscription.updated", 12),
                    ("custom", "order.created", 3),
                ],
                12,
            ),
            fixtures::superseded_choice(&[("stripe", "customer.subscription.updated", 14)]),
        ]),
    });
    insta::assert_snapshot!(draw(&app, 80, 24).backend());
}

/// A superseded dead event says so in the list, its cluster and its detail.
#[test]
fn superseded_event_detail() {
    let mut app = fixtures::app();
    let mut snapshot = fixtures::snapshot();
    snapshot.dead[0].superseded = true;
    app.update(Action::Snapshot(Box::new(snapshot)));
    app.update(key(KeyCode::Enter));
    let mut detail = fixtures::detail();
    detail.superseded = true;
    app.update(Action::Detail {
        id: 42,
        result: Ok(Some(Box::new(detail))),
    });
    insta::assert_snapshot!(draw(&app, 80, 30).backend());
    app.update(key(KeyCode::Esc));
    let screen = draw(&app, 100, 32).backend().to_string();
    assert!(
        screen.contains("superseded · no business is linked"),
        "{screen}"
    );
}

#[test]
fn help_overlay() {
    let mut app = fixtures::app();
    app.update(ch('?'));
    insta::assert_snapshot!(draw(&app, 80, 24).backend());
}

#[test]
fn database_down_filter_typing_and_notification_note() {
    let mut app = fixtures::app();
    app.update(Action::DbDown {
        since: ago(125),
        error: "Connection refused (os error 111)".into(),
    });
    app.update(Action::NotifyFailed("no D-Bus session".into()));
    app.update(ch('/'));
    app.update(ch('i'));
    app.update(ch('n'));
    insta::assert_snapshot!(draw(&app, 80, 24).backend());
}

#[test]
fn clusters_pane_sorted_by_last_death() {
    let mut app = fixtures::incident();
    app.update(key(KeyCode::BackTab));
    app.update(ch('s'));
    insta::assert_snapshot!(draw(&app, 100, 32).backend());
}

#[test]
fn a_cluster_s_dead_events() {
    let mut app = fixtures::incident();
    app.update(key(KeyCode::BackTab));
    app.update(key(KeyCode::Enter));
    app.update(Action::Snapshot(Box::new(
        fixtures::incident_cluster_snapshot(),
    )));
    insta::assert_snapshot!(draw(&app, 100, 32).backend());
}

#[test]
fn colours_carry_meaning_and_no_color_removes_them_all() {
    let coloured = fixtures::app_with(Settings::default());
    let terminal = draw(&coloured, 80, 24);
    let buf = terminal.backend().buffer();
    let fgs: std::collections::HashSet<Color> = buf.content().iter().map(|c| c.fg).collect();
    for meaning in [Color::Green, Color::Yellow, Color::Red] {
        assert!(fgs.contains(&meaning), "{meaning:?} missing");
    }
    let plain = fixtures::app();
    let terminal = draw(&plain, 80, 24);
    let buf = terminal.backend().buffer();
    assert!(
        buf.content()
            .iter()
            .all(|c| c.fg == Color::Reset && c.bg == Color::Reset),
        "NO_COLOR draws without colours"
    );
}

#[test]
fn the_hour_fits_any_width() {
    let series: Vec<_> = (0..60).map(|m| (ago(60 * (59 - m)), m)).collect();
    assert_eq!(resample(&series, 120).len(), 60);
    let narrow = resample(&series, 20);
    assert_eq!(narrow.len(), 20);
    assert_eq!(narrow[0], 1, "minutes 0..3 average to 1");
    assert_eq!(narrow[19], 58);
    assert!(resample(&series, 0).is_empty());
}

#[test]
fn numbers_and_ages_are_short() {
    assert_eq!(count(99_999), "99999");
    assert_eq!(count(123_456), "123k");
    assert_eq!(count(12_345_678), "12.3M");
    assert_eq!(age(59), "59s");
    assert_eq!(age(252), "4m 12s");
    assert_eq!(age(3 * 3_600 + 120), "3h 2m");
    assert_eq!(age(2 * 86_400 + 4 * 3_600), "2d 4h");
    assert_eq!(short_age(9 * 86_400), "9d");
    assert_eq!(pct(None), "—");
    assert_eq!(pct(Some(0.98765)), "98.8%");
}

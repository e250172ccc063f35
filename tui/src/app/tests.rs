use chrono::TimeDelta;
use common::db::clusters::{Cluster, ClusterKey};
use common::db::selection::Retried;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::fixtures::{self, ago, app, ch, dead, key, now, snapshot};

fn commands(effects: Vec<Effect>) -> Vec<Command> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Command(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn status(app: &App) -> &str {
    app.current_status().map_or("", |s| s.text.as_str())
}

#[test]
fn starts_on_the_dead_letter_queue_and_moves_within_bounds() {
    let mut app = app();
    assert_eq!(app.panes.focus, Pane::Dead);
    assert_eq!(app.selected_dead().map(|e| e.id), Some(42));
    app.update(ch('j'));
    app.update(key(KeyCode::Down));
    assert_eq!(app.selected_dead().map(|e| e.id), Some(17));
    app.update(ch('j'));
    assert_eq!(app.panes.selected(Pane::Dead), 2, "stops at the last row");
    app.update(ch('k'));
    assert_eq!(app.selected_dead().map(|e| e.id), Some(41));
    app.update(key(KeyCode::Up));
    app.update(key(KeyCode::Up));
    assert_eq!(app.panes.selected(Pane::Dead), 0, "stops at the first row");
    app.update(ch('G'));
    assert_eq!(app.panes.selected(Pane::Dead), 2);
    app.update(ch('g'));
    assert_eq!(app.panes.selected(Pane::Dead), 0);
}

#[test]
fn tab_switches_panes_and_keys_move_the_focused_one() {
    let mut app = app();
    app.update(key(KeyCode::Tab));
    assert_eq!(app.panes.focus, Pane::Types);
    app.update(ch('j'));
    assert_eq!(
        (
            app.panes.selected(Pane::Types),
            app.panes.selected(Pane::Dead)
        ),
        (1, 0)
    );
    app.update(key(KeyCode::BackTab));
    assert_eq!(app.panes.focus, Pane::Dead);
}

#[test]
fn the_selection_follows_its_event_when_new_deaths_arrive() {
    let mut app = app();
    app.update(ch('j'));
    assert_eq!(app.selected_dead().map(|e| e.id), Some(41));
    let mut next = snapshot();
    next.dead
        .insert(0, dead(43, 5, "stripe", "invoice.paid", "x"));
    app.update(Action::Snapshot(Box::new(next)));
    assert_eq!(app.selected_dead().map(|e| e.id), Some(41));
    assert_eq!(app.panes.selected(Pane::Dead), 2);
}

#[test]
fn a_vanished_selection_stays_in_place_and_in_bounds() {
    let mut app = app();
    app.update(ch('G'));
    let mut next = snapshot();
    next.dead.truncate(1);
    app.update(Action::Snapshot(Box::new(next.clone())));
    assert_eq!(app.selected_dead().map(|e| e.id), Some(42));
    next.dead.clear();
    app.update(Action::Snapshot(Box::new(next)));
    assert_eq!(app.selected_dead(), None);
    let effects = app.update(ch('r'));
    assert!(effects.is_empty());
    assert_eq!(status(&app), "no dead event selected");
}

#[test]
fn r_retries_the_selected_event_and_reports() {
    let mut app = app();
    app.update(ch('j'));
    assert_eq!(commands(app.update(ch('r'))), [Command::Retry(41)]);
    assert_eq!(status(&app), "retrying event 41…");
    let effects = app.update(Action::Retried {
        id: 41,
        result: Ok(()),
    });
    assert_eq!(commands(effects), [Command::Refresh]);
    assert_eq!(status(&app), "retried event 41");
    app.update(Action::Retried {
        id: 41,
        result: Err("event 41 is pending, not dead".into()),
    });
    assert_eq!(
        status(&app),
        "retry of event 41 failed: event 41 is pending, not dead"
    );
}

#[test]
fn r_outside_the_dead_letter_pane_explains_instead_of_guessing() {
    let mut app = app();
    app.update(key(KeyCode::Tab));
    assert!(app.update(ch('r')).is_empty());
    assert_eq!(
        status(&app),
        "Tab to the dead-letter queue to pick an event"
    );
}

fn cus_filter() -> Selection {
    Selection::matching(None, None, Some("cus_".into()))
}

fn first_cluster() -> Selection {
    Selection::cluster(&fixtures::incident_clusters()[0].key())
}

fn confirm(app: &App) -> &Confirm {
    match &app.overlay {
        Overlay::Confirm(confirm) => confirm,
        other => panic!("expected a confirmation, got {other:?}"),
    }
}

fn canary(app: &App) -> &CanaryView {
    match &app.overlay {
        Overlay::Canary(view) => view,
        other => panic!("expected a canary, got {other:?}"),
    }
}

#[test]
fn retry_all_previews_then_confirms_the_count_then_runs_bound_to_the_preview() {
    let mut app = app();
    assert_eq!(
        commands(app.update(ch('R'))),
        [Command::Preview {
            op: Bulk::Retry,
            selections: vec![Selection::All]
        }]
    );
    assert!(
        matches!(app.overlay, Overlay::None),
        "no guess at the count"
    );
    let all = fixtures::choice(
        Selection::All,
        &[("stripe", "invoice.payment_failed", 40), ("custom", "x", 2)],
    );
    app.update(Action::Previewed {
        op: Bulk::Retry,
        result: Ok(vec![all.clone()]),
    });
    assert_eq!(
        (confirm(&app).op, confirm(&app).choice().count),
        (Bulk::Retry, 42)
    );
    assert!(app.update(ch('x')).is_empty(), "other keys do nothing");
    assert_eq!(
        commands(app.update(ch('y'))),
        [Command::Run {
            op: Bulk::Retry,
            choice: all
        }]
    );
    assert!(matches!(app.overlay, Overlay::None));
    assert_eq!(status(&app), "retrying 42 dead events…");
    assert_eq!(app.running, Some(Bulk::Retry));
    assert!(
        commands(app.update(ch('p'))).is_empty(),
        "one bulk action at a time"
    );
    let effects = app.update(Action::Bulk {
        op: Bulk::Retry,
        result: Ok(Outcome::Retried(Retried {
            previewed: 42,
            retried: 41,
            skipped: 1,
        })),
    });
    assert_eq!(commands(effects), [Command::Refresh]);
    assert_eq!(
        status(&app),
        "retried 41, 1 had changed since the preview (already retried or purged)"
    );
    assert_eq!(app.running, None);
}

#[test]
fn with_a_filter_or_a_cluster_in_force_retry_offers_the_narrowed_set_and_all() {
    let mut app = fixtures::incident();
    app.update(ch('/'));
    for c in "cus_".chars() {
        app.update(ch(c));
    }
    app.update(key(KeyCode::Enter));
    let asked = |app: &mut App| match commands(app.update(ch('R'))).as_slice() {
        [Command::Preview { op, selections }] => (*op, selections.clone()),
        other => panic!("expected a preview, got {other:?}"),
    };
    assert_eq!(
        asked(&mut app),
        (Bulk::Retry, vec![cus_filter(), Selection::All])
    );
    app.counting = None;
    // The cluster selected in its pane, then listed: either is what R narrows to.
    app.update(key(KeyCode::Esc));
    app.panes.focus = Pane::Clusters;
    assert_eq!(
        asked(&mut app),
        (Bulk::Retry, vec![first_cluster(), Selection::All])
    );
    app.counting = None;
    app.update(key(KeyCode::Enter));
    assert_eq!(app.panes.focus, Pane::Dead);
    assert_eq!(
        asked(&mut app),
        (Bulk::Retry, vec![first_cluster(), Selection::All])
    );
    let narrowed = fixtures::choice(first_cluster(), &[("stripe", "invoice.payment_failed", 40)]);
    let all = fixtures::choice(Selection::All, &[("stripe", "invoice.payment_failed", 45)]);
    app.update(Action::Previewed {
        op: Bulk::Retry,
        result: Ok(vec![narrowed.clone(), all.clone()]),
    });
    assert_eq!(confirm(&app).choice(), &narrowed, "the narrowed set first");
    app.update(key(KeyCode::Tab));
    assert_eq!(confirm(&app).choice(), &all);
    app.update(key(KeyCode::Tab));
    assert_eq!(confirm(&app).choice(), &narrowed);
    assert_eq!(
        commands(app.update(key(KeyCode::Enter))),
        [Command::Run {
            op: Bulk::Retry,
            choice: narrowed
        }]
    );
    assert_eq!(status(&app), "retrying 40 dead events…");
}

#[test]
fn an_empty_narrowed_set_starts_the_question_on_all() {
    let mut app = app();
    app.counting = Some(Bulk::Retry);
    let all = fixtures::choice(Selection::All, &[("custom", "x", 3)]);
    app.update(Action::Previewed {
        op: Bulk::Retry,
        result: Ok(vec![fixtures::choice(cus_filter(), &[]), all.clone()]),
    });
    assert_eq!(confirm(&app).choice(), &all);
    app.update(key(KeyCode::Tab));
    assert!(
        commands(app.update(ch('y'))).is_empty(),
        "an empty set is not acted on"
    );
    assert!(matches!(app.overlay, Overlay::Confirm(_)));
}

#[test]
fn a_canary_retries_a_few_watches_them_and_offers_the_rest_when_they_succeed() {
    let mut app = fixtures::incident();
    app.panes.focus = Pane::Clusters;
    assert_eq!(
        commands(app.update(ch('c'))),
        [Command::Preview {
            op: Bulk::Canary,
            selections: vec![first_cluster()]
        }]
    );
    let preview = fixtures::choice(first_cluster(), &[("stripe", "invoice.payment_failed", 12)]);
    app.update(Action::Previewed {
        op: Bulk::Canary,
        result: Ok(vec![preview.clone()]),
    });
    assert_eq!(
        commands(app.update(ch('y'))),
        [Command::Run {
            op: Bulk::Canary,
            choice: preview.clone()
        }]
    );
    assert_eq!(canary(&app).verdict, Verdict::Running);
    let ids = vec![105, 104, 103, 102, 101];
    assert_eq!(
        commands(app.update(Action::Bulk {
            op: Bulk::Canary,
            result: Ok(Outcome::CanaryStarted(ids.clone())),
        })),
        [Command::Watch(ids.clone())]
    );
    let mut progress: Vec<_> = ids
        .iter()
        .map(|&id| fixtures::progress(id, "pending", Some("no business is linked")))
        .collect();
    progress[0].state = "succeeded".into();
    assert!(app.update(Action::Canary(progress.clone())).is_empty());
    assert_eq!(canary(&app).verdict, Verdict::Running);
    assert!(
        commands(app.update(ch('y'))).is_empty(),
        "no rest before the verdict"
    );
    for p in &mut progress {
        p.state = "succeeded".into();
    }
    assert_eq!(
        commands(app.update(Action::Canary(progress))),
        [Command::Watch(vec![])],
        "a verdict stops the watch"
    );
    assert_eq!(canary(&app).verdict, Verdict::Succeeded);
    assert_eq!(
        status(&app),
        "canary succeeded: all 5 were processed; y retries the other 7"
    );
    assert_eq!(
        commands(app.update(ch('y'))),
        [Command::Run {
            op: Bulk::Retry,
            choice: preview
        }],
        "the rest is the same preview's token: what died since stays dead"
    );
    app.update(Action::Bulk {
        op: Bulk::Retry,
        result: Ok(Outcome::Retried(Retried {
            previewed: 12,
            retried: 6,
            skipped: 6,
        })),
    });
    assert_eq!(
        status(&app),
        "retried the other 6 after the canary's 5, 1 had changed since the preview \
         (already retried or purged)"
    );
}

#[test]
fn a_canary_that_fails_again_stops_there() {
    let mut app = app();
    app.counting = Some(Bulk::Canary);
    let preview = fixtures::choice(Selection::All, &[("stripe", "invoice.payment_failed", 9)]);
    app.update(Action::Previewed {
        op: Bulk::Canary,
        result: Ok(vec![preview]),
    });
    app.update(ch('y'));
    app.update(Action::Bulk {
        op: Bulk::Canary,
        result: Ok(Outcome::CanaryStarted(vec![2, 1])),
    });
    app.update(Action::Canary(vec![
        fixtures::progress(2, "succeeded", None),
        fixtures::progress(1, "retrying", Some("no business is linked")),
    ]));
    assert_eq!(canary(&app).verdict, Verdict::Failed);
    assert_eq!(
        status(&app),
        "canary failed again: the rest was not retried"
    );
    assert!(
        commands(app.update(ch('y'))).is_empty(),
        "no rest after a failure"
    );
    assert_eq!(
        commands(app.update(key(KeyCode::Esc))),
        [Command::Watch(vec![])]
    );
    assert!(matches!(app.overlay, Overlay::None));
    assert_eq!(app.running, None);
}

#[test]
fn a_canary_closed_before_its_verdict_retries_nothing_more() {
    let mut app = app();
    app.counting = Some(Bulk::Canary);
    app.update(Action::Previewed {
        op: Bulk::Canary,
        result: Ok(vec![fixtures::choice(
            Selection::All,
            &[("custom", "x", 9)],
        )]),
    });
    app.update(ch('y'));
    app.update(Action::Bulk {
        op: Bulk::Canary,
        result: Ok(Outcome::CanaryStarted(vec![3])),
    });
    assert_eq!(
        commands(app.update(key(KeyCode::Esc))),
        [Command::Watch(vec![])]
    );
    assert_eq!(
        status(&app),
        "canary closed before its verdict: the rest was not retried"
    );
    assert!(app.update(Action::Canary(vec![])).is_empty());
}

#[test]
fn purge_confirms_with_the_count_and_reports_what_it_deleted() {
    let mut app = app();
    assert_eq!(
        commands(app.update(ch('p'))),
        [Command::Preview {
            op: Bulk::Purge,
            selections: vec![]
        }]
    );
    let old = fixtures::purge_choice(&[("custom", "x", 1)], 0);
    let superseded = fixtures::superseded_choice(&[("stripe", "customer.subscription.updated", 2)]);
    app.update(Action::Previewed {
        op: Bulk::Purge,
        result: Ok(vec![old.clone(), superseded.clone()]),
    });
    assert_eq!(confirm(&app).op, Bulk::Purge);
    assert_eq!(confirm(&app).choice(), &old);
    app.update(key(KeyCode::Tab));
    assert_eq!(
        commands(app.update(key(KeyCode::Enter))),
        [Command::Run {
            op: Bulk::Purge,
            choice: superseded
        }],
        "the superseded ones, bound to their preview"
    );
    app.update(Action::Bulk {
        op: Bulk::Purge,
        result: Ok(Outcome::Purged(fixtures::receipt(1))),
    });
    assert_eq!(
        status(&app),
        "purged 1 dead events that died more than 7d ago · archive \
         /var/lib/hookd/archive/dlq-purge-20261129T030000Z.ndjson.gz (sha256 9f2c)"
    );
}

#[test]
fn declining_a_confirmation_changes_nothing() {
    for decline in [ch('n'), key(KeyCode::Esc)] {
        let mut app = app();
        app.update(ch('p'));
        app.update(Action::Previewed {
            op: Bulk::Purge,
            result: Ok(vec![fixtures::purge_choice(&[("custom", "x", 5)], 0)]),
        });
        assert!(app.update(decline).is_empty());
        assert!(matches!(app.overlay, Overlay::None));
        assert_eq!(status(&app), "cancelled: nothing changed");
    }
}

#[test]
fn nothing_to_do_is_said_without_asking() {
    let mut app = app();
    app.update(ch('p'));
    app.update(Action::Previewed {
        op: Bulk::Purge,
        result: Ok(vec![
            fixtures::purge_choice(&[], 0),
            fixtures::superseded_choice(&[]),
        ]),
    });
    assert!(matches!(app.overlay, Overlay::None));
    assert_eq!(
        status(&app),
        "nothing to purge: no dead events older than 7 days, none superseded"
    );
}

#[test]
fn a_preview_that_arrives_after_esc_opens_nothing() {
    let mut app = app();
    app.update(ch('R'));
    app.update(key(KeyCode::Esc));
    app.update(Action::Previewed {
        op: Bulk::Retry,
        result: Ok(vec![fixtures::choice(
            Selection::All,
            &[("custom", "x", 3)],
        )]),
    });
    assert!(matches!(app.overlay, Overlay::None));
}

#[test]
fn a_failed_bulk_action_is_reported_as_an_error_that_stays() {
    let mut app = app();
    app.update(Action::Bulk {
        op: Bulk::Purge,
        result: Err("cannot connect".into()),
    });
    app.update(Action::Tick(now() + TimeDelta::minutes(10)));
    assert_eq!(status(&app), "purge: cannot connect");
    assert_eq!(app.status.as_ref().map(|s| s.level), Some(Level::Error));
}

#[test]
fn reports_fade_after_a_while() {
    let mut app = app();
    app.update(Action::Retried {
        id: 1,
        result: Ok(()),
    });
    app.update(Action::Tick(now() + STATUS_FOR - TimeDelta::seconds(1)));
    assert_eq!(status(&app), "retried event 1");
    app.update(Action::Tick(now() + STATUS_FOR));
    assert_eq!(status(&app), "");
}

#[test]
fn filter_is_typed_applied_and_sent_to_the_database() {
    let mut app = app();
    assert!(app.update(ch('/')).is_empty());
    for c in "invoicex".chars() {
        app.update(ch(c));
    }
    app.update(key(KeyCode::Backspace));
    assert_eq!(app.filter_input.as_deref(), Some("invoice"));
    assert!(app.update(ch('q')).is_empty(), "q is text while typing");
    app.update(key(KeyCode::Backspace));
    let effects = app.update(key(KeyCode::Enter));
    assert_eq!(
        commands(effects),
        [
            Command::SetFilter("invoice".to_owned()),
            Command::Find("invoice".to_owned())
        ]
    );
    assert_eq!(app.filter, "invoice");
    let shown: Vec<&str> = app
        .visible_types()
        .iter()
        .map(|t| t.event_type.as_str())
        .collect();
    assert_eq!(shown, ["invoice.payment_failed"]);
    assert_eq!(
        commands(app.update(key(KeyCode::Esc))),
        [Command::SetFilter(String::new())],
        "Esc clears an active filter"
    );
    assert_eq!(app.visible_types().len(), 4);
}

#[test]
fn a_filter_that_names_an_event_opens_it_whatever_its_state() {
    let mut app = app();
    app.update(ch('/'));
    for c in "evt_paid".chars() {
        app.update(ch(c));
    }
    app.update(key(KeyCode::Enter));
    let found = |key: &str, result| Action::Found {
        key: key.to_owned(),
        result,
    };
    assert!(
        app.update(found("evt_old", Ok(vec![5]))).is_empty(),
        "the answer to an earlier filter is dropped"
    );
    assert!(matches!(app.overlay, Overlay::None));
    assert!(app.update(found("evt_paid", Ok(vec![]))).is_empty());
    assert!(
        matches!(app.overlay, Overlay::None),
        "no such event: the filter stands"
    );

    assert_eq!(
        commands(app.update(found("evt_paid", Ok(vec![7, 9])))),
        [Command::LoadDetail(7)]
    );
    assert!(matches!(&app.overlay, Overlay::Detail(view) if view.id == 7));
    assert_eq!(
        status(&app),
        "2 events have the id evt_paid; showing event 7"
    );
    assert!(
        app.update(found("evt_paid", Ok(vec![7]))).is_empty(),
        "an open overlay is left alone"
    );
}

#[test]
fn esc_while_typing_keeps_the_previous_filter() {
    let mut app = app();
    app.filter = "stripe".into();
    app.update(ch('/'));
    app.update(key(KeyCode::Char('u')).clone());
    let ctrl_u = Action::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    app.update(ctrl_u);
    assert_eq!(app.filter_input.as_deref(), Some(""));
    assert!(app.update(key(KeyCode::Esc)).is_empty());
    assert_eq!(app.filter, "stripe");
    assert_eq!(app.filter_input, None);
    let sources: Vec<&str> = app
        .visible_types()
        .iter()
        .map(|t| t.source.as_str())
        .collect();
    assert_eq!(sources, ["stripe", "stripe"]);
}

#[test]
fn enter_opens_the_event_and_its_detail_arrives_later() {
    let mut app = app();
    assert_eq!(
        commands(app.update(key(KeyCode::Enter))),
        [Command::LoadDetail(42)]
    );
    let Overlay::Detail(view) = &app.overlay else {
        panic!("detail expected");
    };
    assert!(view.detail.is_none(), "loading");
    app.update(Action::Detail {
        id: 99,
        result: Ok(None),
    });
    app.update(Action::Detail {
        id: 42,
        result: Ok(Some(Box::new(fixtures::detail()))),
    });
    let Overlay::Detail(view) = &app.overlay else {
        panic!("detail expected");
    };
    assert!(matches!(&view.detail, Some(Ok(Some(d))) if d.event.id == 42));
    app.update(ch('j'));
    app.update(ch('j'));
    app.update(ch('k'));
    assert!(matches!(&app.overlay, Overlay::Detail(v) if v.scroll == 1));
    assert_eq!(commands(app.update(ch('r'))), [Command::Retry(42)]);
    app.update(key(KeyCode::Esc));
    assert!(matches!(app.overlay, Overlay::None));
}

#[test]
fn help_opens_and_closes_and_q_quits_from_anywhere() {
    let mut app = app();
    app.update(ch('?'));
    assert!(matches!(app.overlay, Overlay::Help));
    app.update(key(KeyCode::Esc));
    assert!(matches!(app.overlay, Overlay::None));
    app.update(ch('?'));
    assert_eq!(app.update(ch('q')), [Effect::Quit]);
    assert!(app.quit);
    let mut typing = fixtures::app();
    typing.update(ch('/'));
    let ctrl_c = Action::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(typing.update(ctrl_c), [Effect::Quit]);
    assert_eq!(fixtures::app().update(Action::Quit), [Effect::Quit]);
}

#[test]
fn s_cycles_the_sort_column_and_capital_s_reverses_it() {
    let mut app = app();
    let names = |app: &App| -> Vec<String> {
        app.visible_types()
            .iter()
            .map(|t| t.event_type.clone())
            .collect()
    };
    // Dead, descending; ties in name order.
    assert_eq!(
        names(&app),
        [
            "order.created",
            "invoice.payment_failed",
            "call.hangup",
            "customer.subscription.updated"
        ]
    );
    app.update(ch('s'));
    assert_eq!(app.sort.by, SortKey::Retrying);
    assert_eq!(names(&app)[0], "order.created");
    app.update(ch('s'));
    assert_eq!(app.sort.by, SortKey::Received);
    assert_eq!(names(&app)[0], "call.hangup");
    app.update(ch('S'));
    assert_eq!(names(&app)[0], "invoice.payment_failed");
    for _ in 0..3 {
        app.update(ch('s'));
    }
    assert_eq!((app.sort.by, app.sort.descending), (SortKey::Name, false));
    assert_eq!(names(&app)[0], "order.created", "custom sorts first");
}

fn cluster_types(app: &App) -> Vec<&str> {
    app.visible_clusters()
        .iter()
        .map(|c| c.event_type.as_str())
        .collect()
}

#[test]
fn tab_visits_the_three_panes_and_shift_tab_goes_back() {
    let mut app = app();
    let mut visited = Vec::new();
    for _ in 0..3 {
        app.update(key(KeyCode::Tab));
        visited.push(app.panes.focus);
    }
    assert_eq!(visited, [Pane::Types, Pane::Clusters, Pane::Dead]);
    app.update(key(KeyCode::BackTab));
    assert_eq!(app.panes.focus, Pane::Clusters);
    app.update(ch('j'));
    assert_eq!(app.panes.selected(Pane::Clusters), 1);
    assert_eq!(app.panes.selected(Pane::Dead), 0, "each pane has its own");
}

#[test]
fn s_in_the_clusters_pane_cycles_count_last_and_first_death() {
    let mut app = fixtures::incident();
    assert_eq!(
        cluster_types(&app),
        ["invoice.payment_failed", "call.hangup", "order.created"],
        "largest first"
    );
    // Outside the clusters, `s` still sorts the event types.
    app.update(ch('s'));
    assert_eq!(
        (app.sort.by, app.cluster_sort.by),
        (SortKey::Retrying, ClusterSort::Count)
    );
    app.update(key(KeyCode::BackTab));
    app.update(ch('j'));
    app.update(ch('s'));
    assert_eq!(app.cluster_sort.by, ClusterSort::LastDeath);
    assert_eq!(app.sort.by, SortKey::Retrying, "the types keep theirs");
    assert_eq!(app.panes.selected(Pane::Clusters), 0, "back to the top");
    assert_eq!(
        cluster_types(&app),
        ["order.created", "call.hangup", "invoice.payment_failed"],
        "the latest death first"
    );
    app.update(ch('s'));
    assert_eq!(app.cluster_sort.by, ClusterSort::FirstDeath);
    assert_eq!(
        cluster_types(&app),
        ["call.hangup", "invoice.payment_failed", "order.created"],
        "the newest cause first"
    );
    app.update(ch('S'));
    assert_eq!(
        cluster_types(&app),
        ["order.created", "invoice.payment_failed", "call.hangup"],
        "the oldest cause first"
    );
    app.update(ch('s'));
    assert_eq!(
        app.cluster_sort,
        Sort::new(ClusterSort::Count),
        "round again, largest first"
    );
}

#[test]
fn enter_on_a_cluster_lists_its_events_and_esc_lists_all_again() {
    let mut app = fixtures::incident();
    app.filter = "o".into();
    app.update(key(KeyCode::BackTab));
    app.update(ch('j'));
    let telnyx = ClusterKey {
        source: "telnyx".into(),
        event_type: "call.hangup".into(),
        fingerprint: "payload has no string at /data/payload/call_control_id".into(),
    };
    assert_eq!(
        app.selected_cluster().map(Cluster::key),
        Some(telnyx.clone())
    );
    assert_eq!(
        commands(app.update(key(KeyCode::Enter))),
        [Command::SetCluster(Some(telnyx.clone()))]
    );
    assert_eq!(app.cluster, Some(telnyx));
    assert_eq!(app.panes.focus, Pane::Dead, "the list is where to act");
    assert!(status(&app).ends_with("Esc lists all"), "{}", status(&app));
    // Until the list arrives `r` acts on what is on screen, which is what the user sees.
    assert_eq!(commands(app.update(ch('r'))), [Command::Retry(42)]);

    assert_eq!(
        commands(app.update(key(KeyCode::Esc))),
        [Command::SetCluster(None)]
    );
    assert_eq!(app.cluster, None);
    assert_eq!(app.panes.focus, Pane::Clusters, "back where it came from");
    assert_eq!(app.filter, "o", "the first Esc leaves the filter alone");
    assert_eq!(
        commands(app.update(key(KeyCode::Esc))),
        [Command::SetFilter(String::new())]
    );
}

#[test]
fn enter_on_no_cluster_does_nothing() {
    let mut app = app();
    app.update(Action::Clusters(Vec::new()));
    app.update(key(KeyCode::BackTab));
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    assert_eq!(
        (app.cluster.as_ref(), app.panes.focus),
        (None, Pane::Clusters)
    );
}

#[test]
fn a_new_filter_replaces_the_cluster() {
    let mut app = fixtures::incident();
    app.update(key(KeyCode::BackTab));
    app.update(key(KeyCode::Enter));
    app.update(ch('/'));
    app.update(ch('x'));
    assert_eq!(
        commands(app.update(key(KeyCode::Enter))),
        [
            Command::SetFilter("x".into()),
            Command::SetCluster(None),
            Command::Find("x".into())
        ]
    );
    assert_eq!(app.cluster, None);
}

#[test]
fn the_filter_narrows_the_clusters_too() {
    let mut app = fixtures::incident();
    app.filter = "customer".into();
    assert_eq!(cluster_types(&app), ["invoice.payment_failed"], "by cause");
    app.filter = "TELNYX".into();
    assert_eq!(cluster_types(&app), ["call.hangup"], "by source");
}

#[test]
fn the_cluster_selection_follows_its_cluster() {
    let mut app = fixtures::incident();
    app.update(key(KeyCode::BackTab));
    app.update(ch('G'));
    assert_eq!(
        app.selected_cluster().map(|c| c.event_type.as_str()),
        Some("order.created")
    );
    // The forwarding errors pile up past the others.
    let mut next = fixtures::incident_clusters();
    next[2].count = 400;
    app.update(Action::Clusters(next));
    assert_eq!(app.panes.selected(Pane::Clusters), 0);
    assert_eq!(
        app.selected_cluster().map(|c| c.event_type.as_str()),
        Some("order.created")
    );
}

#[test]
fn the_database_going_away_and_coming_back() {
    let mut app = app();
    app.update(Action::DbDown {
        since: ago(-5),
        error: "Connection refused (os error 111)".into(),
    });
    assert!(matches!(&app.db, DbState::Down { error, .. } if error.contains("refused")));
    assert!(app.snapshot.is_some(), "the last data stays on screen");
    app.update(Action::Snapshot(Box::new(snapshot())));
    assert_eq!(app.db, DbState::Up);
}

fn notifications(effects: &[Effect]) -> Vec<&crate::notify::Notification> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify(n) => Some(n),
            _ => None,
        })
        .collect()
}

#[test]
fn new_dead_events_are_notified_once_per_burst() {
    let mut app = app();
    let mut next = snapshot();
    next.taken_at = now() + TimeDelta::seconds(2);
    next.recent_dead.insert(
        0,
        dead(50, -2, "stripe", "invoice.payment_failed", "no business"),
    );
    next.recent_dead.insert(
        0,
        dead(51, -2, "stripe", "invoice.payment_failed", "no business"),
    );
    let effects = app.update(Action::Snapshot(Box::new(next.clone())));
    assert!(notifications(&effects).is_empty(), "the burst may go on");
    let effects = app.update(Action::Tick(now() + TimeDelta::seconds(6)));
    let sent = notifications(&effects);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].summary, "hookd: 2 events dead-lettered");
    assert_eq!(sent[0].body, "stripe invoice.payment_failed ×2");
    next.taken_at = now() + TimeDelta::seconds(8);
    let effects = app.update(Action::Snapshot(Box::new(next)));
    assert!(notifications(&effects).is_empty(), "already told");
}

#[test]
fn a_falling_success_rate_is_notified_once_and_no_notify_silences_all() {
    let mut app = app();
    let mut bad = snapshot();
    bad.last_5m.dead = 100;
    let effects = app.update(Action::Snapshot(Box::new(bad.clone())));
    let sent = notifications(&effects);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].summary.contains("54.1%"), "{}", sent[0].summary);
    let effects = app.update(Action::Snapshot(Box::new(bad.clone())));
    assert!(notifications(&effects).is_empty());

    let mut quiet = fixtures::app_with(Settings {
        notify: false,
        ..Settings::default()
    });
    bad.recent_dead.insert(0, dead(60, -1, "custom", "x", "y"));
    let mut effects = quiet.update(Action::Snapshot(Box::new(bad)));
    effects.extend(quiet.update(Action::Tick(now() + TimeDelta::minutes(5))));
    assert!(notifications(&effects).is_empty());
    assert!(quiet.alerts.rate.is_below(), "still tracked for the screen");
}

#[test]
fn a_missing_notification_service_becomes_a_note() {
    let mut app = app();
    app.update(Action::NotifyFailed("no D-Bus session".into()));
    assert_eq!(app.notify_note.as_deref(), Some("no D-Bus session"));
}

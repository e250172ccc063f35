//! hooktop, the terminal dashboard of hookd. `main.rs` wires the real terminal, database and
//! desktop; everything else lives here so tests can drive it with `TestBackend`, scripted keys
//! and fake snapshots.

pub mod action;
pub mod app;
pub mod cli;
pub mod data;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod keymap;
pub mod model;
pub mod notify;
pub mod term;
pub mod ui;

use crossterm::event::{Event, KeyEventKind};
use futures::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::sync::mpsc;

use crate::action::{Action, Command, Effect};
use crate::app::App;
use crate::notify::Notification;

/// Where the loop sends the effects `App::update` asks for.
#[derive(Debug, Clone)]
pub struct Sinks {
    pub commands: mpsc::UnboundedSender<Command>,
    pub notifications: mpsc::UnboundedSender<Notification>,
}

/// Runs the dashboard until it quits: terminal input and everything else (snapshots, results,
/// ticks, signals, arriving on `actions`) go through [`App::update`], and the screen is
/// redrawn once per batch of actions. Nothing here waits on the database.
pub async fn run<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut input: S,
    mut actions: mpsc::UnboundedReceiver<Action>,
    sinks: &Sinks,
) -> anyhow::Result<()>
where
    B: Backend,
    B::Error: std::error::Error + Send + Sync + 'static,
    S: Stream<Item = std::io::Result<Event>> + Unpin,
{
    let mut actions_open = true;
    terminal.draw(|frame| frame.render_widget(&*app, frame.area()))?;
    loop {
        let action = tokio::select! {
            event = input.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => Action::Key(key),
                Some(Ok(Event::Resize(..))) => Action::Resize,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("reading the terminal")),
                // The terminal is gone (stdin closed): nobody is watching.
                None => Action::Quit,
            },
            action = actions.recv(), if actions_open => match action {
                Some(action) => action,
                None => {
                    actions_open = false;
                    continue;
                }
            },
        };
        if carry_out(app.update(action), sinks) {
            return Ok(());
        }
        // Whatever else is already waiting goes into the same frame.
        while let Ok(action) = actions.try_recv() {
            if carry_out(app.update(action), sinks) {
                return Ok(());
            }
        }
        terminal.draw(|frame| frame.render_widget(&*app, frame.area()))?;
    }
}

/// Returns true when the app asked to quit.
fn carry_out(effects: Vec<Effect>, sinks: &Sinks) -> bool {
    let mut quit = false;
    for effect in effects {
        // A closed sink means its task ended with the process; there is nothing to tell.
        match effect {
            Effect::Command(command) => {
                let _ = sinks.commands.send(command);
            }
            Effect::Notify(n) => {
                let _ = sinks.notifications.send(n);
            }
            Effect::Quit => quit = true,
        }
    }
    quit
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::TimeDelta;
    use crossterm::event::{KeyCode, KeyEvent};
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::action::Bulk;
    use crate::app::Settings;
    use crate::fixtures::{dead, now, snapshot};
    use crate::notify::{RecordingNotifier, spawn_dispatcher};

    fn press(c: char) -> std::io::Result<Event> {
        Ok(Event::Key(KeyEvent::from(KeyCode::Char(c))))
    }

    /// The whole loop on a `TestBackend`: snapshots in, a notification out through the injected
    /// notifier when events die, keys turned into commands, and the final frame on screen.
    #[tokio::test]
    async fn new_dead_events_reach_the_notifier_and_keys_reach_the_data_task() {
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let (actions, actions_rx) = mpsc::unbounded_channel();
        let (commands, mut commands_rx) = mpsc::unbounded_channel();
        let (keys, keys_rx) = futures::channel::mpsc::unbounded();
        let recorder = RecordingNotifier::default();
        let sinks = Sinks {
            commands,
            notifications: spawn_dispatcher(Arc::new(recorder.clone()), actions.clone()),
        };
        let settings = Settings {
            color: false,
            ..Settings::default()
        };
        let mut app = App::new(settings, now());

        let drive = async {
            actions
                .send(Action::Snapshot(Box::new(snapshot())))
                .unwrap();
            let mut burst = snapshot();
            burst.taken_at = now() + TimeDelta::seconds(1);
            for id in [90, 91, 92] {
                let kind = if id == 92 {
                    "call.hangup"
                } else {
                    "invoice.payment_failed"
                };
                let source = if id == 92 { "telnyx" } else { "stripe" };
                burst
                    .recent_dead
                    .insert(0, dead(id, -1, source, kind, "boom"));
            }
            burst.dead = burst.recent_dead.clone();
            burst.queue.dead = 6;
            actions
                .send(Action::Snapshot(Box::new(burst.clone())))
                .unwrap();
            actions.send(Action::Snapshot(Box::new(burst))).unwrap();
            actions
                .send(Action::Tick(now() + TimeDelta::seconds(5)))
                .unwrap();
            let sent = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let sent = recorder.sent();
                    if !sent.is_empty() {
                        return sent;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("a notification within 5 s");
            keys.unbounded_send(press('R')).unwrap();
            let command = commands_rx.recv().await;
            assert_eq!(
                command,
                Some(Command::Preview {
                    op: Bulk::Retry,
                    selections: vec![common::db::selection::Selection::All]
                })
            );
            actions
                .send(Action::Previewed {
                    op: Bulk::Retry,
                    result: Ok(vec![crate::fixtures::choice(
                        common::db::selection::Selection::All,
                        &[("stripe", "invoice.payment_failed", 6)],
                    )]),
                })
                .unwrap();
            // The confirmation must be drawn before `q` ends the loop.
            tokio::time::sleep(Duration::from_millis(50)).await;
            keys.unbounded_send(press('q')).unwrap();
            sent
        };
        let (result, sent) = tokio::join!(
            run(&mut terminal, &mut app, keys_rx, actions_rx, &sinks),
            drive
        );
        result.unwrap();
        assert_eq!(sent.len(), 1, "one notification for the burst: {sent:?}");
        assert_eq!(sent[0].summary, "hookd: 3 events dead-lettered");
        assert_eq!(
            sent[0].body,
            "stripe invoice.payment_failed ×2, telnyx call.hangup ×1"
        );
        assert!(app.quit);
        let screen = terminal.backend().to_string();
        assert!(screen.contains("Retry all 6 dead events?"), "{screen}");
        assert!(screen.contains("dead 6"), "{screen}");
    }
}

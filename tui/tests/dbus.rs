//! hooktop's desktop notifier (notify-rust) against a real D-Bus: a private session bus from
//! `dbus-daemon`, with a stand-in org.freedesktop.Notifications service (zbus) that records
//! every Notify call.
//!
//! notify-rust finds the bus through DBUS_SESSION_BUS_ADDRESS, which a test cannot set in its
//! own process without `unsafe`; so each test runs this binary again as a child, with the
//! variable set, to do the sending.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hooktop::notify::{DesktopNotifier, Notification, Notifier};

/// Set in the child: what it should do.
const CHILD: &str = "HOOKTOP_DBUS_CHILD";

fn sample() -> Notification {
    Notification {
        summary: "hookd: 3 events dead-lettered".into(),
        body: "stripe invoice.payment_failed ×2, telnyx call.hangup ×1".into(),
        critical: true,
    }
}

/// A session bus of our own, stopped on drop.
struct PrivateBus {
    daemon: Child,
    address: String,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon runs (Debian package dbus-daemon)");
        let stdout = daemon.stdout.take().expect("piped stdout");
        let mut address = String::new();
        BufReader::new(stdout)
            .read_line(&mut address)
            .expect("dbus-daemon prints its address");
        let address = address.trim().to_owned();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        PrivateBus { daemon, address }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Call {
    app_name: String,
    summary: String,
    body: String,
    urgency: Option<u8>,
}

#[derive(Clone, Default)]
struct NotificationService {
    calls: Arc<Mutex<Vec<Call>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl NotificationService {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let urgency = hints
            .get("urgency")
            .and_then(|v| u8::try_from(v.clone()).ok());
        let mut calls = self.calls.lock().unwrap();
        calls.push(Call {
            app_name,
            summary,
            body,
            urgency,
        });
        calls.len() as u32
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "hooktop-test".into(),
            "hookd".into(),
            "0".into(),
            "1.2".into(),
        )
    }
}

fn run_child(name: &str, mode: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, mode);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the test binary runs again")
}

#[test]
fn desktop_notifier_reaches_a_notification_service_on_the_session_bus() {
    if std::env::var(CHILD).as_deref() == Ok("send") {
        DesktopNotifier
            .notify(&sample())
            .expect("notify-rust delivers");
        return;
    }
    let bus = PrivateBus::start();
    let service = NotificationService::default();
    let _connection = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .serve_at("/org/freedesktop/Notifications", service.clone())
        .unwrap()
        .name("org.freedesktop.Notifications")
        .unwrap()
        .build()
        .expect("the stand-in service joins the private bus");

    let out = run_child(
        "desktop_notifier_reaches_a_notification_service_on_the_session_bus",
        "send",
        &[("DBUS_SESSION_BUS_ADDRESS", &bus.address)],
    );
    assert!(
        out.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while service.calls.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let calls = service.calls.lock().unwrap().clone();
    let expected = sample();
    assert_eq!(
        calls,
        [Call {
            app_name: "hooktop".into(),
            summary: expected.summary,
            body: expected.body,
            urgency: Some(2),
        }],
        "exactly one Notify call, critical"
    );
}

/// No session bus at all (a server, a container): the notifier fails quickly with an error
/// hooktop shows as a one-line note, and prints nothing that would land on the dashboard.
#[test]
fn without_a_session_bus_the_notifier_fails_quietly_and_quickly() {
    if std::env::var(CHILD).as_deref() == Ok("no-bus") {
        let started = Instant::now();
        let result = DesktopNotifier.notify(&sample());
        assert!(result.is_err(), "there is no bus to deliver to");
        assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
        return;
    }
    let missing = std::env::temp_dir().join(format!("hooktop-no-bus-{}", std::process::id()));
    let missing = missing.to_str().unwrap();
    let out = run_child(
        "without_a_session_bus_the_notifier_fails_quietly_and_quickly",
        "no-bus",
        &[
            (
                "DBUS_SESSION_BUS_ADDRESS",
                &format!("unix:path={missing}/bus"),
            ),
            ("XDG_RUNTIME_DIR", missing),
        ],
    );
    assert!(
        out.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("zbus") && !stderr.contains("notify"),
        "the notifier printed: {stderr}"
    );
}

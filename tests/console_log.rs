//! The console's `log level` and `trace` commands change the filter of the process's
//! logger (tracing-subscriber's reload layer). A test binary of its own: the logger is
//! process-global.

use tracing::Level;
use xenpt::console::{execute_line, ConsoleInfo, Env};

fn run(line: &str) -> String {
    let info = ConsoleInfo::new(None, false);
    let mut env = Env { info: &info, device: None, ioreqs: None, path: None, clients: 1 };
    let r = execute_line(line, &mut env).unwrap();
    assert!(!r.error, "{line}: {}", r.text);
    r.text
}

#[test]
fn log_level_and_trace_reload_the_filter() {
    xenpt::log::init("warn");
    assert!(tracing::enabled!(target: "xenpt::device", Level::WARN));
    assert!(!tracing::enabled!(target: "xenpt::device", Level::INFO));
    assert!(!tracing::enabled!(target: "xenpt::ioreq", Level::TRACE));

    assert_eq!(run("log level error"), "log filter now xenpt=error,error");
    assert!(!tracing::enabled!(target: "xenpt::device", Level::WARN));
    assert!(tracing::enabled!(target: "xenpt::device", Level::ERROR));

    assert!(run("trace on").contains("log filter now"));
    assert!(tracing::enabled!(target: "xenpt::ioreq", Level::TRACE), "every served ioreq is logged");
    assert!(!tracing::enabled!(target: "xenpt::device", Level::WARN), "the rest stays at the level");
    assert_eq!(run("log level"), "log level error; trace on");

    // A new level keeps the trace; trace off keeps the level.
    run("log level debug");
    assert!(tracing::enabled!(target: "xenpt::ioreq", Level::TRACE));
    assert!(tracing::enabled!(target: "xenpt::bars", Level::DEBUG));
    run("trace off");
    assert!(!tracing::enabled!(target: "xenpt::ioreq", Level::TRACE));
    assert!(tracing::enabled!(target: "xenpt::ioreq", Level::DEBUG));

    // A bad filter changes nothing.
    let info = ConsoleInfo::new(None, false);
    let mut env = Env { info: &info, device: None, ioreqs: None, path: None, clients: 1 };
    assert!(execute_line("log level xenpt=loud", &mut env).unwrap().error);
    assert_eq!(run("log level"), "log level debug; trace off");
    run("log level off");
}

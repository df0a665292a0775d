//! The skip helpers, checked from outside: each case re-runs this test binary as a child with a
//! chosen environment and looks at its exit status and the stderr the harness did not capture.

use std::process::{Command, Output};

/// The child's action, chosen by `TS_CHILD` (unset: the child tests do nothing).
#[test]
fn child() {
    match std::env::var("TS_CHILD").as_deref() {
        Ok("skip") => test_support::skip("the frobnicator (install it)"),
        Ok("gpu") => test_support::skip_gpu("no CUDA driver"),
        Ok("na") => test_support::not_applicable("a driver is present"),
        Ok("fixture") => {
            test_support::fixture("/nonexistent/vramless/fixture.bin");
        }
        Ok("model") => assert!(test_support::model_or_skip().is_none()),
        _ => {}
    }
}

fn run(action: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--test-threads=1"])
        .env("TS_CHILD", action)
        .env_remove("CI")
        .env_remove("VRAMLESS_REQUIRE")
        .env_remove("VRAMLESS_REQUIRE_GPU")
        .env_remove("VRAMLESS_SKIP_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_skip_is_printed_past_the_capture_and_passes_without_ci() {
    let o = run("skip", &[]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("!!! SKIPPED child: the frobnicator (install it)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_skip_fails_with_ci_true_or_vramless_require() {
    for env in [("CI", "true"), ("VRAMLESS_REQUIRE", "1")] {
        let o = run("skip", &[env]);
        assert!(!o.status.success(), "{env:?}: the child passed");
        assert!(
            stdout(&o).contains("the frobnicator (install it)"),
            "{env:?}: {}",
            stdout(&o)
        );
    }
    // Other values do not count.
    assert!(run("skip", &[("CI", "false"), ("VRAMLESS_REQUIRE", "0")])
        .status
        .success());
}

#[test]
fn a_gpu_skip_passes_under_ci_and_fails_only_with_require_gpu() {
    let o = run("gpu", &[("CI", "true"), ("VRAMLESS_REQUIRE", "1")]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("!!! SKIPPED (no GPU) child: no CUDA driver"));
    let o = run("gpu", &[("VRAMLESS_REQUIRE_GPU", "1")]);
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("VRAMLESS_REQUIRE_GPU=1"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn not_applicable_never_fails() {
    let o = run("na", &[("CI", "true"), ("VRAMLESS_REQUIRE_GPU", "1")]);
    assert!(o.status.success());
    assert!(stderr(&o).contains("--- NOT APPLICABLE child: a driver is present"));
}

#[test]
fn a_missing_in_repo_fixture_always_fails() {
    let o = run("fixture", &[]);
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("/nonexistent/vramless/fixture.bin is missing"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_missing_model_names_the_variable_and_fails_under_ci() {
    let bad = "/nonexistent/vramless/model.gguf";
    let o = run("model", &[("VRAMLESS_MODEL", bad)]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!("VRAMLESS_MODEL={bad} is not a file")),
        "{}",
        stderr(&o)
    );
    let o = run("model", &[("VRAMLESS_MODEL", bad), ("CI", "true")]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("VRAMLESS_MODEL="), "{}", stdout(&o));
}

#[test]
fn skips_are_collected_in_the_skip_log() {
    let log = std::env::temp_dir().join(format!("ts-skip-log-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_s = log.to_str().unwrap();
    assert!(run("skip", &[("VRAMLESS_SKIP_LOG", log_s)])
        .status
        .success());
    assert!(run("gpu", &[("VRAMLESS_SKIP_LOG", log_s)]).status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("SKIPPED child: the frobnicator"));
    assert!(lines[1].contains("SKIPPED (no GPU) child"));
}

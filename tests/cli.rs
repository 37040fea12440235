//! What the command line gives operators beyond the commands: shell completions and man
//! pages, both generated from the one CLI definition.

mod common;

use std::process::Command;

fn iewatch(args: &[&str]) -> (bool, String) {
    common::iewatch_output(args)
}

#[test]
fn completions_name_every_command_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, script) = iewatch(&["completions", shell]);
        assert!(ok, "{shell}");
        for command in [
            "run",
            "status",
            "history",
            "notify-test",
            "ack",
            "mute",
            "demo",
        ] {
            assert!(script.contains(command), "{shell}: {command} missing");
        }
    }
    let (ok, _) = iewatch(&["completions", "powershell-or-so"]);
    assert!(!ok, "an unknown shell is refused");
}

#[test]
fn man_pages_are_written_for_iewatch_and_each_command_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, said) = iewatch(&["man", dir.path().to_str().unwrap()]);
    assert!(ok, "{said}");
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for expected in [
        "iewatch.1",
        "iewatch-run.1",
        "iewatch-check.1",
        "iewatch-mute.1",
        "iewatch-notify-test.1",
    ] {
        assert!(
            pages.iter().any(|p| p == expected),
            "{expected} in {pages:?}"
        );
    }
    assert!(
        said.contains(&format!("{} man page(s)", pages.len())),
        "{said}"
    );
    let mute = std::fs::read_to_string(dir.path().join("iewatch-mute.1")).unwrap();
    assert!(
        mute.starts_with(".ie") || mute.contains(".TH iewatch-mute 1"),
        "{mute}"
    );
    assert!(
        mute.contains("at most a year"),
        "the help text is the page's"
    );
    // Rendered by man(1) where the machine has it, as `man -l` would show it.
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("iewatch-mute.1"))
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output();
    // No man(1) on the machine: the roff checks above are what there is.
    if let Ok(rendered) = rendered {
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("iewatch mute"), "{text}");
        assert!(text.contains("--for"), "{text}");
    }
}

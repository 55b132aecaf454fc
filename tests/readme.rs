//! README.md against the command line it documents: every flag of the main command's `--help`
//! in a table of "Flags of the main command", every subcommand and each of its flags in the
//! row of "Subcommands", and the main command's output block exactly what the binary prints.

mod common;

use clap::CommandFactory;
use onnx_slim::cli::args::Cli;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// The part of `text` from the line `start` to the line `end` (both `## ` headings).
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let a = text
        .find(&format!("\n{start}\n"))
        .unwrap_or_else(|| panic!("README lacks the heading `{start}`"));
    let b = text[a + 1..]
        .find(&format!("\n{end}\n"))
        .unwrap_or_else(|| panic!("README lacks the heading `{end}` after `{start}`"));
    &text[a + 1..a + 1 + b]
}

/// The first cells of the Markdown table rows in `section`.
fn first_cells(section: &str) -> Vec<&str> {
    section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("|---"))
        .filter_map(|l| l[1..].split(" | ").next())
        .collect()
}

/// Whether `cell` names `--flag` (as `--flag` followed by a space, a backtick or a comma).
fn names(cell: &str, flag: &str) -> bool {
    cell.match_indices(flag).any(|(i, _)| {
        cell[i + flag.len()..]
            .chars()
            .next()
            .is_none_or(|c| c == ' ' || c == '`' || c == ',')
            && cell[..i].ends_with('`')
    })
}

/// The long flags (and visible aliases) of `cmd`, `-h`/`--help` and `-V`/`--version` included.
fn long_flags(cmd: &clap::Command) -> Vec<String> {
    let mut flags = Vec::new();
    for arg in cmd.get_arguments() {
        if arg.is_hide_set() || arg.is_positional() {
            continue;
        }
        if let Some(l) = arg.get_long() {
            flags.push(format!("--{l}"));
        }
        for a in arg.get_visible_aliases().unwrap_or_default() {
            flags.push(format!("--{a}"));
        }
    }
    flags.push("--help".into());
    flags
}

#[test]
fn every_flag_of_the_main_command_is_in_the_readme_flag_tables() {
    let text = readme();
    let section = between(&text, "## Flags of the main command", "## Subcommands");
    let cells = first_cells(section);
    let mut cmd = Cli::command();
    cmd.build();
    let mut flags = long_flags(&cmd);
    flags.push("--version".into());
    let missing: Vec<&String> = flags
        .iter()
        .filter(|f| !cells.iter().any(|c| names(c, f)))
        .collect();
    assert!(
        missing.is_empty(),
        "flags of `onnx-slim --help` missing from the README's flag tables: {missing:?}"
    );
    // The main command has dozens of flags: the count guards the walk itself.
    assert!(flags.len() >= 50, "{flags:?}");
    // And the README names no flag the command lacks.
    let known: Vec<String> = flags.clone();
    for cell in &cells {
        if let Some(flag) = cell
            .strip_prefix('`')
            .and_then(|c| c.split([' ', '`', ',']).next())
            .filter(|f| f.starts_with("--"))
        {
            assert!(
                known.iter().any(|k| k == flag),
                "the README documents `{flag}`, which --help lacks"
            );
        }
    }
}

#[test]
fn every_subcommand_and_its_flags_are_in_the_readme_subcommand_table() {
    let text = readme();
    let section = between(&text, "## Subcommands", "## Python");
    let rows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| `onnx-slim "))
        .collect();
    let mut cmd = Cli::command();
    cmd.build();
    let mut checked = 0;
    for sub in cmd.get_subcommands() {
        let name = sub.get_name();
        let row = rows
            .iter()
            .find(|r| {
                let first = r[1..].split(" | ").next().unwrap_or("");
                first.contains(&format!("`onnx-slim {name} "))
                    || first.contains(&format!("onnx-slim {name}`"))
            })
            .unwrap_or_else(|| {
                panic!("subcommand `{name}` has no row in the README's Subcommands table")
            });
        for flag in long_flags(sub) {
            if flag == "--help" {
                continue;
            }
            assert!(
                row.split(" | ").any(|cell| names(cell, &flag)),
                "`onnx-slim {name} {flag}` is not in its README row:\n{row}"
            );
        }
        checked += 1;
    }
    // inspect, show, diff, verify, completions, bench, pack, unpack, help.
    assert_eq!(checked, 9);
}

#[test]
fn the_readme_main_command_output_is_what_the_binary_prints() {
    let text = readme();
    let section = between(&text, "## The main command", "## Flags of the main command");
    let block = section
        .split("```console\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a console block");
    let mut lines = block.lines();
    let command = lines
        .next()
        .and_then(|l| l.strip_prefix("$ onnx-slim "))
        .expect("$ onnx-slim ...");
    let want: Vec<&str> = lines.collect();
    let args: Vec<&str> = command.split(' ').collect();
    // OUT goes to a temp folder; the report names it, so it is put back for the comparison.
    let out = args
        .iter()
        .position(|a| a.starts_with("/tmp/"))
        .expect("OUT under /tmp");
    let d = tempfile::tempdir().unwrap();
    let tmp_out = d.path().join("out.onnx");
    let tmp = tmp_out.to_str().unwrap();
    let mut run_args = args.clone();
    run_args[out] = tmp;
    let r = common::run::ok(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), &run_args);
    let printed = r.stdout.replace(tmp, args[out]);
    assert_eq!(printed.lines().collect::<Vec<_>>(), want, "{r:?}");
    assert!(want.len() >= 10);
}

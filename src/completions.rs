//! Shell completions and the man page, generated from the clap definition of the CLI (the
//! `Cli` struct in main.rs is the single source of every option and its help).

use std::path::Path;

/// A completion script for `shell`.
pub fn completions(mut cmd: clap::Command, shell: clap_complete::Shell) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out
}

/// With `dir`: writes ckpt.1 and one page per subcommand (ckpt-dump.1, ...) there and
/// returns nothing. Without: one roff page, ckpt(1) followed by a section per subcommand
/// with its synopsis, description and options.
pub fn man(cmd: clap::Command, dir: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
        clap_mangen::generate_to(cmd, dir)?;
        return Ok(Vec::new());
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub
            .get_bin_name()
            .unwrap_or_else(|| sub.get_name())
            .to_string();
        let page = clap_mangen::Man::new(sub.clone());
        let mut synopsis = Vec::new();
        page.render_synopsis_section(&mut synopsis)?;
        let mut description = Vec::new();
        page.render_description_section(&mut description)?;
        let mut options = Vec::new();
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            page.render_options_section(&mut options)?;
        }
        // One .SH per subcommand; its own sections become sub-headings or run on.
        let heading = format!(".SH \"{}\"\n", name.to_uppercase());
        out.extend_from_slice(heading.as_bytes());
        out.extend_from_slice(&strip_heading(&synopsis, None));
        out.extend_from_slice(&strip_heading(&description, Some(".PP")));
        out.extend_from_slice(&strip_heading(&options, Some(".SS Options")));
    }
    Ok(out)
}

/// Drops (or replaces) the `.SH` lines of a rendered section.
fn strip_heading(roff: &[u8], replace: Option<&str>) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(".SH") {
            if let Some(r) = replace {
                out.push_str(r);
                out.push('\n');
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

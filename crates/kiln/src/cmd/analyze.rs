//! `kiln analyze`: where an image's bytes go, measured as dive measures them, with CI gates.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use kiln_analyze::Analysis;
use kiln_image::Store;

use super::{Output, OutputFormat, human_size};

/// `kiln analyze`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln analyze my-python-base\n  kiln analyze --format json image.tar          (docker save or OCI archive, read in place)\n  kiln analyze --lowest-efficiency 0.95 --highest-wasted-bytes 20MB --highest-user-wasted-percent 0.1 my-python-base\n\nThe numbers are dive's: a path stored in more than one layer, or stored and later deleted,\nis an inefficiency; wasted bytes are the total size of all copies of those paths; the\nefficiency is (sum of each path's smallest copy) / (sum of all copies); the user-wasted\npercent is wasted bytes / the size of every layer above the first (a fraction, as in dive's\nCI rules). Exit code 1 when a gate is crossed."
)]
pub struct AnalyzeArgs {
    /// An image in the store (name, id, digest), or a docker-archive / oci-archive file.
    pub image: String,
    /// Output format: table or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// How many wasted files to list.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// Fail when the efficiency is below this (0…1, or a percentage like 95%).
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub lowest_efficiency: Option<f64>,
    /// Fail when more bytes than this are wasted (e.g. 20MB, 512KiB, 1000).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub highest_wasted_bytes: Option<u64>,
    /// Fail when wasted bytes / user size exceeds this (0…1, or a percentage like 10%).
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub highest_user_wasted_percent: Option<f64>,
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (text, 1.0),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a ratio (0.9) or a percentage (90%)"))?;
    let value = value / scale;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(value)
}

fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = super::number_and_unit(text, "20MB, 512KiB, 1000")?;
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (B, kB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    Ok((number * scale).round() as u64)
}

/// Runs `kiln analyze`.
pub fn analyze(root: &Path, out: &mut Output, args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let as_file = PathBuf::from(&args.image);
    // Held until the layers are read, so that `kiln gc` cannot remove them meanwhile.
    let mut _lock = None;
    let opened = if as_file.is_file() {
        kiln_analyze::source::open_archive(&as_file)
            .with_context(|| format!("read the archive {}", as_file.display()))?
    } else {
        let store =
            Store::open(root).with_context(|| format!("open the store at {}", root.display()))?;
        _lock = Some(store.lock_shared()?);
        kiln_analyze::source::open_store(&store, &args.image)?
    };
    let analysis = opened.analyze()?;
    let gates = gates(&analysis, &args);
    match args.format {
        OutputFormat::Json => {
            let mut doc = analysis.to_json(args.top);
            doc["image"]["name"] = serde_json::json!(opened.name);
            doc["ci"] = serde_json::json!({
                "pass": gates.iter().all(|g| g.pass),
                "rules": gates.iter().map(|g| serde_json::json!({
                    "name": g.name, "pass": g.pass, "message": g.message,
                })).collect::<Vec<_>>(),
            });
            out.line(&serde_json::to_string_pretty(&doc)?)?;
        }
        OutputFormat::Table => print_table(out, &opened.name, &analysis, args.top, &gates)?,
    }
    Ok(if gates.iter().all(|g| g.pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

struct Gate {
    name: &'static str,
    pass: bool,
    message: String,
}

fn gates(a: &Analysis, args: &AnalyzeArgs) -> Vec<Gate> {
    let mut gates = Vec::new();
    if let Some(lowest) = args.lowest_efficiency {
        gates.push(Gate {
            name: "lowestEfficiency",
            pass: a.efficiency >= lowest,
            message: format!(
                "efficiency {:.4} (lowest allowed {lowest:.4})",
                a.efficiency
            ),
        });
    }
    if let Some(highest) = args.highest_wasted_bytes {
        gates.push(Gate {
            name: "highestWastedBytes",
            pass: a.wasted_bytes <= highest,
            message: format!(
                "wasted {} bytes (highest allowed {highest})",
                a.wasted_bytes
            ),
        });
    }
    if let Some(highest) = args.highest_user_wasted_percent {
        gates.push(Gate {
            name: "highestUserWastedPercent",
            pass: a.user_wasted_ratio <= highest,
            message: format!(
                "user wasted {:.4} of the user size (highest allowed {highest:.4})",
                a.user_wasted_ratio
            ),
        });
    }
    gates
}

fn bytes(n: u64) -> String {
    format!("{} ({n} bytes)", human_size(n))
}

fn print_table(
    out: &mut Output,
    name: &str,
    a: &Analysis,
    top: usize,
    gates: &[Gate],
) -> anyhow::Result<()> {
    out.line(&format!("Image: {name} ({} layers)", a.layers.len()))?;
    out.line(&format!("  Total size:        {}", bytes(a.total_size)))?;
    out.line(&format!(
        "  User size:         {}  (layers above the first)",
        bytes(a.user_size)
    ))?;
    out.line(&format!(
        "  Efficiency:        {:.4} %",
        a.efficiency * 100.0
    ))?;
    out.line(&format!(
        "  Wasted bytes:      {}  (dive: every copy of a duplicated or deleted path)",
        bytes(a.wasted_bytes)
    ))?;
    out.line(&format!(
        "  Reclaimable:       {}  (all but the smallest copy)",
        bytes(a.reclaimable_bytes)
    ))?;
    let ratio = if a.user_wasted_ratio.is_finite() {
        format!("{:.4} %", a.user_wasted_ratio * 100.0)
    } else {
        "n/a (no user layers)".into()
    };
    out.line(&format!("  User wasted:       {ratio}"))?;
    out.line("")?;
    out.line("Layers:")?;
    let mut table = vec![[
        "#".to_owned(),
        "SIZE".into(),
        "BLOB".into(),
        "HIDDEN LATER".into(),
        "FILES".into(),
        "CREATED BY".into(),
    ]];
    for l in &a.layers {
        // One line: continuations and tabs of the RUN text collapse to single spaces.
        let mut by = l
            .info
            .created_by
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if by.chars().count() > 70 {
            by = by.chars().take(69).collect::<String>() + "…";
        }
        table.push([
            l.index.to_string(),
            human_size(l.size),
            l.info.blob_size.map(human_size).unwrap_or_default(),
            human_size(l.hidden),
            l.entries.to_string(),
            by,
        ]);
    }
    out.table(&table)?;
    out.line("")?;
    if a.inefficiencies.is_empty() {
        out.line("Wasted files: none")?;
    } else {
        out.line(&format!(
            "Wasted files (top {} of {}):",
            top.min(a.inefficiencies.len()),
            a.inefficiencies.len()
        ))?;
        let mut table = vec![[
            "COUNT".to_owned(),
            "TOTAL SPACE".into(),
            "RECLAIMABLE".into(),
            "LAYERS".into(),
            "PATH".into(),
        ]];
        for i in a.inefficiencies.iter().take(top) {
            table.push([
                i.layers.len().to_string(),
                human_size(i.cumulative_size),
                human_size(i.reclaimable),
                i.layers
                    .iter()
                    .map(|(l, _)| l.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                i.path.clone(),
            ]);
        }
        out.table(&table)?;
    }
    if !gates.is_empty() {
        out.line("")?;
        for g in gates {
            out.line(&format!(
                "{}: {}: {}",
                if g.pass { "PASS" } else { "FAIL" },
                g.name,
                g.message
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ratios_parse() {
        assert_eq!(parse_size("20MB"), Ok(20_000_000));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(
            parse_size("lots"),
            Err("\"lots\" is not a size (20MB, 512KiB, 1000)".into())
        );
        assert_eq!(parse_ratio("0.9"), Ok(0.9));
        assert_eq!(parse_ratio("10%"), Ok(0.1));
        assert_eq!(parse_ratio("-1"), Err("\"-1\" is out of range".into()));
    }
}

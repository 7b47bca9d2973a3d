"""What reproduces the leaderboard: the manifest (JSON) and the page's reproducibility section.

Both are read from the records alone. The library versions shown are the ones the
records carry (``record["versions"]``, in the order the records give them): the list of
libraries lives in one place, the recorder (:mod:`attnbench.provenance`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .frame import MISSING, as_dict, is_missing, key_text, md_escape

__all__ = ["manifest", "reproducibility_section"]


def manifest(frame: pd.DataFrame, records: list[dict[str, Any]]) -> dict[str, Any]:
    """What reproduces the leaderboard, per profile: commits, configs, seeds, versions, hardware.

    ``versions`` maps every library the profile's records name to the versions seen
    (sorted), libraries in the order they first appear in the records. Deterministic in
    the records (dates are the records' own ``finished_at``).
    """
    out: dict[str, Any] = {"profiles": {}}
    for profile in sorted(frame["profile"].dropna().unique()):
        mine = [r for r in records if key_text(r.get("profile")) == profile]
        sub = frame[frame["profile"] == profile]
        versions: dict[str, list[str]] = {}
        for r in mine:
            for lib, version in as_dict(r.get("versions")).items():
                seen = versions.setdefault(str(lib), [])
                if str(version) not in seen:
                    seen.append(str(version))
        dates = sorted(str(r["finished_at"]) for r in mine if r.get("finished_at"))
        command = "snakemake --cores all"
        if profile != "default":
            command += f" --configfile config/{profile}.yaml"
        out["profiles"][profile] = {
            "records": len(sub),
            "git_commits": sorted(sub["git_commit"].fillna("unknown").unique().tolist()),
            "config_hashes": int(sub["config_hash"].fillna("unknown").nunique()),
            "seeds": sorted(int(s) for s in sub["seed"].dropna().unique()),
            "versions": {lib: sorted(v) for lib, v in versions.items()},
            "hardware": sorted(sub["device"].dropna().unique().tolist()),
            "date": {"first": dates[0], "last": dates[-1]} if dates else None,
            "command": command,
            "runs": [
                {
                    "task": row["task"],
                    "variant": row["variant"],
                    "seed": None if is_missing(row["seed"]) else int(row["seed"]),
                    "status": row["status"],
                    "git_commit": row["git_commit"],
                    "config_hash": row["config_hash"],
                    "record": row["record_path"],
                }
                for row in sub.to_dict("records")
            ],
        }
    return out


def reproducibility_section(frame: pd.DataFrame, records: list[dict[str, Any]]) -> list[str]:
    """Per profile, the manifest in short: commits, configs, seeds, versions, hardware, command.

    Every library version the records carry is listed, in the records' order.
    """
    lines = ["## Reproducibility", ""]
    lines.append(
        "Every cell comes from run records; `manifest.json` beside this file lists each run's "
        "record, git commit and config hash (the CSV has them too)."
    )
    lines.append("")
    info = manifest(frame, records)["profiles"]
    for profile, m in info.items():
        warn = " ⚠ mixed commits" if len(m["git_commits"]) > 1 else ""
        versions = ", ".join(f"{lib} {'/'.join(found)}" for lib, found in m["versions"].items())
        date = m["date"]
        lines += [
            f"- profile `{md_escape(profile)}`: {m['records']} record(s), seeds "
            f"{', '.join(map(str, m['seeds'])) or MISSING}, {m['config_hashes']} distinct "
            "job config(s)",
            f"  - git commit(s){warn}: " + ", ".join(f"`{md_escape(c)}`" for c in m["git_commits"]),
            f"  - versions: {md_escape(versions) or MISSING}",
            f"  - hardware: {md_escape('; '.join(m['hardware'])) or MISSING}",
            f"  - runs finished: {date['first']} – {date['last']}" if date else "  - runs: —",
            f"  - reproduce: `{m['command']}`",
        ]
    return lines

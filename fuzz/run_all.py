"""Run every fuzz target (or the named ones), one after the other, and summarise.

::

    python fuzz/run_all.py [--seconds N | --runs N] [--work DIR] [TARGET ...] [-- OPTION ...]

For each target: rebuild its seeds from the tests (``make_corpus.py``), then fuzz it with
``DIR/work/<target>`` as the growing corpus (kept between runs) and the seeds as a second,
read-only corpus; OPTIONs go to libFuzzer as they are. Crash inputs are written as
``DIR/crashes/<target>-crash-<sha1>``. Exits non-zero if any target failed. ``DIR`` defaults to
``fuzz/corpus`` (ignored by git).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import harness
import make_corpus

DEFAULT_SECONDS = 60

_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+).*?exec/s: (\d+)", re.MULTILINE)
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)


def summarise(output: str) -> str:
    """One line from libFuzzer's output: executions, coverage, features, speed."""
    status = _STATUS.findall(output)
    stats = dict(_STAT.findall(output))
    if not status and not stats:
        return "no statistics"
    runs, cov, ft, _ = status[-1] if status else ("?", "?", "?", "?")
    runs = stats.get("number_of_executed_units", runs)
    speed = stats.get("average_exec_per_sec", "?")
    rss = stats.get("peak_rss_mb", "?")
    return f"{runs} runs, {speed} exec/s, cov {cov}, ft {ft}, rss {rss} MB"


def run_target(
    name: str, work: Path, options: Sequence[str], *, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    corpus = work / "work" / name
    corpus.mkdir(parents=True, exist_ok=True)
    crashes = work / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    dict_file = work / f"{name}.dict"
    command = harness.libfuzzer_command(
        name,
        corpus_dirs=[corpus, work / "seeds" / name],
        artifact_prefix=crashes / f"{name}-",
        dict_file=dict_file if dict_file.exists() else None,
        options=options,
    )
    if capture:
        return subprocess.run(
            command, cwd=harness.ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
    # libFuzzer reports on stderr: show it as it comes and keep a copy for the summary.
    with subprocess.Popen(
        command, cwd=harness.ROOT, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stderr is not None
        kept = []
        for line in process.stderr:
            sys.stderr.write(line)
            kept.append(line)
    return subprocess.CompletedProcess(command, process.returncode, "", "".join(kept))


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args_in:
        at = args_in.index("--")
        args_in, extra = args_in[:at], args_in[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--seconds", type=int, help=f"per target (default {DEFAULT_SECONDS})")
    limit.add_argument("--runs", type=int, help="new inputs tried per target, instead of a time")
    parser.add_argument("--work", type=Path, default=harness.DEFAULT_WORK_DIR)
    parser.add_argument("targets", nargs="*", help="default: every target")
    args = parser.parse_args(args_in)
    names = args.targets or harness.target_names()
    unknown = sorted(set(names) - set(harness.target_names()))
    if unknown:
        parser.error(f"no such target: {', '.join(unknown)} (have {harness.target_names()})")
    literals = make_corpus.collect_literals()
    counts = make_corpus.write_seeds(args.work, names, literals)
    crash_dir = args.work / "crashes"
    before = set(crash_dir.glob("*"))
    summary = []
    for name in names:
        if args.runs is not None:
            # libFuzzer counts the runs over the initial corpus too.
            initial = counts[name] + sum(1 for _ in (args.work / "work" / name).glob("*"))
            budget = f"-runs={initial + args.runs}"
        else:
            budget = f"-max_total_time={args.seconds or DEFAULT_SECONDS}"
        print(f"== fuzz {name} ({counts[name]} seeds, {budget})", flush=True)
        started = time.monotonic()
        done = run_target(name, args.work, [budget, *extra])
        took = time.monotonic() - started
        verdict = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
        summary.append(f"{name:10} {verdict:18} {took:6.0f} s  {summarise(done.stderr)}")
    print("== summary")
    print("\n".join(summary))
    crashes = sorted(set(crash_dir.glob("*")) - before)
    for crash in crashes:
        target = crash.name.partition("-")[0]
        print(f"== reproduce: python fuzz/fuzz_{target}.py {crash}")
    return 0 if all("FAILED" not in line for line in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())

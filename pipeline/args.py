"""The command line's parser: every subcommand, its flags, and the --help that explains them."""

from __future__ import annotations

import argparse
from argparse import RawDescriptionHelpFormatter
from pathlib import Path
from typing import Any

from pipeline.data.prompts import PROTOCOLS
from pipeline.data.variants import CONTROLS
from pipeline.knobs import DEFAULT_OUT, KNOBS
from pipeline.records import FILES

SWEEP_HELP = (
    "Run several models at once in one process, each into the run folder `eval --model X` uses\n"
    "(either command resumes the other), sharing the response cache and the judge. Flags apply\n"
    "to every model; each alias keeps its own endpoint, key and limits (--models-file). Ends with\n"
    "a table comparing them in OUT/sweep-<time>.md and .json. Exit status: the worst run's."
)
SAMPLE_DIR = Path(__file__).parent / "data" / "sample"


def _env_help() -> str:
    lines = ["environment (a flag beats its variable, which beats the default):"]
    for knob in KNOBS:
        default = knob.shown if knob.default is None else knob.default
        lines.append(f"  {knob.env:<17} {knob.help} (default: {default})")
    lines += [
        "  DRVD_API_KEY      key for any model; overrides the provider's own variable",
        "  DASHSCOPE_API_KEY, DEEPSEEK_API_KEY, OPENAI_API_KEY   provider keys",
        "  DRVD_JUDGE_API_KEY  key for the judge; overrides its provider's variable",
        "",
        "exit status: 0 every row answered; 1 some rows failed (the message says whether a",
        "             rerun retries them, or the input must be fixed); 2 usage or config error,",
        "             or the run folder is in use by another process; 3 a fatal API error",
        "             stopped the run; 4 the cost cap (--max-cost) stopped it: rerun with a",
        "             higher cap to go on, paying only for the rest; 5 a file could not be written (disk full): free space,",
        "             rerun; 130 Ctrl-C; 143 SIGTERM; 129 SIGHUP (these three: partial summary",
        "             written, rerun to resume); 70 a bug (DRVD_DEBUG=1 shows it);",
        "             sweep: the worst of its runs' (70 > 5 > 4 > 3 > 2 > 1 > 0)",
        "",
        f"the bundled demo set (not DrVD-Bench data) is at {SAMPLE_DIR}",
    ]
    return "\n".join(lines)


def _run_flags(ev: argparse.ArgumentParser) -> None:
    """Add the flags eval and sweep share: all of eval's but --model and --run-name."""
    ev.add_argument("--data", type=Path, help="DrVD-Bench directory (DRVD_DATA)")
    ev.add_argument("--files", help=f"comma-separated stems (default: all of {','.join(FILES)})")
    ev.add_argument("--limit", type=int, help="only the first N rows of each file")
    ev.add_argument("--out", type=Path, help=f"results folder (default: {DEFAULT_OUT}/)")
    ev.add_argument("--protocol", choices=PROTOCOLS, help="official (default) or notebook")
    ev.add_argument("--base-url", help="OpenAI-compatible endpoint (DRVD_BASE_URL)")
    _pace_flags(ev)
    ev.add_argument(
        "--max-tokens",
        type=int,
        help="max_tokens of every request, replacing the protocol's 50/100: reasoning models "
        "think inside it (DRVD_MAX_TOKENS; recorded as a deviation)",
    )
    ev.add_argument(
        "--thinking",
        choices=("on", "off"),
        help="turn the model's thinking on or off (DRVD_THINKING; recorded as a deviation)",
    )
    ev.add_argument(
        "--samples",
        type=int,
        metavar="K",
        help="K answers per row: the official one, plus K-1 independent draws in "
        "RUN/samples/<k>/, each paid once (DRVD_SAMPLES; default 1)",
    )
    ev.add_argument(
        "--temperature",
        type=float,
        help="temperature of every request, replacing the protocol's, e.g. to sample the files "
        "it sends at 0 (DRVD_TEMPERATURE; recorded as a deviation)",
    )
    ev.add_argument(
        "--models-file", type=Path, help="TOML file of extra aliases (DRVD_MODELS_FILE)"
    )
    ev.add_argument("--cache-dir", type=Path, help="response cache (DRVD_CACHE_DIR)")
    ev.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    ev.add_argument(
        "--page",
        choices=("on", "off"),
        help="write report.html and the plots when the run ends (DRVD_PAGE; default on; "
        "off: `view` draws them later)",
    )
    ev.add_argument("--seed", type=int, help="seed of the random baseline (default 0)")
    ev.add_argument(
        "--legacy-mime",
        action="store_true",
        help="label re-encoded PNGs image/png (official quirk)",
    )
    ev.add_argument(
        "--judge",
        help="maps unreadable answers and extracts report keywords: an alias, openai:<id>, "
        "or none (DRVD_JUDGE; default deepseek when DEEPSEEK_API_KEY is set)",
    )
    ev.add_argument("--judge-base-url", help="the judge's endpoint (DRVD_JUDGE_BASE_URL)")
    ev.add_argument(
        "--keyword-prompt",
        choices=("repo", "pypi"),
        help="report keyword prompt of the repo script (default) or the PyPI package",
    )
    ev.add_argument(
        "--bert-model", help="BERTScore model name or local folder (default: PubMedBERT)"
    )
    ev.add_argument("--bert-layers", type=int, help="BERTScore layer (default 12 for PubMedBERT)")
    ev.add_argument(
        "--no-bertscore",
        action="store_true",
        help="skip BERTScore even when bert-score is installed",
    )
    ev.add_argument("--price-in", type=float, help="USD per 1M prompt tokens (DRVD_PRICE_IN)")
    ev.add_argument("--price-out", type=float, help="USD per 1M completion tokens (DRVD_PRICE_OUT)")
    ev.add_argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="take no new row once the run's cost would pass USD; exit 4, rerun with a higher "
        "cap to go on (DRVD_MAX_COST)",
    )
    ev.add_argument(
        "--batch",
        action="store_true",
        help="send the rows through the provider's Batch API: half price, within 24 h; "
        "a rerun collects pending batches instead of submitting again",
    )
    ev.add_argument(
        "--batch-max-mb",
        type=float,
        help="--batch: largest input file in MB (DRVD_BATCH_MAX_MB; default: the provider's)",
    )
    ev.add_argument(
        "--batch-retry",
        choices=("batch", "online"),
        help="--batch: send failed or expired lines again in a new batch (default) or online",
    )
    ev.add_argument("--quiet", action="store_true", help="no progress display")
    ev.add_argument(
        "--official-quirks",
        action="store_true",
        help="score the stripped raw reply by exact match, as the official scripts do",
    )


def _pace_flags(p: argparse.ArgumentParser) -> None:
    """The flags that pace a run's requests (eval and controls take the same)."""
    p.add_argument("--concurrency", type=int, help="requests in flight (DRVD_CONCURRENCY)")
    p.add_argument("--rpm", type=float, help="requests per minute (DRVD_RPM)")
    p.add_argument("--tpm", type=float, help="tokens per minute (DRVD_TPM)")
    p.add_argument("--max-retries", type=int, help="retries per row (DRVD_MAX_RETRIES)")
    p.add_argument("--timeout", type=float, help="seconds per attempt (DRVD_TIMEOUT)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="drvd",
        description="Evaluate vision-language models on DrVD-Bench: fast, resumable, cached.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    shared: dict[str, Any] = {"epilog": _env_help(), "formatter_class": RawDescriptionHelpFormatter}
    ev = sub.add_parser(
        "eval", help="run a model over the dataset (resumes if the run exists)", **shared
    )
    ev.add_argument("--model", required=True, help="alias (see `drvd models`) or openai:<model-id>")
    ev.add_argument("--run-name", help="run folder name (default: derived from the model)")
    sw = sub.add_parser(
        "sweep", help="run several models at once, in one process", description=SWEEP_HELP, **shared
    )
    sw.add_argument("--models", required=True, help="comma-separated, e.g. qwen,gpt-4o,openai:m")
    pl = sub.add_parser(
        "plan",
        help="what a run would cost and take, before paying: no API call, nothing written",
        **shared,
    )
    pl.add_argument("--model", required=True, help="alias (see `drvd models`) or openai:<model-id>")
    pl.add_argument("--run-name", help="the run folder whose answered rows count as done")
    pl.add_argument("--json", action="store_true", help="print the estimate as one JSON object")
    pl.add_argument(
        "--controls",
        help="also estimate these controls of the run (comma list of " + ",".join(CONTROLS) + ")",
    )
    _run_flags(ev)
    _run_flags(sw)
    _run_flags(pl)

    sc = sub.add_parser("score", help="re-score a finished run folder offline")
    sc.add_argument("run_dir", type=Path)
    sc.add_argument(
        "--official-quirks",
        action="store_true",
        help="score the stripped raw reply by exact match, as the official scripts do",
    )
    sc.add_argument(
        "--page", choices=("on", "off"), help="rewrite report.html and the plots (DRVD_PAGE)"
    )

    co = sub.add_parser(
        "compare",
        help="leaderboard of runs with 95%% intervals, paired exact tests against the first run",
    )
    co.add_argument(
        "runs", nargs="*", type=Path, metavar="RUN", help="run folders; the first is the baseline"
    )
    co.add_argument(
        "--out", type=Path, required=True, help="folder for the leaderboard, tests and plots"
    )

    _controls_parser(sub)

    bu = sub.add_parser("bundle", help="pack a run into one verifiable .tar.gz with a manifest")
    bu.add_argument("run_dir", type=Path)
    bu.add_argument("--out", type=Path, help="the archive (default: RUN.tar.gz beside the run)")

    ve = sub.add_parser("verify", help="re-score a bundle or run offline; check numbers, hashes")
    ve.add_argument("target", type=Path, metavar="BUNDLE_OR_RUN")
    ve.add_argument(
        "--data", dest="dataset", type=Path, help="the dataset: check its files and images too"
    )

    vi = sub.add_parser("view", help="print the path of a run's report.html (written if missing)")
    vi.add_argument("run_dir", type=Path)
    vi.add_argument("--open", action="store_true", help="open it in the default browser")

    ca = sub.add_parser("cache", help="inspect or clear the response cache")
    ca.add_argument("action", choices=("stats", "clear"))
    ca.add_argument("--cache-dir", type=Path, help="response cache (DRVD_CACHE_DIR)")

    mo = sub.add_parser("models", help="list model aliases and where each comes from")
    mo.add_argument(
        "--models-file", type=Path, help="TOML file of extra aliases (DRVD_MODELS_FILE)"
    )
    return parser


CONTROLS_HELP = (
    "Ask RUN's answered items again under a labelled change, with RUN's recorded settings\n"
    "(model, endpoint, protocol, data, judge), into RUN/controls/<control>/, then write\n"
    "RUN/controls.json and the page's Controls section. RUN's own results never change.\n"
    "  no-image     each request without its image: reliance = accuracy with - without\n"
    "  shuffle      every cyclic rotation of the options: circular accuracy, position bias\n"
    "  other-image  the image swapped for another of the same modality (seeded)\n"
    "Cached and resumable like eval; `plan --controls` prices them first."
)


def _controls_parser(sub: Any) -> None:
    """Add `controls RUN`: its pace, cache and cap flags (the rest is read from RUN)."""
    ct = sub.add_parser(
        "controls",
        help="ask a run's items again without the image, with options rotated, or another image",
        description=CONTROLS_HELP,
        formatter_class=RawDescriptionHelpFormatter,
    )
    ct.add_argument("run_dir", type=Path, metavar="RUN")
    ct.add_argument("--controls", help=f"comma list of {','.join(CONTROLS)} (default: all three)")
    ct.add_argument(
        "--seed",
        dest="control_seed",
        metavar="N",
        type=int,
        default=0,
        help="other-image's seed (default 0)",
    )
    ct.add_argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="the controls together take no new row past USD; exit 4 (DRVD_MAX_COST)",
    )
    ct.add_argument("--base-url", help="the run's endpoint with credentials, if it had them")
    ct.add_argument("--judge-base-url", help="the judge's endpoint with credentials")
    _pace_flags(ct)
    ct.add_argument(
        "--models-file", type=Path, help="TOML file of extra aliases (DRVD_MODELS_FILE)"
    )
    ct.add_argument("--cache-dir", type=Path, help="response cache (DRVD_CACHE_DIR)")
    ct.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    ct.add_argument("--page", choices=("on", "off"), help="rewrite RUN's report.html (DRVD_PAGE)")
    ct.add_argument("--quiet", action="store_true", help="no progress display")

"""The `somocloud` command: one verb per step, plus `run`, `demo` and `config`.

    somocloud <verb> [-c CONFIG] [key=value ...] [--scheduler-address ADDR] [--parts i/N] [--no-progress]

Every verb validates the whole config (file + overrides) before doing any work."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from somocloud import __version__, steps
from somocloud.config import ConfigError, RunConfig, load_config

log = logging.getLogger("somocloud")

DEMO_CONFIG = "demo.yaml"
IMPORT_SOMOML_OPTIONS = ("checkpoint", "dynamic_scaler", "static_scaler")
"""Options of `import-somoml`, each setting the key of the same name in `import_somoml`."""


def embedded_config(name: str) -> Path:
    """Path of a config shipped inside the package (the demo's embedded default)."""
    return Path(str(resources.files("somocloud") / "configs" / name))


def _parse_parts(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--parts expects i/N, got {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"--parts {text}: need 1 <= i <= N")
    return i, n


def _common(p: argparse.ArgumentParser, config_required: bool) -> None:
    p.add_argument("-c", "--config", required=config_required, help="run config YAML")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=3")
    p.add_argument("--scheduler-address", help="use a running Dask scheduler (sets cluster.kind=address)")
    p.add_argument("--no-progress", action="store_true", help="no live progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="somocloud", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"somocloud {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="verb")

    p = sub.add_parser("demo", help="build the synthetic world and run every step on it (embedded default)")
    p.add_argument("--root", help="where to write everything (default ./somocloud-demo)")
    _common(p, config_required=False)
    p = sub.add_parser("run", help="run every step of a config, in order")
    _common(p, config_required=True)
    p = sub.add_parser("config", help="validate a config and print it resolved (store URLs filled in)")
    _common(p, config_required=False)
    p = sub.add_parser("synthetic", help=steps.SYNTHETIC.help)
    _common(p, config_required=False)
    for name, spec in {**steps.STEPS, **steps.TOOLS}.items():
        if name == "import-somoml":
            continue
        p = sub.add_parser(name, help=spec.help)
        _common(p, config_required=False)
        if name in ("predict", "extend"):
            p.add_argument(
                "--parts", type=_parse_parts, help="run only share i of N of the tasks, without Dask"
            )
        if name == "extend":
            p.add_argument(
                "--until", help="last day the product should reach, YYYY-MM-DD (sets extend.until)"
            )
    p = sub.add_parser("import-somoml", help=steps.TOOLS["import-somoml"].help)
    _common(p, config_required=False)
    for option in IMPORT_SOMOML_OPTIONS:
        p.add_argument(f"--{option.replace('_', '-')}", help=f"sets import_somoml.{option}")
    return parser


def _load(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.overrides)
    if getattr(args, "root", None):
        overrides.append(f"stores.root={args.root}")
    if args.scheduler_address:
        overrides += ["cluster.kind=address", f"cluster.address={args.scheduler_address}"]
    if getattr(args, "until", None):
        overrides.append(f"extend.until={args.until}")
    for option in IMPORT_SOMOML_OPTIONS:
        if getattr(args, option, None):  # quoted, so YAML keeps any URL a string
            overrides.append(f"import_somoml.{option}={json.dumps(getattr(args, option))}")
    path = args.config
    if path is None and args.verb in ("demo", "synthetic", "config", *steps.STEPS, *steps.TOOLS):
        path = embedded_config(DEMO_CONFIG)  # the embedded default
    return load_config(path, overrides)


def _entry(verb: str) -> Callable[..., dict[str, str]]:
    from somocloud import pipeline

    table: dict[str, Callable[..., dict[str, str]]] = {"demo": pipeline.demo, "run": pipeline.run}
    return table[verb] if verb in table else steps.entry(verb)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may stand anywhere, also after options (argparse alone stops at the first option).
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*getattr(args, "overrides", []), *extra]
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if logging.getLogger().level > logging.DEBUG:  # Dask's INFO lines drown the pipeline's own
        for name in ("distributed", "dask"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        cfg = _load(args)
    except ConfigError as exc:
        print(f"somocloud: {exc}", file=sys.stderr)
        return 2
    if args.verb == "config":
        print(json.dumps(cfg.resolved(), indent=2, sort_keys=True))
        return 0

    from somocloud.context import Context
    from somocloud.pipeline import summary

    start = time.monotonic()
    ctx = Context(show_progress=not args.no_progress, parts=getattr(args, "parts", None))
    try:
        if args.verb not in ("demo", "run"):  # those check every step's outputs themselves
            steps.check_outputs_writable(cfg, [args.verb])
        with ctx:
            outputs: dict[str, Any] = _entry(args.verb)(cfg, ctx)
    except KeyboardInterrupt:
        print("somocloud: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        log.debug("traceback", exc_info=True)
        print(f"somocloud {args.verb}: error: {exc}", file=sys.stderr)
        return 1
    if args.verb in ("demo", "run"):
        print(summary(cfg, outputs))
    else:
        for key, url in outputs.items():
            print(f"{key}: {url}")
    log.info("%s finished in %.1f s", args.verb, time.monotonic() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``prompts``: version, show, diff and deploy prompts, in the local store or on a server.

``push`` stores a YAML/JSON file as the next version of a prompt; ``deploy NAME@N`` points the
prompt's deployment (or ``--deployment-id``) at version N; ``rollback`` moves a deployment back.
The parser is built here (:func:`add_prompts_parser`) and registered by :mod:`runner.cli.main`, which
hands over its helpers, so this module does not import the CLI back.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from runner._json import json_text

__all__ = [
    "add_prompts_parser",
    "deploy_command",
    "diff_command",
    "list_command",
    "push_command",
    "rollback_command",
    "show_command",
]

Handler = Callable[[argparse.Namespace], int]


def add_prompts_parser(
    sub: Any,
    *,
    prog: str,
    parser_class: type[argparse.ArgumentParser],
    store_options: Callable[..., None],
    common: Callable[[argparse._ActionsContainer, str], None],
    lazy: Callable[[str, str], Handler],
) -> None:
    """Add ``prompts`` and its subcommands to the CLI's subparsers ``sub``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "prompts",
        prog=f"{prog} prompts",
        help="version, diff and deploy prompts (served by /deployed-prompt and /completion)",
        formatter_class=fmt,
        description=(
            "Keep prompts versioned outside the code. A prompt file (.yaml or .json) has the keys\n"
            "model, provider, model_params, messages ({{variable}} templates), functions and\n"
            "function_call, and no others. Every push is a new immutable version; a deployment\n"
            "(deployment_id, e.g. p-qZrnFesaeCpqcXJ_yL3wi) serves one version and can be moved\n"
            "or rolled back, keeping its history."
        ),
        epilog=(
            f"examples:\n  {prog} prompts push greeter.yaml --name greeter -m 'first version'\n"
            f"  {prog} prompts list\n  {prog} prompts show greeter@2\n"
            f"  {prog} prompts diff greeter@1 greeter@2\n  {prog} prompts deploy greeter@2\n"
            f"  {prog} prompts rollback p-qZrnFesaeCpqcXJ_yL3wi\n\n"
            "Use a deployment with POST /completion {deployment_id, llm_inputs}, the SDK's\n"
            "p.get_prompt(...), or a version in an experiment: Experiment(..., prompt='greeter@2')."
        ),
    )
    psub = p.add_subparsers(dest="prompts_command", title="commands", metavar="COMMAND", required=True,
                            parser_class=parser_class)

    def command(name: str, help_: str, description: str, handler: str, json_help: str) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = psub.add_parser(name, prog=f"{prog} prompts {name}", help=help_,
                                                     formatter_class=fmt, description=description)
        c.set_defaults(handler=lazy("runner.cli.prompts", handler), _json_help=json_help)
        return c

    push = command("push", "store a prompt file as the next version", "Store FILE as the next version of "
                   "prompt NAME (nothing is stored when it equals the\nlatest version).", "push_command",
                   "print the stored version as JSON")
    push.add_argument("file", metavar="FILE", help="a .yaml, .yml or .json prompt file")
    push.add_argument("--name", metavar="NAME", required=True, help="the prompt's name")
    push.add_argument("-m", "--message", metavar="MESSAGE", default="", help="what changed in this version")
    push.add_argument("--author", metavar="NAME", help="who made it (default: the login name)")

    ls = command("list", "list prompts, their latest versions and deployments",
                 "List prompts: latest version, number of versions, deployments.", "list_command",
                 "print the prompts as JSON")
    show = command("show", "show one version (default: the latest) and the versions", "Show a version of "
                   "a prompt (NAME@VERSION, or NAME for the latest) as YAML,\nwith the prompt's versions and "
                   "deployments.", "show_command", "print the version as JSON")
    show.add_argument("ref", metavar="NAME[@VERSION]", help="e.g. greeter or greeter@2")
    deploy = command("deploy", "deploy a version, or move a deployment to it", "Point the prompt's deployment "
                     "at NAME@VERSION (a new deployment if it has none).", "deploy_command",
                     "print the deployment as JSON")
    deploy.add_argument("ref", metavar="NAME@VERSION", help="e.g. greeter@2")
    deploy.add_argument("--deployment-id", metavar="ID", help="this deployment (created if new)")
    deploy.add_argument("--author", metavar="NAME", help="who deployed (default: the login name)")
    rollback = command("rollback", "move a deployment back to its previous version", "Move DEPLOYMENT_ID back "
                       "to the version it served before its last move\n(twice: back again).", "rollback_command",
                       "print the deployment as JSON")
    rollback.add_argument("deployment_id", metavar="DEPLOYMENT_ID", help="e.g. p-qZrnFesaeCpqcXJ_yL3wi")
    rollback.add_argument("--author", metavar="NAME", help="who rolled back (default: the login name)")
    diff = command("diff", "show what changed between two versions", "A unified diff of two versions' YAML "
                   "(exit code 0 either way).", "diff_command", "print both versions and the diff as JSON")
    diff.add_argument("a", metavar="NAME@A", help="the older version, e.g. greeter@1")
    diff.add_argument("b", metavar="NAME@B", help="the newer version, e.g. greeter@2")
    for c in (push, ls, show, deploy, rollback, diff):
        store_options(c, "prompts", project=False)
        common(c, c.get_default("_json_help"))


# -- handlers ---------------------------------------------------------------------------------------
def _door(args: argparse.Namespace) -> Any:
    from runner.backends.prompts import open_prompts

    return open_prompts(base_url=args.base_url, api_key=args.api_key, db=args.db)


def _author(args: argparse.Namespace) -> str:
    if args.author is not None:
        return str(args.author)
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return ""


def _print_json(value: Any) -> None:
    print(json_text(value, indent=2))


def push_command(args: argparse.Namespace) -> int:
    from runner.proxy.prompts import load_spec_file

    spec = load_spec_file(args.file)
    with _door(args) as door:
        v = door.push(args.name, spec, args.message, _author(args))
        location = door.location
    if args.json:
        _print_json(v)
    elif v["created"]:
        print(f"stored {v['ref']} in {location}; deploy it with: python -m runner prompts deploy {v['ref']}")
    else:
        print(f"unchanged: {args.file} is the same as {v['ref']}; nothing stored")
    return 0


def list_command(args: argparse.Namespace) -> int:
    from runner.cli.show import _date, _table

    with _door(args) as door:
        found = door.list_prompts()
        location = door.location
    if args.json:
        _print_json(found)
        return 0
    if not found:
        print(f"no prompts in {location}; add one with: python -m runner prompts push FILE.yaml --name NAME")
        return 0
    rows = [
        [p["name"], str(p["latest_version"]), str(p["n_versions"]),
         ", ".join(f"{d['deployment_id']} -> @{d['version']}" for d in p["deployments"]) or "-",
         _date(p["updated_at"])]
        for p in found
    ]
    print(_table(["NAME", "LATEST", "VERSIONS", "DEPLOYED", "UPDATED"], rows, max_width=60))
    return 0


def show_command(args: argparse.Namespace) -> int:
    from runner.cli.show import _date
    from runner.proxy.prompts import parse_ref, spec_text

    name, version = parse_ref(args.ref)
    with _door(args) as door:
        v = door.version(name, version)
        versions = door.versions(name)
        deployments = door.deployments(name)
    if args.json:
        _print_json({**v, "versions": [{k: x[k] for k in ("version", "message", "author", "created_at")}
                                       for x in versions], "deployments": deployments})
        return 0
    serving = [d["deployment_id"] for d in deployments if d["version"] == v["version"]]
    print(f"{v['ref']}  by {v['author'] or '-'}  {_date(v['created_at'])}" + (f"  deployed as {', '.join(serving)}"
                                                                             if serving else ""))
    if v["message"]:
        print(f"    {v['message']}")
    print()
    print(spec_text(v["spec"]), end="")
    print()
    print("versions:")
    for x in versions:
        mark = "*" if x["version"] == v["version"] else " "
        print(f" {mark} @{x['version']:<4} {_date(x['created_at'])}  {x['author'] or '-'}: {x['message'] or '-'}")
    return 0


def deploy_command(args: argparse.Namespace) -> int:
    from runner.errors import ConfigError
    from runner.proxy.prompts import parse_ref

    name, version = parse_ref(args.ref)
    if version is None:
        raise ConfigError(f"say which version to deploy: {name}@N (python -m runner prompts show {name})")
    with _door(args) as door:
        d = door.deploy(name, version, args.deployment_id, _author(args))
    if args.json:
        _print_json(d)
        return 0
    last = d["history"][0] if d["history"] else {}
    was = f" (was @{last['previous_version']})" if last.get("previous_version") is not None else ""
    print(f"{d['deployment_id']} serves {d['ref']}{was}")
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    with _door(args) as door:
        d = door.rollback(args.deployment_id, _author(args))
    if args.json:
        _print_json(d)
        return 0
    print(f"{d['deployment_id']} serves {d['ref']} again (was @{d['history'][0]['previous_version']})")
    return 0


def diff_command(args: argparse.Namespace) -> int:
    from runner.errors import ConfigError
    from runner.proxy.prompts import diff_specs, parse_ref

    (name_a, va), (name_b, vb) = parse_ref(args.a), parse_ref(args.b)
    if va is None or vb is None:
        raise ConfigError("diff compares two versions: write NAME@A NAME@B, e.g. greeter@1 greeter@2")
    with _door(args) as door:
        a, b = door.version(name_a, va), door.version(name_b, vb)
    text = diff_specs(a["spec"], b["spec"], a["ref"], b["ref"])
    if args.json:
        _print_json({"a": a, "b": b, "diff": text})
    else:
        print(text if text else f"no differences between {a['ref']} and {b['ref']}", end="" if text else "\n")
    return 0

"""``localstdp configs``: list the configs shipped inside the package, or copy one out to edit.

Registered in :data:`localstdp.cli.SUBCOMMANDS`; loads no torch (the configs are plain TOML files).
"""

from __future__ import annotations


def _add_configs(sub) -> None:
    p = sub.add_parser("configs", help="list the shipped configs (usable by name: --config iris), or copy one out",
                       description="List the configs shipped inside the package, one line each; any of them is "
                                   "usable by name from any directory (localstdp train --config iris). "
                                   "--copy NAME [DEST] writes one out to edit (never over an existing file).")
    p.add_argument("--copy", metavar="NAME", help="copy this shipped config out (to ./NAME.toml, or to DEST)")
    p.add_argument("dest", nargs="?", metavar="DEST", help="with --copy: the file (or directory) to write")
    p.set_defaults(func=cmd_configs)


def cmd_configs(args) -> int:
    from .. import configs
    from ..errors import ConfigError

    if args.copy is None:
        if args.dest is not None:
            raise ConfigError(f"DEST {args.dest!r} needs --copy NAME (see `localstdp configs --help`)")
        names = configs.names()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {configs.describe(name)}")
        return 0
    target = configs.copy(args.copy, args.dest)
    print(f"copied {args.copy} -> {target}; edit it, then: localstdp train --config {target} --out RUN_DIR")
    return 0

"""``python -m termite keygen PATH``: make a cluster key file."""

import argparse
import sys

from termite._net import keys as _keys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m termite")
    sub = p.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="write a new cluster key file (mode 600)")
    keygen.add_argument("path")
    args = p.parse_args(argv)
    try:
        keys = _keys.generate(args.path)
    except _keys.KeyFileError as exc:
        print(f"termite keygen: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.path} (public key {keys.public.decode()}); keep it secret, copy it to every node")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `gpt1` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert_openai_gpt

    dst = convert_openai_gpt(args.src, args.dst, revision=args.revision)
    print(f"Converted {args.src} -> {dst}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt1", description="GPT-1 as a Hugging Face model package.")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    convert = subcommands.add_parser(
        "convert",
        help="convert a transformers openai-gpt checkpoint to a gpt1 folder",
        description="Convert an openai-gpt checkpoint (folder or Hub repo id) to a gpt1 folder with safetensors "
        "weights, remote code and the source's tokenizer.",
    )
    convert.add_argument("src", help="openai-gpt checkpoint: a local folder or a Hub repo id")
    convert.add_argument("dst", help="output folder")
    convert.add_argument("--revision", default=None, help="branch, tag or commit of a Hub SRC")
    convert.set_defaults(handler=_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        # Bad input gets one clear line, not a traceback.
        print(f"gpt1 {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
